"""RoPE geometry: base, head dimension, pre-training and target lengths, and their checks."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ropeext.errors import RopeextError


class NonIntegerScaleWarning(UserWarning):
    """The scale L'/L is not an integer: interpolated histograms then depend on the floor constant."""


@dataclass(frozen=True)
class Geometry:
    """RoPE base ``rope_theta`` (B), ``head_dim`` (d), pre-training length L and target length L'."""

    rope_theta: float
    head_dim: int
    train_length: int
    target_length: int

    @property
    def pairs(self) -> int:
        return self.head_dim // 2

    @property
    def scale(self) -> float:
        return self.target_length / self.train_length

    def theta64(self) -> np.ndarray:
        """theta_i = B^(-2i/d) in float64, i = 0 .. d/2-1."""
        i = np.arange(self.pairs, dtype=np.float64)
        return self.rope_theta ** (-2.0 * i / self.head_dim)


def make_geometry(rope_theta, head_dim, train_length, target_length, *, warn: bool = True) -> Geometry:
    """Validate the geometry; every error names the CLI option that carries the bad value."""
    try:
        rope_theta = float(rope_theta)
    except (TypeError, ValueError):
        raise RopeextError(f"--rope-theta must be a number, got {rope_theta!r}") from None
    if not math.isfinite(rope_theta) or rope_theta <= 1.0:
        raise RopeextError(f"--rope-theta must be a finite number > 1, got {rope_theta}")
    head_dim = _as_int(head_dim, "--head-dim")
    if head_dim < 2 or head_dim % 2:
        raise RopeextError(f"--head-dim must be an even integer >= 2 (RoPE rotates pairs), got {head_dim}")
    train_length = _as_int(train_length, "--train-length")
    if train_length < 1:
        raise RopeextError(f"--train-length must be a positive integer, got {train_length}")
    target_length = _as_int(target_length, "--target-length")
    if target_length <= train_length:
        raise RopeextError(f"--target-length ({target_length}) must be greater than --train-length ({train_length})")
    if target_length >= 2**24:
        raise RopeextError(
            f"--target-length must be below 2^24 = 16777216 (positions are exact in float32), got {target_length}"
        )
    geometry = Geometry(rope_theta, head_dim, train_length, target_length)
    if warn and target_length % train_length:
        warnings.warn(
            f"the scale s = {target_length}/{train_length} = {geometry.scale:.6g} is not an integer: "
            "the divergence of interpolated pairs then depends on the floor constant 2^-14 "
            "(pre-training bins that interpolation leaves empty)",
            NonIntegerScaleWarning,
            stacklevel=2,
        )
    return geometry


def _as_int(value, option: str) -> int:
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise RopeextError(f"{option} must be an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise RopeextError(f"{option} must be an integer, got {value!r}")
    return int(as_float)
