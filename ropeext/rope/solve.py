"""``solve`` (one method -> the content of scaling.json) and ``compare`` (several methods -> table rows).

Method options come from the config's ``rope`` section (``rope=``; the schema's defaults when left
out), with keyword options laid over it by name (``truncate=False``, ``interpolated_dims=40``).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np

from ropeext.config import schema_defaults
from ropeext.errors import RopeextError
from ropeext.rope.angles import angle_histograms, check_angle_dtype, check_bins
from ropeext.rope.disturbance import check_kl_direction, per_pair_disturbance
from ropeext.rope.geometry import Geometry, make_geometry
from ropeext.rope.methods import MethodFrequencies, unscaled
from ropeext.rope.registry import METHODS

TABLE_COLUMNS = (
    "method",
    "disturbance",
    "interpolated_dims",
    "fully_interpolated_dims",
    "reduction_vs_pi",
    "max_pair_disturbance",
    "attention_factor",
)
OPTION_KEYS = {key.rsplit(".", 1)[-1]: key for m in METHODS.values() for key in m.options}


def rope_options(rope: dict | None, target_length: int, overrides: dict | None = None) -> dict:
    """The ``rope`` section (schema defaults when None) with ``overrides`` laid over the keys of the options
    they name, and ``interpolated_dims`` taken at ``target_length`` when it is a mapping."""
    out = copy.deepcopy(schema_defaults("rope") if rope is None else rope)
    for name, value in (overrides or {}).items():
        if name not in OPTION_KEYS:
            known = ", ".join(sorted(OPTION_KEYS))
            raise RopeextError(f"unknown method option {name!r} (expected one of {known})")
        if value is not None:
            node, last = key_parent(out, OPTION_KEYS[name])
            node[last] = value
    dims = out.get("interpolated_dims")
    if isinstance(dims, dict):
        out["interpolated_dims"] = dims.get(str(target_length), dims.get(target_length))
    return out


def key_parent(node: dict, key: str) -> tuple[dict, str]:
    """The mapping that holds the dotted ``key`` of ``node``, and the key's last part."""
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    return node, last


def check_method(method: str, option: str = "--method") -> str:
    if method not in METHODS:
        raise RopeextError(f"{option}: unknown method {method!r} (expected one of {', '.join(METHODS)})")
    return method


class Workspace:
    """One geometry, histogram setting and ``rope`` options; caches histograms and solved methods."""

    def __init__(
        self,
        geometry: Geometry,
        bins: int = 360,
        kl_direction: str = "code",
        angle_dtype: str = "float32",
        rope: dict | None = None,
    ):
        self.geometry = geometry
        self.bins = check_bins(bins)
        self.kl_direction = check_kl_direction(kl_direction)
        check_angle_dtype(angle_dtype)
        self.angle_dtype = angle_dtype
        self.rope = rope_options(rope, geometry.target_length)
        self._pretrain = None
        self._cache: dict[bytes, np.ndarray] = {}
        self._solved: dict[str, MethodFrequencies] = {}

    def options(self, method: str) -> dict:
        """The method's options from the ``rope`` section, each under the last part of its key."""
        out = {}
        for key in METHODS[method].options:
            node, last = key_parent(self.rope, key)
            out[last] = node[last]
        return out

    def frequencies(self, method: str) -> MethodFrequencies:
        if method not in self._solved:
            self._solved[method] = METHODS[check_method(method)].function(self, **self.options(method))
        return self._solved[method]

    def pretrain_histogram(self) -> np.ndarray:
        if self._pretrain is None:
            freq = unscaled(self.geometry).frequencies(self.geometry, self.angle_dtype)
            self._pretrain = angle_histograms(freq, self.geometry.train_length, self.bins, self.angle_dtype)
        return self._pretrain

    def histogram(self, freq: np.ndarray) -> np.ndarray:
        key = np.asarray(freq).tobytes() + str(np.asarray(freq).dtype).encode()
        if key not in self._cache:
            self._cache[key] = angle_histograms(freq, self.geometry.target_length, self.bins, self.angle_dtype)
        return self._cache[key]

    def disturbance(self, result: MethodFrequencies) -> np.ndarray:
        hist = self.histogram(result.frequencies(self.geometry, self.angle_dtype))
        return per_pair_disturbance(self.pretrain_histogram(), hist, self.kl_direction)


def _count_interpolated(factors: np.ndarray, scale: float) -> tuple[int, int]:
    f = np.asarray(factors, dtype=np.float64)
    touched = int(np.sum(f > 1.0 + 1e-6)) * 2
    full = int(np.sum(f >= scale * (1.0 - 1e-6))) * 2
    return touched, full


def _scaling_dict(ws: Workspace, method: str, result: MethodFrequencies, per_pair_d: np.ndarray) -> dict:
    g = ws.geometry
    touched, full = _count_interpolated(result.factors, g.scale)
    return {
        "method": method,
        "rope_theta": float(g.rope_theta),
        "head_dim": int(g.head_dim),
        "train_length": int(g.train_length),
        "target_length": int(g.target_length),
        "scale": float(g.scale),
        "bins": int(ws.bins),
        "kl_direction": ws.kl_direction,
        "angle_dtype": ws.angle_dtype,
        "factors": [float(x) for x in result.factors],
        "inv_freq": [float(x) for x in result.inv_freq],
        "disturbance": float(np.mean(per_pair_d)),
        "per_pair_disturbance": [float(x) for x in per_pair_d],
        "interpolated_dims": touched,
        "fully_interpolated_dims": full,
        "rope_parameters": result.rope_parameters,
        "max_position_embeddings": int(result.max_position_embeddings),
        "attention_factor": float(result.attention_factor),
        "method_options": result.options,
    }


def solve(
    method: str,
    rope_theta: float,
    head_dim: int,
    train_length: int,
    target_length: int,
    bins: int = 360,
    kl_direction: str = "code",
    angle_dtype: str = "float32",
    *,
    rope: dict | None = None,
    workspace: Workspace | None = None,
    **options,
) -> dict:
    """Solve one method at one geometry; returns the content of ``scaling.json``.

    ``rope`` is the config's ``rope`` section (the schema's defaults when None); ``options`` are laid
    over it by name (``threshold``, ``interpolated_dims``, ``candidates``, ``beta_fast``, ...).
    """
    check_method(method)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        geometry = make_geometry(rope_theta, head_dim, train_length, target_length)
    if workspace is None:
        rope = rope_options(rope, target_length, options)
        workspace = Workspace(geometry, bins, kl_direction, angle_dtype, rope)
    elif workspace.geometry != geometry:
        raise RopeextError("solve: the workspace was built for another geometry")
    result = workspace.frequencies(method)
    d = result.per_pair_disturbance if result.per_pair_disturbance is not None else workspace.disturbance(result)
    out = {**_scaling_dict(workspace, method, result, d), **result.details}
    out["warnings"] = [str(w.message) for w in caught]
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    return out


def compare_solutions(
    methods,
    rope_theta,
    head_dim,
    train_length,
    target_length,
    bins: int = 360,
    kl_direction: str = "code",
    angle_dtype: str = "float32",
    *,
    rope: dict | None = None,
    **options,
) -> tuple[list[dict], dict[str, dict]]:
    """Rows of the comparison table and each method's full solution (PI is always solved for the reduction).

    Beside ``dprope_threshold``, ``dprope`` takes the count (rope.interpolated_dims) when one is set and
    leaves the threshold to ``dprope_threshold``.
    """
    methods = _check_methods(methods)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        geometry = make_geometry(rope_theta, head_dim, train_length, target_length)
    ws = Workspace(geometry, bins, kl_direction, angle_dtype, rope_options(rope, target_length, options))
    if "dprope_threshold" in methods and ws.rope["interpolated_dims"] is not None:
        ws.frequencies("dprope_threshold")
        ws.rope["threshold"] = None  # the threshold was dprope_threshold's; dprope, solved next, takes the count
    solutions = {
        m: solve(m, rope_theta, head_dim, train_length, target_length, workspace=ws)
        for m in dict.fromkeys(list(methods) + ["pi"])
    }
    d_pi = solutions["pi"]["disturbance"]
    rows = []
    for m in methods:
        sol = solutions[m]
        rows.append(
            {
                "method": m,
                "disturbance": sol["disturbance"],
                "interpolated_dims": sol["interpolated_dims"],
                "fully_interpolated_dims": sol["fully_interpolated_dims"],
                "reduction_vs_pi": (1.0 - sol["disturbance"] / d_pi) if d_pi > 0 else float("nan"),
                "max_pair_disturbance": float(np.max(sol["per_pair_disturbance"])),
                "attention_factor": sol["attention_factor"],
            }
        )
    return rows, {m: solutions[m] for m in methods}


def compare(
    methods,
    rope_theta,
    head_dim,
    train_length,
    target_length,
    bins: int = 360,
    kl_direction: str = "code",
    angle_dtype: str = "float32",
    **options,
) -> list[dict]:
    """One row per method: total disturbance, interpolated dimensions, reduction against PI."""
    return compare_solutions(
        methods, rope_theta, head_dim, train_length, target_length, bins, kl_direction, angle_dtype, **options
    )[0]


def _check_methods(methods) -> list[str]:
    if not methods:
        raise RopeextError("--methods must list at least one method")
    for m in methods:
        check_method(m, "--methods")
    return list(dict.fromkeys(methods))
