"""Per-pair frequencies of the scaling methods, and how each exports to a stock model.

A method yields per-pair divisors ``factors`` (kappa_i, so theta_hat_i = theta_i / kappa_i), the
float32 ``inv_freq`` a stock transformers model runs with the exported ``rope_parameters``, and the
``max_position_embeddings`` to put in the model config. Native rope types take their frequencies
from transformers' own init functions; per-pair factor methods export as ``longrope``.

Each method function takes the solve's workspace (``ws.geometry``; ``ropeext.rope.solve.Workspace``)
and its options as keywords; ``ropeext.rope.registry`` names them. Option defaults live in the schema.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ropeext.errors import RopeextError
from ropeext.rope.export import longrope_parameters
from ropeext.rope.geometry import Geometry
from ropeext.rope.stock import default_inv_freq, stock_inv_freq


@dataclass
class MethodFrequencies:
    factors: np.ndarray  # kappa_i, float64
    inv_freq: np.ndarray  # what the stock model runs, float32
    rope_parameters: dict
    max_position_embeddings: int
    attention_factor: float = 1.0
    options: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # more fields of scaling.json (dprope: its candidates and choice)
    per_pair_disturbance: np.ndarray | None = None  # when the method has computed it already

    def frequencies(self, geometry: Geometry, angle_dtype: str) -> np.ndarray:
        """The frequencies to bin: the stock float32 values, or theta_i / kappa_i in float64."""
        if angle_dtype == "float64":
            return geometry.theta64() / self.factors
        return self.inv_freq


def _stock_factors(geometry: Geometry, inv_freq: np.ndarray) -> np.ndarray:
    theta = default_inv_freq(geometry.rope_theta, geometry.head_dim).astype(np.float64)
    return theta / inv_freq.astype(np.float64)


def native(
    geometry: Geometry, rope_parameters: dict, max_position_embeddings: int, options: dict | None = None
) -> MethodFrequencies:
    """A method that stock transformers implements: frequencies at the target length from transformers."""
    inv_freq, attention = stock_inv_freq(
        rope_parameters, geometry.head_dim, max_position_embeddings, seq_len=geometry.target_length
    )
    return MethodFrequencies(
        _stock_factors(geometry, inv_freq),
        inv_freq,
        rope_parameters,
        max_position_embeddings,
        attention,
        dict(options or {}),
    )


def per_pair(geometry: Geometry, factors, options: dict | None = None) -> MethodFrequencies:
    """A per-pair factor method, exported as ``longrope`` with short == long factors."""
    factors = np.asarray(factors, dtype=np.float64)
    params = longrope_parameters(geometry, factors)
    inv_freq, attention = stock_inv_freq(
        params, geometry.head_dim, geometry.target_length, seq_len=geometry.target_length
    )
    return MethodFrequencies(factors, inv_freq, params, geometry.target_length, attention, dict(options or {}))


def ntk_factors(geometry: Geometry) -> np.ndarray:
    """NTK-aware base change B' = B s^(d/(d-2)) as divisors: kappa_i = s^(2i/(d-2))."""
    d = geometry.head_dim
    if d == 2:
        return np.ones(1)
    i = np.arange(geometry.pairs, dtype=np.float64)
    return geometry.scale ** (2.0 * i / (d - 2))


def unscaled(geometry: Geometry) -> MethodFrequencies:
    """The pre-training frequencies, run at the target length."""
    params = {"rope_type": "default", "rope_theta": float(geometry.rope_theta)}
    return native(geometry, params, geometry.target_length)


def none(ws) -> MethodFrequencies:
    return unscaled(ws.geometry)


def pi(ws) -> MethodFrequencies:
    g = ws.geometry
    return native(
        g, {"rope_type": "linear", "factor": float(g.scale), "rope_theta": float(g.rope_theta)}, g.target_length
    )


def dynamic_ntk(ws) -> MethodFrequencies:
    # stock dynamic NTK reads max_position_embeddings as the pre-training length and grows its base
    # with the running length; evaluated here at the target length
    g = ws.geometry
    return native(
        g, {"rope_type": "dynamic", "factor": float(g.scale), "rope_theta": float(g.rope_theta)}, g.train_length
    )


def ntk(ws) -> MethodFrequencies:
    return per_pair(ws.geometry, ntk_factors(ws.geometry))


def yarn(ws, *, beta_fast: float, beta_slow: float, truncate: bool) -> MethodFrequencies:
    g = ws.geometry
    params = {
        "rope_type": "yarn",
        "factor": float(g.scale),
        "rope_theta": float(g.rope_theta),
        "original_max_position_embeddings": g.train_length,
        "beta_fast": float(beta_fast),
        "beta_slow": float(beta_slow),
        "truncate": bool(truncate),
    }
    return native(g, params, g.target_length, dict(beta_fast=beta_fast, beta_slow=beta_slow, truncate=truncate))


def llama3(ws, *, low_freq_factor: float, high_freq_factor: float) -> MethodFrequencies:
    g = ws.geometry
    low, high = float(low_freq_factor), float(high_freq_factor)
    if not high > low:
        raise RopeextError(f"llama3 high_freq_factor ({high}) must be greater than low_freq_factor ({low})")
    params = {
        "rope_type": "llama3",
        "factor": float(g.scale),
        "rope_theta": float(g.rope_theta),
        "original_max_position_embeddings": g.train_length,
        "low_freq_factor": low,
        "high_freq_factor": high,
    }
    options = dict(low_freq_factor=low_freq_factor, high_freq_factor=high_freq_factor)
    return native(g, params, g.target_length, options)


def base_change(ws, *, new_rope_theta) -> MethodFrequencies:
    g = ws.geometry
    if new_rope_theta is None:
        raise RopeextError("--method base_change needs --new-rope-theta (the new RoPE base, e.g. 5e6)")
    try:
        new = float(new_rope_theta)
    except (TypeError, ValueError):
        raise RopeextError(f"--new-rope-theta must be a number, got {new_rope_theta!r}") from None
    if not np.isfinite(new) or new <= 1.0:
        raise RopeextError(f"--new-rope-theta must be a finite number > 1, got {new}")
    result = native(g, {"rope_type": "default", "rope_theta": new}, g.target_length, {"new_rope_theta": new})
    i = np.arange(g.pairs, dtype=np.float64)
    result.factors = (new / float(g.rope_theta)) ** (2.0 * i / g.head_dim)
    return result


def longrope(ws, *, factors_file) -> MethodFrequencies:
    if factors_file is None:
        raise RopeextError("--method longrope needs --factors-file (one factor per rotary pair)")
    return per_pair(ws.geometry, check_factors(read_factors_file(factors_file), ws.geometry))


def check_factors(factors, geometry: Geometry, source: str = "--factors-file") -> np.ndarray:
    array = np.asarray(factors, dtype=np.float64).ravel()
    if array.size != geometry.pairs:
        raise RopeextError(
            f"{source}: expected {geometry.pairs} factors (one per rotary pair, head_dim "
            f"{geometry.head_dim} / 2), got {array.size}"
        )
    if np.any(~np.isfinite(array)) or np.any(array <= 0):
        raise RopeextError(f"{source}: factors must be finite and > 0")
    return array


def read_factors_file(path) -> np.ndarray:
    """Factors from a CSV: one column (one factor per line) or one row; an optional header line;
    with several columns, a column named ``factor`` is used."""
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"--factors-file not found: {path}")
    text = path.read_text()
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    rows = [[c.strip() for c in r] for r in rows if not r[0].strip().startswith("#")]
    if not rows:
        raise RopeextError(f"--factors-file {path}: no factors found")
    header = None
    if not _numeric(rows[0][0]):
        header, rows = rows[0], rows[1:]
    try:
        if header is not None and len(header) > 1:
            if "factor" not in header:
                raise RopeextError(f"--factors-file {path}: several columns but none named 'factor' ({header})")
            col = header.index("factor")
            values = [float(r[col]) for r in rows]
        elif len(rows) == 1:
            values = [float(c) for c in rows[0] if c]
        else:
            if any(len([c for c in r if c]) != 1 for r in rows):
                raise RopeextError(f"--factors-file {path}: expected one factor per line or one row of factors")
            values = [float(r[0]) for r in rows]
    except (ValueError, IndexError):
        raise RopeextError(f"--factors-file {path}: every factor must be a number") from None
    return np.asarray(values, dtype=np.float64)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
