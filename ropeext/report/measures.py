"""The evaluation stages' metrics reduced to what the findings compare: a value per variant and length
(or length bucket), how many samples stand behind a value and its 95% interval (ropeext.report.intervals).
A metrics file without the per-unit records an interval needs (written before they were kept, or by an engine
that keeps none) gives cells with their count and no interval: never an invented one.

Pure functions of the metrics dicts the stages write (``ropeext eval ppl|passkey|ruler|longbench``) and
of the report's tables built from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is heavy; the light paths (CLI help, workflow parse) import this module
    import pandas as pd

from ropeext.eval.openllm.presets import is_percent
from ropeext.report.intervals import (
    MIN_BOOTSTRAP_UNITS,
    Interval,
    accuracy,
    mean_bootstrap,
    nested_means_bootstrap,
    ppl_bootstrap,
)
from ropeext.text import number


def length_series(df: pd.DataFrame) -> dict[str, dict[int, float | None]]:
    """{variant: {length: value}} from a report table whose length columns are ints or digit strings."""
    cols = [c for c in df.columns if str(c).isdigit()]
    return {v: {int(c): number(row[c]) for c in cols} for v, row in df.iterrows()}


def buckets_of(metrics: dict) -> list[tuple[str, float | None, float | None]]:
    """(name, lower edge, upper edge) of each LongBench length bucket; edges None when unknown."""
    names = list(metrics.get("buckets") or [])
    edges = list(metrics.get("edges") or [])
    if len(edges) == len(names) + 1:
        return [(n, edges[i], edges[i + 1]) for i, n in enumerate(names)]
    return [(n, None, None) for n in names]


def longbench_within_at(metrics: dict, train_length: int, target: int) -> dict:
    """A LongBench run's bucket averages within L and at L'.

    With token edges (the embedded task): within L is the mean of the buckets whose upper edge is at
    most L, and "at L'" the longest bucket that starts below L'. With word buckets (LongBench-E's own,
    whose edges are in words, not tokens) within is the first bucket and "at L'" the last one.
    Returns within, at, the name of the bucket used, its unit and its sample count.
    """
    avg = metrics.get("bucket_avg") or {}
    buckets = buckets_of(metrics)
    unit = metrics.get("unit") or "words"
    if not buckets:
        return {"within": None, "at": None, "bucket": None, "unit": unit, "n": None, "inside": []}
    if unit == "tokens" and all(lo is not None for _, lo, _ in buckets):
        inside = [n for n, _, hi in buckets if hi is not None and hi <= train_length]
        starting = [n for n, lo, _ in buckets if lo < target]
        at_bucket = starting[-1] if starting else None
        if at_bucket in inside:
            at_bucket = None  # nothing measured past L
    else:
        inside = [buckets[0][0]]
        at_bucket = buckets[-1][0] if len(buckets) > 1 else None
    vals = [number(avg.get(n)) for n in inside]
    vals = [v for v in vals if v is not None]
    n = None
    if at_bucket:
        counts = [t.get("buckets", {}).get(at_bucket, {}).get("n") for t in (metrics.get("tasks") or {}).values()]
        n = sum(c for c in counts if c) or None
    return {
        "within": sum(vals) / len(vals) if vals else None,
        "at": number(avg.get(at_bucket)) if at_bucket else None,
        "bucket": at_bucket,
        "unit": unit,
        "n": n,
        "inside": inside,
    }


# ----------------------------------------------------------------------------- cells with their evidence
def ppl_cells(metrics: dict) -> dict[int, Interval]:
    """{length: perplexity with its bootstrap interval over the scored windows} of one ``eval ppl`` run."""
    per_window = metrics.get("window_nll") or {}
    tokens = metrics.get("window_tokens") or []
    out = {}
    for length, value in (metrics.get("ppl") or {}).items():
        nll = per_window.get(str(length))
        if nll and len(nll) == len(tokens) and len(nll) >= MIN_BOOTSTRAP_UNITS:
            lo, hi = ppl_bootstrap(nll, tokens)
            out[int(length)] = Interval(number(value), lo, hi, len(nll), "windows", "bootstrap")
        else:
            out[int(length)] = Interval(number(value), n=metrics.get("windows"), unit="windows")
    return out


def _passkey_counts(metrics: dict) -> tuple[dict[str, int], dict[str, int]]:
    """(keys found, prompts) per length: recorded, else summed over the cells (depth x length) of older runs."""
    if "correct_by_length" in metrics and "n_by_length" in metrics:
        return metrics["correct_by_length"], metrics["n_by_length"]
    correct: dict[str, int] = {}
    n: dict[str, int] = {}
    for cell in metrics.get("cells") or []:
        key = str(cell["length"])
        correct[key] = correct.get(key, 0) + int(cell["correct"])
        n[key] = n.get(key, 0) + int(cell["n"])
    return correct, n


def passkey_cells(metrics: dict) -> dict[str, Interval]:
    """{"<length>" | "Avg": accuracy (%) with its Wilson interval} of one ``eval passkey`` run (the columns of
    ``ropeext.eval.passkey.summary_table``)."""
    correct, n = _passkey_counts(metrics)
    out = {}
    for length, acc in (metrics.get("accuracy_by_length") or {}).items():
        if n.get(length):
            out[length] = accuracy(correct[length], n[length], "prompts")
        else:
            out[length] = Interval(None if acc is None else 100.0 * acc, unit="prompts")
    total = sum(n.values())
    out["Avg"] = accuracy(sum(correct.values()), total, "prompts") if total else Interval(None, unit="prompts")
    return out


def ruler_cells(metrics: dict) -> dict:
    """{length | "avg": average over tasks (%) with its Wilson interval} of one ``eval ruler`` run.

    A task's per-sample score lies in [0, 1]; the average over tasks at a length stands on every task's samples
    there (``samples``), and its interval is Wilson's at that mean and count (conservative for partial scores).
    """
    counts = metrics.get("samples") or {}
    tasks = metrics.get("tasks") or list(counts)
    out: dict = {}
    total = 0
    for length in metrics.get("lengths") or []:
        value = number((metrics.get("average") or {}).get(str(length)))
        n = sum(int((counts.get(t) or {}).get(str(length), 0)) for t in tasks)
        if value is None or not n:
            out[int(length)] = Interval(value, n=n or None, unit="samples")
            continue
        out[int(length)] = _mean_score(value, n)
        total += n
    avg = number(metrics.get("avg"))
    out["avg"] = _mean_score(avg, total) if avg is not None and total else Interval(avg, unit="samples")
    return out


def _mean_score(percent: float, n: int, unit: str = "samples") -> Interval:
    """A mean score (%) over ``n`` samples with scores in [0, 1], as an accuracy: Wilson at that mean."""
    iv = accuracy(min(max(percent / 100.0, 0.0), 1.0) * n, n, unit)
    return Interval(percent, iv.lo, iv.hi, n, unit, "wilson")


def longbench_cells(metrics: dict) -> dict[str, Interval]:
    """{bucket | "Avg" | "Avg>...": score (x100) with its bootstrap interval over samples} of one LongBench run.

    A bucket's score is the mean over tasks of each task's mean there: the bootstrap resamples each task's samples
    in the bucket on their own; Avg (the mean of the bucket scores) and Avg>... resample every task x bucket. With
    fewer than MIN_BOOTSTRAP_UNITS samples in some task x bucket the interval is Wilson's at the mean (the scores
    lie in [0, 1])."""
    tasks = metrics.get("tasks") or {}
    names = list(metrics.get("buckets") or [])
    summary_tasks = ((metrics.get("summaries") or [{}])[0].get("tasks")) or list(tasks)

    def groups(bucket: str) -> tuple[list[list[float]] | None, int]:
        found, n, complete = [], 0, True
        for t in summary_tasks:
            b = ((tasks.get(t) or {}).get("buckets") or {}).get(bucket) or {}
            n += int(b.get("n") or 0)
            if b.get("n"):
                if b.get("scores") is None or len(b["scores"]) != b["n"]:
                    complete = False
                found.append(b.get("scores"))
        return (found if complete and found else None), n

    def cell(value, buckets: list[str]) -> Interval:
        parts = [groups(b) for b in buckets]
        n = sum(k for _, k in parts)
        outer = [g for g, _ in parts if g is not None]
        if value is None or not n or len(outer) != len([k for _, k in parts if k]):
            return Interval(number(value), n=n or None, unit="samples")
        if any(len(g) < MIN_BOOTSTRAP_UNITS for groups_ in outer for g in groups_):
            return _mean_score(float(value), n)
        lo, hi = nested_means_bootstrap(outer)
        return Interval(number(value), 100.0 * lo, 100.0 * hi, n, "samples", "bootstrap")

    out = {b: cell((metrics.get("bucket_avg") or {}).get(b), [b]) for b in names}
    if names:
        out["Avg"] = cell(metrics.get("Avg"), names)
        for key in (k for k in metrics if k.startswith("Avg>")):
            out[key] = cell(metrics.get(key), names[1:])
    return out


def _items(t: dict) -> int | None:
    """How many items lm-eval scored for a task (its ``n_samples``, summed over subtasks); None if not recorded."""
    counts = [c.get("effective") for c in (t.get("n_samples") or {}).values() if isinstance(c, dict)]
    return sum(counts) if counts and all(isinstance(c, int) for c in counts) else None


def openllm_cells(metrics: dict) -> dict[str, Interval]:
    """{task | "Avg": score with its evidence} of one ``eval openllm`` run: an accuracy (x100) with its Wilson
    interval over the task's items; a bits-per-byte cell with its count and no interval; ``Avg`` (the mean over
    the accuracy tasks, the table's) with Wilson at that mean over every accuracy task's items."""
    out: dict[str, Interval] = {}
    scores, total, complete = [], 0, True
    for task, t in (metrics.get("tasks") or {}).items():
        if t.get("score") is None:
            continue
        n = _items(t)
        if not is_percent(t["headline"]):
            out[task] = Interval(number(t["score"]), n=n, unit="items")
            continue
        score = min(max(float(t["score"]), 0.0), 1.0)
        out[task] = accuracy(score * n, n, "items") if n else Interval(100.0 * score, unit="items")
        scores.append(score)
        total += n or 0
        complete = complete and bool(n)
    if scores:
        mean = 100.0 * sum(scores) / len(scores)
        # without every task's count the average's n is unknown (a partial sum would understate it)
        out["Avg"] = _mean_score(mean, total, "items") if complete else Interval(mean, unit="items")
    return out


def bf16_cells(metrics: dict) -> dict[str, Interval]:
    """{"<setting>.D_<d1>_<d2>": the mean deviation over the sequences with its bootstrap interval} of one
    ``analyze bf16`` run (the table's headline columns); fewer sequences than a bootstrap needs: the mean and
    its count."""
    out = {}
    for name, res in (metrics.get("settings") or {}).items():
        shift = res["shift"]
        d1, d2 = res["key_columns"]["delta1"], shift["delta2"]
        i = list(shift["delta1"]).index(d1)
        per_sequence = [row[i] for row in shift.get("per_sequence_column") or []]
        value, key = number(shift["column"]["mean"][i]), f"{name}.D_{d1}_{d2}"
        if len(per_sequence) >= MIN_BOOTSTRAP_UNITS:
            lo, hi = mean_bootstrap(per_sequence)
            out[key] = Interval(value, lo, hi, len(per_sequence), "sequences", "bootstrap")
        else:
            out[key] = Interval(value, n=len(per_sequence) or None, unit="sequences")
    return out
