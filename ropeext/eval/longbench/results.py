"""Scores per task and per length bucket, the Avg / Avg>4k summary, plots and the paper-shaped table.

LongBench-E buckets use the records' ``length`` field (words): < 4000, 4000-8000, >= 8000
("0-4k", "4-8k", "8k+"). A task built by this project records its own edges (in tokens) in the
data folder's ``buckets.json``; its buckets are named by those edges ("64-200", ...).

Summary as in the DPRoPE paper's Table 1: the bucket averages are the mean over tasks of each
task's bucket score; ``Avg`` is the mean of the bucket averages and ``Avg>4k`` the mean of all but
the first bucket (for edge-named buckets the key is ``Avg>{first upper edge}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ropeext.errors import RopeextError
from ropeext.eval.longbench import metrics
from ropeext.io import pyplot, save_figure
from ropeext.text import markdown_table

LONGBENCH_E_EDGES = (0, 4000, 8000, None)
LONGBENCH_E_NAMES = ("0-4k", "4-8k", "8k+")


@dataclass(frozen=True)
class Buckets:
    edges: tuple  # (lo0, hi0=lo1, ..., last upper or None for open-ended)
    names: tuple[str, ...]
    unit: str = "words"

    @property
    def long_key(self) -> str:
        return "Avg>4k" if self.names == LONGBENCH_E_NAMES else f"Avg>{self.edges[1]}"

    def index(self, length: float) -> int | None:
        """Bucket of a length; below the first edge goes to the first bucket (as LongBench-E's
        '< 4000'), at or beyond a closed last edge to the last one."""
        for i in range(len(self.names)):
            hi = self.edges[i + 1]
            if hi is None or length < hi:
                return i
        return len(self.names) - 1


STANDARD_BUCKETS = Buckets(LONGBENCH_E_EDGES, LONGBENCH_E_NAMES, "words")


def edge_buckets(edges: Sequence[int], unit: str = "tokens") -> Buckets:
    edges = [int(e) for e in edges]
    if len(edges) < 3 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise RopeextError(f"bucket edges {edges}: expected at least 3 strictly increasing numbers (2+ buckets)")
    names = tuple(f"{a}-{b}" for a, b in zip(edges, edges[1:]))
    return Buckets(tuple(edges), names, unit)


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 2) if vals else None


def score_task(task: str, records: Sequence[dict], buckets: Buckets | None) -> dict:
    """Scores of one task's prediction records (``pred``, ``answers``, ``all_classes``, ``length``), with the
    per-sample scores (per bucket, or of the task without buckets)."""
    per_sample = [metrics.score(task, r["pred"], r["answers"], r.get("all_classes")) for r in records]
    out = {"metric": metrics.metric_name(task), "n": len(records), "score": metrics.aggregate(per_sample)}
    if buckets is not None:
        out["buckets"] = bucket_scores(per_sample, [float(r["length"]) for r in records], buckets)
    else:
        out["scores"] = [float(s) for s in per_sample]
    return out


def bucket_scores(per_sample: Sequence[float], lengths: Sequence[float], buckets: Buckets) -> dict:
    """Each bucket's score, sample count and per-sample scores (in [0, 1], what a bootstrap over samples needs)."""
    groups: list[list[float]] = [[] for _ in buckets.names]
    for length, s in zip(lengths, per_sample):
        groups[buckets.index(length)].append(float(s))
    return {
        name: {"score": metrics.aggregate_bucket(g), "n": len(g), "scores": g} for name, g in zip(buckets.names, groups)
    }


def summarize(task_scores: dict[str, dict], buckets: Buckets | None) -> dict:
    """Bucket averages over tasks, Avg and Avg>first-edge (or the plain task mean without buckets)."""
    if buckets is None:
        return {"Avg": _mean(t["score"] for t in task_scores.values())}
    bucket_avg = {name: _mean(t["buckets"][name]["score"] for t in task_scores.values()) for name in buckets.names}
    return {
        "bucket_avg": bucket_avg,
        "Avg": _mean(bucket_avg.values()),
        buckets.long_key: _mean(bucket_avg[n] for n in buckets.names[1:]),
    }


def build_metrics(per_task: dict[str, tuple[Sequence[dict], Buckets | None]], **meta) -> dict:
    """The metrics JSON: per task, per bucket scheme a summary; the top-level ``Avg`` / ``Avg>...``
    come from the first scheme (LongBench-E's when its tasks are present)."""
    tasks: dict[str, dict] = {}
    schemes: dict[Buckets | None, list[str]] = {}
    for task, (records, buckets) in per_task.items():
        tasks[task] = score_task(task, records, buckets)
        if buckets is not None:
            tasks[task]["bucket_unit"] = buckets.unit
        schemes.setdefault(buckets, []).append(task)
    order = sorted(schemes, key=lambda b: (b != STANDARD_BUCKETS, b is None))
    summaries = []
    for b in order:
        entry = {
            "tasks": schemes[b],
            "buckets": list(b.names) if b else None,
            "edges": list(b.edges) if b else None,
            "unit": b.unit if b else None,
        }
        entry.update(summarize({t: tasks[t] for t in schemes[b]}, b))
        summaries.append(entry)
    out = dict(meta)
    out["tasks"] = tasks
    out["summaries"] = summaries
    if summaries:
        first = summaries[0]
        for key, value in first.items():
            if key not in ("tasks",):
                out[key] = value
    return out


# ----------------------------------------------------------------------------- report table
def table1(metrics_list: Sequence[dict], names: Sequence[str] | None = None, *, per_task: bool = False):
    """Rows = variants, columns = the bucket averages, Avg, Avg>4k (DPRoPE Table 1's shape).

    ``metrics_list`` holds the metrics JSONs (as dicts) of one run per variant; ``names`` labels the
    rows (default: each JSON's ``variant``, else its ``model``). With ``per_task`` the columns are
    ``task/bucket`` scores followed by the same summary columns. Returns a pandas DataFrame.
    """
    # heavy: pandas loads only when tables are built
    import pandas as pd

    if names is not None and len(names) != len(metrics_list):
        raise RopeextError(f"table1: {len(names)} names for {len(metrics_list)} metrics files")
    rows = []
    for i, m in enumerate(metrics_list):
        if "tasks" not in m or "Avg" not in m:
            raise RopeextError(f"table1: metrics #{i} is not a LongBench metrics JSON (no 'tasks'/'Avg')")
        label = names[i] if names is not None else (m.get("variant") or m.get("model") or f"run{i}")
        row: dict = {"variant": label}
        bucket_names = m.get("buckets") or []
        if per_task:
            for task in m.get("summaries", [{}])[0].get("tasks", m["tasks"]):
                t = m["tasks"][task]
                if bucket_names and "buckets" in t:
                    for b in bucket_names:
                        row[f"{task}/{b}"] = t["buckets"][b]["score"]
                else:
                    row[task] = t["score"]
        for b in bucket_names:
            row[b] = (m.get("bucket_avg") or {}).get(b)
        row["Avg"] = m["Avg"]
        long_keys = [k for k in m if k.startswith("Avg>")]
        for k in long_keys:
            row[k] = m[k]
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def table1_markdown(metrics_list: Sequence[dict], names: Sequence[str] | None = None, *, per_task: bool = False) -> str:
    return markdown_table(table1(metrics_list, names, per_task=per_task)) + "\n"


def plot_buckets(metrics_json: dict, path) -> None:
    """Score per bucket for each task, with the bucket average in bold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = metrics_json.get("buckets")
    if names:
        x = list(range(len(names)))
        for task in metrics_json["summaries"][0]["tasks"]:
            ys = [metrics_json["tasks"][task]["buckets"][b]["score"] for b in names]
            ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", alpha=0.6, label=task)
        avg = [metrics_json["bucket_avg"][b] for b in names]
        ax.plot(x, [float("nan") if y is None else y for y in avg], marker="s", color="black", lw=2.5, label="average")
        ax.set_xticks(x, names)
        unit = metrics_json.get("unit") or "words"
        ax.set_xlabel(f"length bucket ({unit})")
    else:
        tasks = list(metrics_json["tasks"])
        ax.bar(range(len(tasks)), [metrics_json["tasks"][t]["score"] or 0 for t in tasks])
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_ylabel("score (x100)")
    ys = [y for line in ax.get_lines() for y in line.get_ydata()] + [p.get_height() for p in ax.patches]
    top = max([y for y in ys if y == y] or [0])
    ax.set_ylim(0, max(5.0, 1.1 * float(top)))
    title = metrics_json.get("variant") or metrics_json.get("model") or "LongBench"
    ax.set_title(f"LongBench: {title}")
    if names:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
