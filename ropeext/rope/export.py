"""Conversion between per-pair factors and transformers ``rope_parameters``."""

from __future__ import annotations

import numpy as np

from ropeext.rope.geometry import Geometry
from ropeext.rope.stock import default_inv_freq, stock_inv_freq


def longrope_parameters(geometry: Geometry, factors) -> dict:
    """Per-pair divisors as a stock ``longrope`` entry: both factor lists equal, no attention scaling."""
    factors = [float(f) for f in np.asarray(factors, dtype=np.float64)]
    return {
        "rope_type": "longrope",
        "rope_theta": float(geometry.rope_theta),
        "factor": float(geometry.scale),
        "short_factor": list(factors),
        "long_factor": list(factors),
        "original_max_position_embeddings": int(geometry.train_length),
        "attention_factor": 1.0,
    }


def model_inv_freq(
    rope_parameters: dict, head_dim: int, max_position_embeddings: int, seq_len: int | None = None
) -> np.ndarray:
    """The float32 frequencies a stock model with these settings runs at ``seq_len``."""
    return stock_inv_freq(rope_parameters, head_dim, max_position_embeddings, seq_len)[0]


def factors_from_rope_parameters(
    rope_parameters: dict,
    head_dim: int,
    max_position_embeddings: int,
    seq_len: int | None = None,
    rope_theta: float | None = None,
) -> np.ndarray:
    """Per-pair divisors kappa_i = theta_i / theta_hat_i of a stock model (float64).

    ``rope_theta`` is the base the divisors are taken against (the model's own base by default).
    """
    base = float(rope_theta if rope_theta is not None else rope_parameters["rope_theta"])
    theta = default_inv_freq(base, head_dim).astype(np.float64)
    scaled = model_inv_freq(rope_parameters, head_dim, max_position_embeddings, seq_len).astype(np.float64)
    return theta / scaled
