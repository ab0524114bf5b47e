"""Histograms of rotary angles, one per rotary pair, vectorised over positions.

For frequencies theta_hat_i and a length N, the angle of pair i at integer position m is
``(m * theta_hat_i) mod 2*pi``; its bin among ``b`` equal bins is
``floor(b * angle / (2*pi))``. ``P_i(k) = (count_k + 2^-14) / N``.

In float32 (the default) every step is rounded as float32 arithmetic rounds it: the product
``float32(m) * theta``, the remainder by ``float32(2*pi)`` (exact, as fmod is), and the product
with ``float32(b / (2*pi))``. An angle whose bin index rounds up to ``b`` is put in the last bin.
"""

from __future__ import annotations

import math

import numpy as np

from ropeext.errors import RopeextError

FLOOR = 2.0**-14  # the pseudo-count added to every bin (float16's smallest normal number)
ANGLE_DTYPES = ("float32", "float64")
_CHUNK_ELEMENTS = 1 << 22


def check_bins(bins) -> int:
    try:
        value = int(bins)
    except (TypeError, ValueError):
        raise RopeextError(f"--bins must be an integer >= 2, got {bins!r}") from None
    if value != bins or value < 2:
        raise RopeextError(f"--bins must be an integer >= 2, got {bins!r}")
    return value


def check_angle_dtype(angle_dtype: str) -> np.dtype:
    if angle_dtype not in ANGLE_DTYPES:
        raise RopeextError(f"--angle-dtype must be one of {', '.join(ANGLE_DTYPES)}, got {angle_dtype!r}")
    return np.dtype(angle_dtype)


def angle_bins(inv_freq: np.ndarray, positions: np.ndarray, bins: int, angle_dtype: str = "float32") -> np.ndarray:
    """Bin index of every (position, pair): array of shape (len(positions), pairs)."""
    dtype = check_angle_dtype(angle_dtype)
    freq = np.asarray(inv_freq, dtype=dtype)
    two_pi = dtype.type(2.0 * math.pi)
    to_bin = dtype.type(bins / (2.0 * math.pi))
    angles = np.multiply.outer(positions.astype(dtype), freq)
    if dtype == np.float32:
        angles = remainder_float32(angles, two_pi)
    else:
        np.fmod(angles, two_pi, out=angles)
    angles *= to_bin
    idx = np.floor(angles, out=angles).astype(np.int64)
    np.minimum(idx, bins - 1, out=idx)
    return idx


def remainder_float32(angles: np.ndarray, divisor: np.float32) -> np.ndarray:
    """``fmod(angles, divisor)`` for non-negative float32 values, exactly, about 3x faster than np.fmod.

    In float64 the product q * divisor (q < 2^28, divisor with a 24-bit mantissa) and the
    difference angles - q * divisor are exact, so once the quotient q is corrected by one where the
    float64 division rounded across an integer, the remainder is the exact one, which float32 holds.
    """
    if angles.size and float(angles.max()) >= 2.0**27 * float(divisor):
        return np.fmod(angles, divisor)
    a = angles.astype(np.float64)
    b = np.float64(divisor)
    q = np.floor(a / b)
    r = a - q * b
    r[r < 0] += b
    r[r >= b] -= b
    return r.astype(np.float32)


def angle_counts(inv_freq, length: int, bins: int, angle_dtype: str = "float32") -> np.ndarray:
    """Counts per (pair, bin) over positions 0 .. length-1 (int64, shape (pairs, bins))."""
    bins = check_bins(bins)
    inv_freq = np.asarray(inv_freq)
    if inv_freq.ndim != 1 or inv_freq.size == 0:
        raise RopeextError("frequencies must be a non-empty 1-D array (one per rotary pair)")
    if np.any(~np.isfinite(inv_freq)) or np.any(inv_freq < 0):
        raise RopeextError("frequencies must be finite and non-negative")
    pairs = inv_freq.size
    offsets = np.arange(pairs, dtype=np.int64) * bins
    counts = np.zeros(pairs * bins, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // pairs)
    for start in range(0, int(length), step):
        positions = np.arange(start, min(int(length), start + step), dtype=np.int64)
        idx = angle_bins(inv_freq, positions, bins, angle_dtype)
        idx += offsets
        counts += np.bincount(idx.ravel(), minlength=pairs * bins)
    return counts.reshape(pairs, bins)


def angle_histograms(inv_freq, length: int, bins: int = 360, angle_dtype: str = "float32") -> np.ndarray:
    """P_i(k) = (count_k + 2^-14) / N for every pair i and bin k (float64, shape (pairs, bins))."""
    if int(length) < 1:
        raise RopeextError(f"length must be a positive integer, got {length}")
    counts = angle_counts(inv_freq, length, bins, angle_dtype)
    return (counts + FLOOR) / float(length)
