"""RULER's metrics and aggregates: per-sample string matching, task x length scores, effective length.

- ``string_match_all``: the fraction of the references found in the prediction (case-insensitive
  substring), used for niah, vt, cwe and fwe;
- ``string_match_part``: 1 when any reference is found, used for qa.
Predictions are cleaned as RULER does before matching (control characters become newlines, then
the ends are stripped). Task scores are the mean over samples x 100.
"""

from __future__ import annotations

import re
from typing import Iterable

RULER_THRESHOLD = 85.6  # Llama-2-7B's RULER average at 4k: RULER's bar for the effective length

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    return _CONTROL.sub("\n", prediction).strip()


def string_match_all(prediction: str, references: list[str]) -> float:
    if not references:
        raise ValueError("string_match_all needs at least one reference")
    pred = postprocess(prediction).lower()
    return sum(1.0 for r in references if r.lower() in pred) / len(references)


def string_match_part(prediction: str, references: list[str]) -> float:
    if not references:
        raise ValueError("string_match_part needs at least one reference")
    pred = postprocess(prediction).lower()
    return max(1.0 if r.lower() in pred else 0.0 for r in references)


METRIC_FNS = {"string_match_all": string_match_all, "string_match_part": string_match_part}


def score_sample(metric: str, prediction: str, references: list[str]) -> float:
    return METRIC_FNS[metric](prediction, references)


def task_scores(records: Iterable[dict]) -> dict[str, dict[int, float]]:
    """{task: {length: mean score x 100, two decimals}} from records with task, length, score."""
    sums: dict[str, dict[int, list[float]]] = {}
    for r in records:
        sums.setdefault(r["task"], {}).setdefault(int(r["length"]), []).append(float(r["score"]))
    return {t: {L: round(100.0 * sum(v) / len(v), 2) for L, v in sorted(by_len.items())} for t, by_len in sums.items()}


def average_by_length(
    scores: dict[str, dict[int, float]], tasks: list[str], lengths: list[int]
) -> dict[int, float | None]:
    """Mean over ``tasks`` at each length; None where a task has no score at that length."""
    out: dict[int, float | None] = {}
    for L in lengths:
        vals = [scores.get(t, {}).get(L) for t in tasks]
        out[L] = None if not vals or any(v is None for v in vals) else round(sum(vals) / len(vals), 2)
    return out


def effective_length(average: dict[int, float | None], threshold: float = RULER_THRESHOLD) -> int | None:
    """The longest length up to which the average stays above ``threshold`` at every length tested.

    Lengths are walked from the shortest; the first one at or below the threshold (or without a
    score) ends the walk. None when even the shortest length fails.
    """
    best = None
    for L in sorted(average):
        v = average[L]
        if v is None or v <= threshold:
            break
        best = L
    return best
