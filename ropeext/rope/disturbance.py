"""Disturbance: per-pair KL divergence between the pre-training and the extended angle histograms."""

from __future__ import annotations

import numpy as np

from ropeext.errors import RopeextError

KL_DIRECTIONS = ("code", "paper")


def check_kl_direction(direction: str) -> str:
    if direction not in KL_DIRECTIONS:
        raise RopeextError(f"--kl-direction must be one of {', '.join(KL_DIRECTIONS)}, got {direction!r}")
    return direction


def per_pair_disturbance(pretrain: np.ndarray, extended: np.ndarray, kl_direction: str = "code") -> np.ndarray:
    """D_i for every pair.

    ``code``: D_i = sum_k P_L,i(k) ln(P_L,i(k) / Phat_L',i(k)) (from the pre-training histogram to the
    extended one, as the authors' released code computes it).
    ``paper``: the arguments the other way round, as the paper's equation prints it.
    """
    check_kl_direction(kl_direction)
    p = np.asarray(pretrain, dtype=np.float64)
    q = np.asarray(extended, dtype=np.float64)
    if p.shape != q.shape:
        raise RopeextError(f"histogram shapes differ: {p.shape} vs {q.shape}")
    if kl_direction == "paper":
        p, q = q, p
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)
