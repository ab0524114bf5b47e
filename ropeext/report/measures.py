"""The evaluation stages' metrics reduced to what the findings compare: a value per variant and length
(or length bucket), and how many samples stand behind a value.

Pure functions of the metrics dicts the stages write (``ropeext eval ppl|passkey|ruler|longbench``) and
of the report's tables built from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is heavy; the light paths (CLI help, workflow parse) import this module
    import pandas as pd

from ropeext.text import number


def length_series(df: pd.DataFrame) -> dict[str, dict[int, float | None]]:
    """{variant: {length: value}} from a report table whose length columns are ints or digit strings."""
    cols = [c for c in df.columns if str(c).isdigit()]
    return {v: {int(c): number(row[c]) for c in cols} for v, row in df.iterrows()}


def passkey_samples(metrics: list[dict]) -> int | None:
    """Prompts per length (depths x samples), the smallest over the runs."""
    ns = [len(m.get("depths") or []) * int(m.get("samples") or 0) for m in metrics]
    ns = [n for n in ns if n]
    return min(ns) if ns else None


def ruler_samples(metrics: list[dict], length: int) -> int | None:
    """Samples behind one RULER average at ``length`` (over every task), the smallest over the runs."""
    ns = []
    for m in metrics:
        counts = m.get("samples") or {}
        n = sum(int(c.get(str(length), 0)) for c in counts.values() if isinstance(c, dict))
        if n:
            ns.append(n)
    return min(ns) if ns else None


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
