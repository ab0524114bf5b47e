"""Small matplotlib helpers (Agg backend, no display needed).

A line figure holds at most ``MAX_LINES`` lines per panel: more series are faceted into panels (by target
length, then by layout for variant names; see ``facet_variants``). A series may carry a 95% interval per
point (lo, hi), drawn as a band; a panel whose every value is 0 says so in the panel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ropeext.io import pyplot, save_figure
from ropeext.report.tables import parse_variant

MAX_LINES = 8  # lines per panel; more are faceted into panels
ZERO_NOTE = "every line is at 0 at every point"
LAYOUT_WORDS = {"noft": "no fine-tuning"}


def _values(seq) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in seq], dtype=float)


def split_series(points: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(xs, ys) or (xs, ys, lo, hi) -> arrays; lo/hi None (or all missing) when the series carries no interval."""
    xs, ys = _values(points[0]), _values(points[1])
    lo = hi = None
    if len(points) >= 4 and points[2] is not None and points[3] is not None:
        lo, hi = _values(points[2]), _values(points[3])
        if not (np.isfinite(lo) & np.isfinite(hi)).any():
            lo = hi = None
    return xs, ys, lo, hi


INTERVAL_SUFFIXES = ((" lo", " hi"), ("_lo", "_hi"))  # the columns of a 95% interval beside column <x>


def with_band(points: Sequence, row) -> tuple:
    """(xs, ys) -> (xs, ys, lo, hi) from the table row (a mapping: column -> value) that holds the interval of
    each x in columns `<x> lo`/`<x> hi` (or `<x>_lo`/`<x>_hi`); unchanged when the row has no such columns."""
    xs, ys = points[0], points[1]
    for lo_suffix, hi_suffix in INTERVAL_SUFFIXES:
        keys = [(f"{x}{lo_suffix}", f"{x}{hi_suffix}") for x in xs]
        if any(lo in row and hi in row for lo, hi in keys):
            return xs, ys, [row.get(lo) for lo, _ in keys], [row.get(hi) for _, hi in keys]
    return tuple(points)


def all_zero(series: dict[str, Sequence]) -> bool:
    """Whether some value is measured and every measured value of every series is 0."""
    ys = np.concatenate([split_series(p)[1] for p in series.values()] or [np.array([])])
    ys = ys[np.isfinite(ys)]
    return ys.size > 0 and bool((ys == 0).all())


def facet(names: Sequence[str], keys: Sequence[Callable[[str], str]], max_lines: int = MAX_LINES) -> dict[str, list]:
    """Panels of at most ``max_lines`` names: the first key (coarse to fine) whose every group is small enough
    titles the panels; when even the finest key leaves a larger group, that group is cut in order into parts of
    near-equal size ("title (1/2)", ...). Up to ``max_lines`` names stay in one untitled panel."""
    names = list(names)
    if len(names) <= max_lines:
        return {"": names}
    groups: dict[str, list] = {}
    for key in keys:
        groups = {}
        for n in names:
            groups.setdefault(key(n), []).append(n)
        if all(len(g) <= max_lines for g in groups.values()):
            return groups
    if not keys:
        groups = {"": names}
    panels = {}
    for title, group in groups.items():
        parts = math.ceil(len(group) / max_lines)
        if parts == 1:
            panels[title] = group
            continue
        size = math.ceil(len(group) / parts)
        for i in range(parts):
            panels[f"{title} ({i + 1}/{parts})".strip()] = group[i * size : (i + 1) * size]
    return panels


def facet_variants(variants: Sequence[str], max_lines: int = MAX_LINES) -> dict[str, list]:
    """Variant names (model-method-L'-layout) in panels of at most ``max_lines``: one panel per target length,
    or per target length and layout when a length holds more."""

    def target(v: str) -> str:
        t = parse_variant(v)["target"]
        return f"L' = {t}" if t else "other"

    def target_layout(v: str) -> str:
        layout = parse_variant(v)["layout"]
        return f"{target(v)}, {LAYOUT_WORDS.get(layout, layout)}" if layout else target(v)

    return facet(variants, [target, target_layout], max_lines)


def _grid(plt, n: int, columns: int, width: float, height: float, sharey: bool = True):
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharey=sharey)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def _note(ax, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=9,
        color="dimgrey",
        bbox={"facecolor": "white", "edgecolor": "lightgrey", "alpha": 0.9},
    )


def line_figure(
    series: dict[str, Sequence],
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
    panels: dict[str, list[str]] | None = None,
    labels: dict[str, str] | None = None,
    max_lines: int = MAX_LINES,
    zero_note: str = ZERO_NOTE,
    columns: int = 3,
):
    """The matplotlib figure of ``plot_lines`` (not saved): one Axes per panel, at most ``max_lines`` lines each."""
    plt = pyplot()
    if panels is None:
        panels = facet(list(series), [], max_lines)
    panels = {t: [n for n in names if n in series] for t, names in panels.items()}
    panels = {t: names for t, names in panels.items() if names} or {"": []}
    too_many = {t: len(names) for t, names in panels.items() if len(names) > max_lines}
    if too_many:
        raise ValueError(f"plot_lines: at most {max_lines} lines per panel, got {too_many}")
    single = len(panels) == 1
    logy = logy and not all_zero(series)  # the panels share their y axis: one scale for all
    fig, axes = _grid(plt, len(panels), columns, 8.5 if single else 5.2, 4.8 if single else 3.9)
    for ax, (panel, names) in zip(axes, panels.items()):
        for name in names:
            xs, ys, lo, hi = split_series(series[name])
            kw = {"linestyle": "--" if name.endswith("noft") else "-", "marker": "o"}
            kw.update((styles or {}).get(name, {}))
            (line,) = ax.plot(xs, ys, label=(labels or {}).get(name, name), linewidth=1.5, markersize=4, **kw)
            if lo is not None:
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.sum() > 1:
                    ax.fill_between(xs, lo, hi, where=ok, color=line.get_color(), alpha=0.15, linewidth=0)
                else:  # one point carries an interval: an error bar (a line collection, no Line2D)
                    ax.vlines(xs[ok], lo[ok], hi[ok], color=line.get_color(), linewidth=1.5)
        for label, x in (vlines or {}).items():
            ax.axvline(x, color="grey", linestyle=":", linewidth=1, label="_" + label)
            ax.annotate(
                f" {label}",
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                va="bottom",
                ha="center",
                fontsize=7 if not single else 8,
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
        if panel:
            ax.set_title(panel, fontsize=9, pad=12)
        ax.grid(True, alpha=0.3)
        chosen = {n: series[n] for n in names}
        if not names or not any(np.isfinite(split_series(p)[1]).any() for p in chosen.values()):
            _note(ax, "nothing measured")
        elif all_zero(chosen):
            _note(ax, zero_note)
        if len(names) > 1:
            if single:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
            else:
                ax.legend(fontsize=6, loc="best")
    if title:
        if single:
            panel = next(iter(panels))
            axes[0].set_title(f"{title}\n{panel}" if panel else title, pad=14)
        else:
            fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_lines(series: dict[str, Sequence], path: str | Path, **kw) -> Path:
    """One line per series name; ``vlines`` marks x positions (e.g. the pre-training window).

    A series is (xs, ys) or (xs, ys, lo, hi): lo/hi bound a per-point interval (None where a point has none),
    drawn as a band. ``panels`` maps a panel title to its series names (at most ``max_lines`` each; without
    it more than ``max_lines`` series are cut in order into panels); ``labels`` renames series in the legends;
    ``styles`` maps a series name to matplotlib keyword arguments (color, linestyle, marker); ``xticks``
    labels x positions (e.g. length buckets by name); ``ylim`` fixes the y range; ``zero_note`` is written
    in a panel whose every value is 0.
    """
    return save_figure(line_figure(series, **kw), path)


def heatmap_figure(
    panels: dict[str, tuple],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    vmax: float = 100.0,
    columns: int = 4,
    zero_note: str = "0 in every cell",
):
    """The matplotlib figure of ``plot_heatmap_grid`` (not saved)."""
    plt = pyplot()
    n = len(panels)
    cols = min(columns, n)
    rows = -(-n // cols)
    first = np.asarray(next(iter(panels.values()))[0], dtype=float)
    label = max((len(str(r)) for _, rows_, _ in panels.values() for r in rows_), default=0)
    width, height = 1.0 + 0.075 * label + 0.75 * first.shape[1], 0.9 + 0.4 * first.shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.2, height * rows + 0.6), squeeze=False)
    image = None
    for i, (ax, (name, (data, row_labels, col_labels))) in enumerate(zip(axes.flat, panels.items())):
        arr = np.asarray(data, dtype=float)
        image = ax.imshow(arr, vmin=0.0, vmax=vmax, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels], fontsize=7)
        ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels], fontsize=7)
        for (y, x), v in np.ndenumerate(arr):
            ax.text(x, y, "-" if np.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=7)
        finite = arr[np.isfinite(arr)]
        zero = finite.size > 0 and bool((finite == 0).all())
        ax.set_title(f"{name}\n({zero_note})" if zero else name, fontsize=8, color="dimgrey" if zero else "black")
        ax.set_xlabel(xlabel, fontsize=7)
        if i % cols == 0:  # the first column's; the others' row labels stand where it would
            ax.set_ylabel(ylabel, fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    return fig


def plot_heatmap_grid(panels: dict[str, tuple], path: str | Path, **kw) -> Path:
    """One heat map per panel name, side by side on one colour scale (0..vmax).

    ``panels`` maps a name to (rows x columns values, row labels, column labels); NaN shows as '-'; a panel
    whose every value is 0 says so (``zero_note``) under its name.
    """
    return save_figure(heatmap_figure(panels, **kw), path, dpi=110)
