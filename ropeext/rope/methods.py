"""Per-pair frequencies of every scaling method, and how each exports to a stock model.

A method yields per-pair divisors ``factors`` (kappa_i, so theta_hat_i = theta_i / kappa_i), the
float32 ``inv_freq`` a stock transformers model runs with the exported ``rope_parameters``, and the
``max_position_embeddings`` to put in the model config. Native rope types take their frequencies
from transformers' own init functions; per-pair factor methods export as ``longrope``.
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

METHODS = ("none", "pi", "ntk", "dynamic_ntk", "yarn", "llama3", "base_change", "longrope", "dprope",
           "dprope_threshold")
# DPRoPE chooses per pair; ``dprope`` by rope.interpolated_dims when set (the paper's n), else by
# rope.threshold; ``dprope_threshold`` always by the threshold, so one run can hold both selections
DPROPE_METHODS = ("dprope", "dprope_threshold")

# options each method accepts besides the geometry, with their defaults
METHOD_OPTIONS = {
    "none": {},
    "pi": {},
    "ntk": {},
    "dynamic_ntk": {},
    "yarn": {"beta_fast": 32.0, "beta_slow": 1.0, "truncate": True},
    "llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0},
    "base_change": {"new_rope_theta": None},
    "longrope": {},
    "dprope": {"candidates": ("extrapolate", "interpolate")},
    "dprope_threshold": {"candidates": ("extrapolate", "interpolate")},
}


@dataclass
class MethodFrequencies:
    method: str
    factors: np.ndarray            # kappa_i, float64
    inv_freq: np.ndarray           # what the stock model runs, float32
    rope_parameters: dict
    max_position_embeddings: int
    attention_factor: float = 1.0
    options: dict = field(default_factory=dict)

    def frequencies(self, geometry: Geometry, angle_dtype: str) -> np.ndarray:
        """The frequencies to bin: the stock float32 values, or theta_i / kappa_i in float64."""
        if angle_dtype == "float64":
            return geometry.theta64() / self.factors
        return self.inv_freq


def check_method(method: str) -> str:
    if method not in METHODS:
        raise RopeextError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def resolve_options(method: str, options: dict) -> dict:
    """The method's options with defaults filled in; unknown options name the method and the key."""
    allowed = METHOD_OPTIONS[method]
    unknown = sorted(k for k, v in options.items() if k not in allowed and v is not None)
    if unknown:
        accepted = ", ".join(allowed) or "no options"
        raise RopeextError(f"method {method!r} does not take option(s) {', '.join(unknown)} (it takes {accepted})")
    resolved = dict(allowed)
    resolved.update({k: v for k, v in options.items() if k in allowed and v is not None})
    return resolved


def _stock_factors(geometry: Geometry, inv_freq: np.ndarray) -> np.ndarray:
    theta = default_inv_freq(geometry.rope_theta, geometry.head_dim).astype(np.float64)
    return theta / inv_freq.astype(np.float64)


def native(geometry: Geometry, rope_parameters: dict, max_position_embeddings: int, method: str,
           options: dict | None = None) -> MethodFrequencies:
    """A method that stock transformers implements: frequencies at the target length from transformers."""
    inv_freq, attention = stock_inv_freq(rope_parameters, geometry.head_dim, max_position_embeddings,
                                         seq_len=geometry.target_length)
    return MethodFrequencies(method, _stock_factors(geometry, inv_freq), inv_freq, rope_parameters,
                             max_position_embeddings, attention, dict(options or {}))


def per_pair(geometry: Geometry, factors, method: str, options: dict | None = None) -> MethodFrequencies:
    """A per-pair factor method, exported as ``longrope`` with short == long factors."""
    factors = np.asarray(factors, dtype=np.float64)
    params = longrope_parameters(geometry, factors)
    inv_freq, attention = stock_inv_freq(params, geometry.head_dim, geometry.target_length,
                                         seq_len=geometry.target_length)
    return MethodFrequencies(method, factors, inv_freq, params, geometry.target_length, attention,
                             dict(options or {}))


def ntk_factors(geometry: Geometry) -> np.ndarray:
    """NTK-aware base change B' = B s^(d/(d-2)) as divisors: kappa_i = s^(2i/(d-2))."""
    d = geometry.head_dim
    if d == 2:
        return np.ones(1)
    i = np.arange(geometry.pairs, dtype=np.float64)
    return geometry.scale ** (2.0 * i / (d - 2))


def method_frequencies(method: str, geometry: Geometry, *, factors=None, **options) -> MethodFrequencies:
    """Frequencies of every method except ``dprope`` (see ``ropeext.rope.dprope``)."""
    check_method(method)
    opts = resolve_options(method, options)
    B, L, s = float(geometry.rope_theta), geometry.train_length, float(geometry.scale)
    if method == "none":
        return native(geometry, {"rope_type": "default", "rope_theta": B}, geometry.target_length, method)
    if method == "pi":
        return native(geometry, {"rope_type": "linear", "factor": s, "rope_theta": B}, geometry.target_length, method)
    if method == "dynamic_ntk":
        # stock dynamic NTK reads max_position_embeddings as the pre-training length and grows its base
        # with the running length; evaluated here at the target length
        return native(geometry, {"rope_type": "dynamic", "factor": s, "rope_theta": B}, L, method)
    if method == "yarn":
        params = {"rope_type": "yarn", "factor": s, "rope_theta": B, "original_max_position_embeddings": L,
                  "beta_fast": float(opts["beta_fast"]), "beta_slow": float(opts["beta_slow"]),
                  "truncate": bool(opts["truncate"])}
        return native(geometry, params, geometry.target_length, method, opts)
    if method == "llama3":
        low, high = float(opts["low_freq_factor"]), float(opts["high_freq_factor"])
        if not high > low:
            raise RopeextError(f"llama3 high_freq_factor ({high}) must be greater than low_freq_factor ({low})")
        params = {"rope_type": "llama3", "factor": s, "rope_theta": B, "original_max_position_embeddings": L,
                  "low_freq_factor": low, "high_freq_factor": high}
        return native(geometry, params, geometry.target_length, method, opts)
    if method == "base_change":
        new = opts["new_rope_theta"]
        if new is None:
            raise RopeextError("--method base_change needs --new-rope-theta (the new RoPE base, e.g. 5e6)")
        try:
            new = float(new)
        except (TypeError, ValueError):
            raise RopeextError(f"--new-rope-theta must be a number, got {new!r}") from None
        if not np.isfinite(new) or new <= 1.0:
            raise RopeextError(f"--new-rope-theta must be a finite number > 1, got {new}")
        result = native(geometry, {"rope_type": "default", "rope_theta": new}, geometry.target_length, method,
                        {"new_rope_theta": new})
        i = np.arange(geometry.pairs, dtype=np.float64)
        result.factors = (new / B) ** (2.0 * i / geometry.head_dim)
        return result
    if method == "ntk":
        return per_pair(geometry, ntk_factors(geometry), method)
    if method == "longrope":
        if factors is None:
            raise RopeextError("--method longrope needs --factors-file (one factor per rotary pair)")
        return per_pair(geometry, check_factors(factors, geometry), method)
    raise RopeextError(f"method {method!r} is solved by ropeext.rope.dprope, not by method_frequencies")


def check_factors(factors, geometry: Geometry, source: str = "--factors-file") -> np.ndarray:
    array = np.asarray(factors, dtype=np.float64).ravel()
    if array.size != geometry.pairs:
        raise RopeextError(f"{source}: expected {geometry.pairs} factors (one per rotary pair, head_dim "
                           f"{geometry.head_dim} / 2), got {array.size}")
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
