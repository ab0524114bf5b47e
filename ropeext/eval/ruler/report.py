"""Plots of one RULER run and the cross-variant table the papers print.

``ruler_table(metrics)`` turns the metrics JSONs of several variants into the papers' layout:
one row per variant, one column per length, then the average over lengths and the effective
length, with the task subset and threshold the numbers used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from ropeext.errors import RopeextError
from ropeext.eval.ruler.metrics import average_by_length, effective_length
from ropeext.io import pyplot as _plt
from ropeext.io import save_figure

DEPTH_BINS = 5


def _heatmap(ax, data, row_labels, col_labels, title):
    arr = np.array([[np.nan if v is None else v for v in row] for row in data], dtype=float)
    im = ax.imshow(arr, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            text = "-" if np.isnan(arr[i, j]) else f"{arr[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_title(title)
    return im


def _save(fig, path: Path) -> None:
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_overview(metrics: dict, path: str | Path) -> Path:
    """Tasks x lengths heat map of one run (scores 0-100), with the average as the last row."""
    plt = _plt()
    lengths = metrics["lengths"]
    tasks = [t for t in metrics["tasks"] if t in metrics["scores"]]
    rows = [[metrics["scores"][t].get(str(L)) for L in lengths] for t in tasks]
    rows.append([metrics["average"].get(str(L)) for L in lengths])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 0.9 + 0.4 * len(rows)))
    _heatmap(ax, rows, tasks + ["average"], lengths, f"RULER {metrics.get('variant', '')} ({metrics['subset']})")
    ax.set_xlabel("length (tokens)")
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)


def plot_task_heatmaps(records: Iterable[dict], lengths: list[int], out_dir: str | Path) -> list[Path]:
    """One PNG per task: needle depth (5 bins; one row where a task has no depth) x length."""
    plt = _plt()
    cells: dict[str, dict[tuple[int, int], list[float]]] = {}
    has_depth: dict[str, bool] = {}
    for r in records:
        d = r.get("depth")
        b = 0 if d is None else min(DEPTH_BINS - 1, int(float(d) * DEPTH_BINS))
        has_depth[r["task"]] = d is not None
        cells.setdefault(r["task"], {}).setdefault((b, int(r["length"])), []).append(100.0 * float(r["score"]))
    paths = []
    for task, by_cell in sorted(cells.items()):
        nbins = DEPTH_BINS if has_depth[task] else 1
        labels = [f"{b / DEPTH_BINS:.1f}-{(b + 1) / DEPTH_BINS:.1f}" for b in range(nbins)] if nbins > 1 else ["all"]
        data = [[(sum(v) / len(v)) if (v := by_cell.get((b, L))) else None for L in lengths] for b in range(nbins)]
        fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(lengths), 1.0 + 0.45 * nbins))
        _heatmap(ax, data, labels, lengths, f"{task}: score by depth x length")
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("needle depth" if nbins > 1 else "")
        path = Path(out_dir) / f"{task}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def _load(metrics) -> dict:
    if isinstance(metrics, dict):
        return metrics
    path = Path(metrics)
    if not path.is_file():
        raise RopeextError(f"RULER metrics file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RopeextError(f"{path}: not valid JSON ({exc})") from None


def ruler_table(metrics: Iterable, tasks: list[str] | None = None):
    """The papers' RULER table from metrics JSONs (paths or dicts), one per variant.

    Rows: variants; columns: each length, ``avg`` (mean over lengths) and ``effective_length``;
    plus ``subset`` and ``threshold``. With ``tasks`` the averages are recomputed over those tasks
    only (say, the AnchorAttention subset from a full run).
    """
    # heavy: pandas loads only when tables are built
    import pandas as pd

    rows, all_lengths = [], []
    for m in metrics:
        m = _load(m)
        lengths = [int(L) for L in m["lengths"]]
        all_lengths += [L for L in lengths if L not in all_lengths]
        if tasks is None:
            avg = {int(L): v for L, v in m["average"].items()}
            subset, eff = m["subset"], m["effective_length"]
        else:
            missing = [t for t in tasks if t not in m["scores"]]
            if missing:
                raise RopeextError(f"RULER metrics of {m.get('variant')}: no scores for {', '.join(missing)}")
            scores = {t: {int(L): v for L, v in s.items()} for t, s in m["scores"].items()}
            avg = average_by_length(scores, tasks, lengths)
            subset = "custom:" + ",".join(tasks)
            eff = effective_length(avg, m["threshold"])
        vals = [v for v in avg.values() if v is not None]
        row = {
            "variant": m.get("variant"),
            **{L: avg.get(L) for L in lengths},
            "avg": round(sum(vals) / len(vals), 2) if vals else None,
            "effective_length": eff,
            "subset": subset,
            "threshold": m["threshold"],
        }
        rows.append(row)
    cols = ["variant", *sorted(all_lengths), "avg", "effective_length", "subset", "threshold"]
    return pd.DataFrame(rows, columns=cols).set_index("variant")


def ruler_task_heatmaps(metrics: Iterable, out_dir: str | Path) -> list[Path]:
    """For the report: one PNG per task, variants x lengths."""
    plt = _plt()
    ms = [_load(m) for m in metrics]
    lengths = sorted({int(L) for m in ms for L in m["lengths"]})
    tasks = [t for t in dict.fromkeys(t for m in ms for t in m["scores"])]
    paths = []
    for task in tasks:
        data = [[m["scores"].get(task, {}).get(str(L)) for L in lengths] for m in ms]
        fig, ax = plt.subplots(figsize=(1.8 + 0.9 * len(lengths), 0.9 + 0.4 * len(ms)))
        _heatmap(ax, data, [m.get("variant") for m in ms], lengths, f"RULER {task}")
        ax.set_xlabel("length (tokens)")
        path = Path(out_dir) / f"ruler_{task}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths
