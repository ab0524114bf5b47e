"""Fitting a prompt to a token budget measured with the model's own tokenizer.

A task builds its prompt from two integers: ``n`` haystack units (words, sentences, list
entries, documents) and ``p`` padding words. ``fit_prompt`` takes the most units whose prompt
fits the budget; where one unit is coarser than the tolerance (short targets, long units such
as UUID needles or QA documents) it then adds the most padding words that still fit. Word-level
padding moves the count by one word's tokens (1-4 tokens even for a tiny byte-level BPE), which
is below 2% of any target of 256 tokens or more (5 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ropeext.errors import RopeextError
from ropeext.eval.common import encode_prompt as encode  # noqa: F401 (re-exported)


def tolerance(length: int, fraction: float = 0.02) -> int:
    """The number of tokens a sample may fall short of its target length."""
    return int(fraction * length)


class TooShort(RopeextError):
    """The target length cannot hold a task's fixed parts (instructions, needles, answer budget)."""


@dataclass
class Fitted:
    text: str
    n_units: int
    n_pad: int
    tokens: int


def _max_fitting(ok: Callable[[int], bool], hint: int, upper: int | None) -> int:
    """Largest n in [0, upper] with ok(n), for ok true up to some n and false after (ok(0) holds).

    Gallops from ``hint`` (the previous sample's answer is a good one), then bisects.
    """
    hint = max(0, hint if upper is None else min(hint, upper))
    step = max(1, hint // 32)
    if ok(hint):
        lo = hint
        while True:
            hi = lo + step
            if upper is not None and hi >= upper:
                if ok(upper):
                    return upper
                hi = upper
                break
            if not ok(hi):
                break
            lo, step = hi, step * 2
    else:
        hi = hint
        while True:
            lo = max(0, hi - step)
            if lo == 0 or ok(lo):
                break
            hi, step = lo, step * 2
    while hi - lo > 1:  # ok(lo) and not ok(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def fit_prompt(
    build: Callable[[int, int], str],
    tokenizer,
    budget: int,
    tol: int,
    *,
    hint: int = 16,
    max_units: int | None = None,
    max_pad: int = 256,
    what: str = "prompt",
) -> Fitted:
    """The prompt ``build(n, p)`` with the most content whose token count is at most ``budget``.

    Raises RopeextError when even the empty prompt (no units, no padding) exceeds the budget.
    """
    cache: dict[tuple[int, int], int] = {}

    def count(n: int, p: int) -> int:
        if (n, p) not in cache:
            cache[(n, p)] = len(encode(tokenizer, build(n, p)))
        return cache[(n, p)]

    base = count(0, 0)
    if base > budget:
        raise TooShort(
            f"{what}: the instructions, needles and question alone take {base} tokens, more than the {budget} available"
        )
    n = _max_fitting(lambda k: count(k, 0) <= budget, hint, max_units)
    while n > 0 and count(n, 0) > budget:  # guard against a non-monotone count at the boundary
        n -= 1
    p = 0
    if budget - count(n, 0) > tol:
        p = _max_fitting(lambda k: count(n, k) <= budget, 1, max_pad)
        while p > 0 and count(n, p) > budget:
            p -= 1
    text = build(n, p)
    return Fitted(text, n, p, count(n, p))
