"""Small matplotlib helpers (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ropeext.io import pyplot, save_figure


def plot_lines(
    series: dict[str, tuple[list, list]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    vlines: dict[str, float] | None = None,
    styles: dict[str, dict] | None = None,
    xticks: dict[float, str] | None = None,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One line per series name; ``vlines`` marks x positions (e.g. the pre-training window).

    ``styles`` maps a series name to matplotlib keyword arguments (color, linestyle, marker);
    ``xticks`` labels x positions (e.g. length buckets by name); ``ylim`` fixes the y range.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for name, (xs, ys) in series.items():
        kw = {"linestyle": "--" if name.endswith("noft") else "-", "marker": "o"}
        kw.update((styles or {}).get(name, {}))
        ax.plot(xs, ys, label=name, linewidth=1.5, markersize=4, **kw)
    for label, x in (vlines or {}).items():
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            f" {label}",
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            va="bottom",
            ha="center",
            fontsize=8,
            color="grey",
        )
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    if xticks:
        ax.set_xticks(list(xticks), list(xticks.values()))
        ax.minorticks_off()
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, pad=14)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_heatmap_grid(
    panels: dict[str, tuple],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    vmax: float = 100.0,
    columns: int = 4,
) -> Path:
    """One heat map per panel name, side by side on one colour scale (0..vmax).

    ``panels`` maps a name to (rows x columns values, row labels, column labels); NaN shows as '-'.
    """
    plt = pyplot()
    n = len(panels)
    cols = min(columns, n)
    rows = -(-n // cols)
    first = np.asarray(next(iter(panels.values()))[0], dtype=float)
    width, height = 1.0 + 0.75 * first.shape[1], 0.9 + 0.4 * first.shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.2, height * rows + 0.6), squeeze=False)
    image = None
    for ax, (name, (data, row_labels, col_labels)) in zip(axes.flat, panels.items()):
        arr = np.asarray(data, dtype=float)
        image = ax.imshow(arr, vmin=0.0, vmax=vmax, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels], fontsize=7)
        ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels], fontsize=7)
        for (y, x), v in np.ndenumerate(arr):
            ax.text(x, y, "-" if np.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    return save_figure(fig, path, dpi=110)
