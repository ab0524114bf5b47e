"""Angle histograms of solved methods: what ``ropeext angles`` stores and ``ropeext compare`` plots.

A solution is the content of a ``scaling.json`` (see ``solve``). Its histograms are taken over the
frequencies the disturbance was computed from: the stock float32 ``inv_freq``, or theta_i / kappa_i
in float64.
"""

from __future__ import annotations

import numpy as np

from ropeext.rope.angles import angle_histograms
from ropeext.rope.geometry import Geometry
from ropeext.rope.methods import unscaled


def pretrain_frequencies(geometry: Geometry, angle_dtype: str) -> np.ndarray:
    return unscaled(geometry).frequencies(geometry, angle_dtype)


def solution_frequencies(geometry: Geometry, solution: dict, angle_dtype: str) -> np.ndarray:
    if angle_dtype == "float64":
        return geometry.theta64() / np.asarray(solution["factors"])
    return np.asarray(solution["inv_freq"], dtype=np.float32)


def histogram_arrays(geometry: Geometry, solutions: dict[str, dict], bins: int, angle_dtype: str) -> dict:
    """``pretrain`` (positions < L) and each method's histograms (positions < L'), pairs x bins, with their
    frequencies, factors and per-pair disturbance, the geometry and the method names (an .npz's content)."""
    theta = pretrain_frequencies(geometry, angle_dtype)
    arrays = {
        "pretrain": angle_histograms(theta, geometry.train_length, bins, angle_dtype),
        "pretrain_inv_freq": np.asarray(theta),
    }
    for name, sol in solutions.items():
        freq = solution_frequencies(geometry, sol, angle_dtype)
        arrays[name] = angle_histograms(freq, geometry.target_length, bins, angle_dtype)
        arrays[f"{name}_inv_freq"] = freq
        arrays[f"{name}_factors"] = np.asarray(sol["factors"])
        arrays[f"{name}_disturbance"] = np.asarray(sol["per_pair_disturbance"])
    arrays["geometry"] = np.array(
        [geometry.rope_theta, geometry.head_dim, geometry.train_length, geometry.target_length, bins], dtype=np.float64
    )
    arrays["methods"] = np.array(list(solutions))
    return arrays


def pair_histograms(
    geometry: Geometry, solutions: dict[str, dict], bins: int, angle_dtype: str, pairs: list[int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Histograms of a few pairs only: (pre-training, len(pairs) x bins) and {method: len(pairs) x bins}."""
    pre = angle_histograms(pretrain_frequencies(geometry, angle_dtype)[pairs], geometry.train_length, bins, angle_dtype)
    per_method = {
        name: angle_histograms(
            solution_frequencies(geometry, sol, angle_dtype)[pairs], geometry.target_length, bins, angle_dtype
        )
        for name, sol in solutions.items()
    }
    return pre, per_method


def revealing_pairs(geometry: Geometry, count: int = 4) -> list[int]:
    """Pair 0 (fastest), the pairs around the one whose period first exceeds L, and the slowest pair."""
    period = 2 * np.pi / geometry.theta64()
    longer = period > geometry.train_length
    critical = int(np.argmax(longer)) if np.any(longer) else geometry.pairs - 1
    picks = [0, max(critical - 1, 0), critical, geometry.pairs - 1]
    return list(dict.fromkeys(picks))[:count]
