"""The evidence behind a measured value: how many units it stands on and its 95% interval, and whether two
values are told apart.

- An accuracy (a share of prompts answered right) or a mean of per-sample scores in [0, 1] (RULER's partial
  matches): the Wilson score interval. A score in [0, 1] with mean p has a variance of at most p(1 - p), so for
  a mean of such scores the same formula is conservative.
- A perplexity exp(sum nll / sum tokens) over scored windows, and a mean of LongBench samples' scores: a
  percentile bootstrap over the units (windows, samples) with a fixed seed, so the same numbers always give the
  same interval. A mean over tasks resamples within each task (a stratified bootstrap). A bootstrap over fewer
  than MIN_BOOTSTRAP_UNITS units (one sample resamples to itself) is not used: a perplexity gets no interval,
  a mean of scores in [0, 1] gets Wilson's at its mean.

Two values are told apart only when their intervals do not overlap (``separated``); a value without an interval
is never told apart from anything. Pure functions of numbers: no file, no pandas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MIN_BOOTSTRAP_UNITS = 10  # fewer units than this per resampled group: a percentile bootstrap is too narrow to use
LEVEL = 95  # percent, of every interval below


@dataclass(frozen=True)
class Interval:
    """A table cell's value, its 95% interval (None: not available) and how many units it stands on."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    unit: str = ""  # prompts, samples, windows
    method: str = ""  # wilson, bootstrap; "" without an interval

    @property
    def known(self) -> bool:
        return self.value is not None and self.lo is not None and self.hi is not None

    def text(self, floatfmt: str = ".2f") -> str:
        """'12.30 [11.90, 12.80]'; the value alone without an interval; '–' without a value."""
        if self.value is None:
            return "–"
        if not self.known:
            return format(self.value, floatfmt)
        return f"{self.value:{floatfmt}} [{self.lo:{floatfmt}}, {self.hi:{floatfmt}}]"


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (``successes`` may be a sum of scores in [0, 1])."""
    if n < 1:
        raise ValueError(f"wilson: needs n >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson: needs 0 <= successes <= n, got {successes} of {n}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy(successes: float, n: int, unit: str = "samples", scale: float = 100.0) -> Interval:
    """An accuracy cell in percent (``scale``) with its Wilson interval; no interval (and no value) for n = 0."""
    if not n:
        return Interval(None, n=0, unit=unit)
    lo, hi = wilson(successes, n)
    return Interval(scale * successes / n, scale * lo, scale * hi, int(n), unit, "wilson")


def _percentiles(stats: np.ndarray) -> tuple[float, float]:
    tail = (100 - LEVEL) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def _draws(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """Indices of ``resamples`` resamples of ``n`` units, one resample per row."""
    return rng.integers(0, n, size=(resamples, n))


def ppl_bootstrap(
    nll_sums: Sequence[float], tokens: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of exp(sum nll / sum tokens), resampling the windows (one nll sum and token
    count per window)."""
    nll, tok = np.asarray(nll_sums, dtype=float), np.asarray(tokens, dtype=float)
    if nll.shape != tok.shape or nll.ndim != 1 or not len(nll):
        raise ValueError(f"ppl_bootstrap: needs one nll sum and token count per window ({nll.shape}, {tok.shape})")
    idx = _draws(np.random.default_rng(seed), len(nll), resamples)
    return _percentiles(np.exp(nll[idx].sum(axis=1) / tok[idx].sum(axis=1)))


def mean_bootstrap(
    values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean, resampling the values."""
    return mean_of_means_bootstrap([values], resamples, seed)


def mean_of_means_bootstrap(
    groups: Sequence[Sequence[float]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the groups' means (tasks' scores in a length bucket),
    resampling within each group: one draw matrix per group, in the groups' order."""
    return nested_means_bootstrap([groups], resamples, seed)


def nested_means_bootstrap(
    outer: Sequence[Sequence[Sequence[float]]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean of means of group means (LongBench's Avg: the mean over buckets of
    the mean over tasks of each task's bucket score), resampling within each innermost group, outer by outer."""
    rng = np.random.default_rng(seed)
    tops = []
    for groups in outer:
        arrays = [np.asarray(g, dtype=float) for g in groups]
        if not arrays or any(a.ndim != 1 or not len(a) for a in arrays):
            raise ValueError("nested_means_bootstrap: every group needs at least one value")
        tops.append(np.stack([a[_draws(rng, len(a), resamples)].mean(axis=1) for a in arrays]).mean(axis=0))
    if not tops:
        raise ValueError("nested_means_bootstrap: needs at least one outer group")
    return _percentiles(np.stack(tops).mean(axis=0))


def separated(a: Interval | None, b: Interval | None) -> int:
    """+1 when ``a``'s interval lies wholly above ``b``'s, -1 wholly below, 0 when they overlap (touching ends
    included) or either has none."""
    if a is None or b is None or not (a.known and b.known):
        return 0
    if a.lo > b.hi:
        return 1
    if a.hi < b.lo:
        return -1
    return 0
