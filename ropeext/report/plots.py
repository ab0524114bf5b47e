"""Small matplotlib helpers (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

from ropeext.io import pyplot, save_figure


def plot_lines(series: dict[str, tuple[list, list]], path: str | Path, *, xlabel: str, ylabel: str,
               title: str = "", logx: bool = False, logy: bool = False, vlines: dict[str, float] | None = None,
               styles: dict[str, dict] | None = None) -> Path:
    """One line per series name; ``vlines`` marks x positions (e.g. the pre-training window).

    ``styles`` maps a series name to matplotlib keyword arguments (color, linestyle, marker).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for name, (xs, ys) in series.items():
        kw = {"linestyle": "--" if name.endswith("noft") else "-", "marker": "o"}
        kw.update((styles or {}).get(name, {}))
        ax.plot(xs, ys, label=name, linewidth=1.5, markersize=4, **kw)
    for label, x in (vlines or {}).items():
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f" {label}", (x, 1.0), xycoords=("data", "axes fraction"), va="bottom", ha="center",
                    fontsize=8, color="grey")
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, pad=14)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, path)
