"""Small matplotlib helpers (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lines(series: dict[str, tuple[list, list]], path: str | Path, *, xlabel: str, ylabel: str,
               title: str = "", logx: bool = False, logy: bool = False, vlines: dict[str, float] | None = None) -> Path:
    """One line per series name; ``vlines`` marks x positions (e.g. the pre-training window)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (xs, ys) in series.items():
        style = "--" if name.endswith("noft") else "-"
        ax.plot(xs, ys, style, marker="o", label=name, linewidth=1.5, markersize=4)
    for label, x in (vlines or {}).items():
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.text(x, ax.get_ylim()[1], f" {label}", va="top", fontsize=8, color="grey")
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
