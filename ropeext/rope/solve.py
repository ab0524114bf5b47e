"""``solve`` (one method -> the content of scaling.json) and ``compare`` (several methods -> table rows)."""

from __future__ import annotations

import warnings

import numpy as np

from ropeext.errors import RopeextError
from ropeext.rope import dprope as dp
from ropeext.rope.angles import angle_histograms, check_angle_dtype, check_bins
from ropeext.rope.disturbance import check_kl_direction, per_pair_disturbance
from ropeext.rope.geometry import Geometry, make_geometry
from ropeext.rope.methods import (DPROPE_METHODS, METHODS, MethodFrequencies, check_factors, check_method,
                                  method_frequencies, per_pair, resolve_options)

TABLE_COLUMNS = ("method", "disturbance", "interpolated_dims", "fully_interpolated_dims", "reduction_vs_pi",
                 "max_pair_disturbance", "attention_factor")


class Workspace:
    """One geometry and histogram setting; caches the pre-training histogram and method histograms."""

    def __init__(self, geometry: Geometry, bins: int = 360, kl_direction: str = "code",
                 angle_dtype: str = "float32"):
        self.geometry = geometry
        self.bins = check_bins(bins)
        self.kl_direction = check_kl_direction(kl_direction)
        check_angle_dtype(angle_dtype)
        self.angle_dtype = angle_dtype
        self._pretrain = None
        self._cache: dict[bytes, np.ndarray] = {}

    def pretrain_histogram(self) -> np.ndarray:
        if self._pretrain is None:
            none = method_frequencies("none", self.geometry)
            freq = none.frequencies(self.geometry, self.angle_dtype)
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


def _scaling_dict(ws: Workspace, result: MethodFrequencies, per_pair_d: np.ndarray) -> dict:
    g = ws.geometry
    touched, full = _count_interpolated(result.factors, g.scale)
    return {
        "method": result.method,
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


def _solve_dprope(ws: Workspace, threshold, interpolated_dims, candidates, name: str = "dprope") -> dict:
    g = ws.geometry
    t, n = dp.check_selection(threshold, interpolated_dims, g.head_dim)
    names = dp.parse_candidates(candidates)
    cands = dp.build_candidates(names, g)
    per_cand = [per_pair(g, c.factors, c.name) for c in cands]
    dist = np.stack([ws.disturbance(r) for r in per_cand])
    chosen = dp.choose(dist, t, n)
    pairs = np.arange(g.pairs)
    factors = np.stack([c.factors for c in cands])[chosen, pairs]
    result = per_pair(g, factors, name, {"candidates": names})
    picked = np.stack([r.frequencies(g, ws.angle_dtype) for r in per_cand])[chosen, pairs]
    if np.array_equal(result.frequencies(g, ws.angle_dtype), picked):
        d_final = dist[chosen, pairs]  # the same per-pair frequencies, so the same histograms
    else:
        d_final = ws.disturbance(result)
    out = _scaling_dict(ws, result, d_final)
    out["threshold"] = None if n is not None else t
    out["interpolated_dims_requested"] = n
    out["candidates"] = {c.name: {"factors": [float(x) for x in c.factors],
                                  "per_pair_disturbance": [float(x) for x in row],
                                  "disturbance": float(np.mean(row))} for c, row in zip(cands, dist)}
    out["chosen_candidate"] = [cands[k].name for k in chosen]
    if len(cands) == 2:
        out["gap"] = [float(x) for x in dist[0] - dist[1]]
    basic = [i for i, c in enumerate(cands) if c.name in dp.BASIC]
    if len(cands) > 2 and len(basic) == 2:
        basic_choice = dp.choose(dist[basic], t, n)
        d_basic = dist[basic][basic_choice, pairs]
        out["basic_disturbance"] = float(np.mean(d_basic))
        out["candidates_lower_total"] = bool(np.mean(d_final) < np.mean(d_basic))
    return out


def solve(method: str, rope_theta: float, head_dim: int, train_length: int, target_length: int, bins: int = 360,
          threshold: float | None = None, interpolated_dims: int | None = None, factors=None,
          kl_direction: str = "code", angle_dtype: str = "float32", *, workspace: Workspace | None = None,
          **method_options) -> dict:
    """Solve one method at one geometry; returns the content of ``scaling.json``.

    ``threshold`` / ``interpolated_dims`` / ``candidates`` steer ``dprope`` and are ignored by the
    other methods; ``factors`` (d/2 divisors) is what ``longrope`` exports.
    """
    check_method(method)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        geometry = make_geometry(rope_theta, head_dim, train_length, target_length)
    ws = workspace or Workspace(geometry, bins, kl_direction, angle_dtype)
    if ws.geometry != geometry:
        raise RopeextError("solve: the workspace was built for another geometry")
    if method in DPROPE_METHODS:
        if method == "dprope_threshold":  # the threshold rule, whatever count of dimensions is configured
            threshold, interpolated_dims = (0.0 if threshold is None else threshold), None
        elif threshold is not None and interpolated_dims is not None:
            raise RopeextError("--threshold and --interpolated-dims (rope.threshold and rope.interpolated_dims) "
                               "cannot both steer dprope: give one of them, or list dprope_threshold too, which "
                               "takes the threshold while dprope takes the count")
        opts = resolve_options(method, method_options)
        out = _solve_dprope(ws, threshold, interpolated_dims, opts["candidates"], name=method)
    else:
        if factors is not None and method == "longrope":
            factors = check_factors(factors, geometry)
        result = method_frequencies(method, geometry, factors=factors if method == "longrope" else None,
                                    **method_options)
        out = _scaling_dict(ws, result, ws.disturbance(result))
    out["warnings"] = [str(w.message) for w in caught]
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    return out


def compare_solutions(methods, rope_theta, head_dim, train_length, target_length, bins: int = 360,
                      threshold=None, interpolated_dims=None, factors=None, kl_direction: str = "code",
                      angle_dtype: str = "float32", **method_options) -> tuple[list[dict], dict[str, dict]]:
    """Rows of the comparison table and each method's full solution (PI is always solved for the reduction)."""
    methods = _check_methods(methods)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        geometry = make_geometry(rope_theta, head_dim, train_length, target_length)
    ws = Workspace(geometry, bins, kl_direction, angle_dtype)
    solutions: dict[str, dict] = {}
    for m in list(dict.fromkeys(list(methods) + ["pi"])):
        opts = {k: v for k, v in method_options.items() if k in _options_of(m)}
        t = threshold
        if m == "dprope" and "dprope_threshold" in methods and interpolated_dims is not None:
            t = None  # beside dprope_threshold, the threshold is that method's; dprope takes the count
        solutions[m] = solve(m, rope_theta, head_dim, train_length, target_length, bins, t,
                             interpolated_dims, factors, kl_direction, angle_dtype, workspace=ws, **opts)
    d_pi = solutions["pi"]["disturbance"]
    rows = []
    for m in methods:
        sol = solutions[m]
        rows.append({
            "method": m,
            "disturbance": sol["disturbance"],
            "interpolated_dims": sol["interpolated_dims"],
            "fully_interpolated_dims": sol["fully_interpolated_dims"],
            "reduction_vs_pi": (1.0 - sol["disturbance"] / d_pi) if d_pi > 0 else float("nan"),
            "max_pair_disturbance": float(np.max(sol["per_pair_disturbance"])),
            "attention_factor": sol["attention_factor"],
        })
    return rows, {m: solutions[m] for m in methods}


def compare(methods, rope_theta, head_dim, train_length, target_length, bins: int = 360, threshold=None,
            interpolated_dims=None, factors=None, kl_direction: str = "code", angle_dtype: str = "float32",
            **method_options) -> list[dict]:
    """One row per method: total disturbance, interpolated dimensions, reduction against PI."""
    return compare_solutions(methods, rope_theta, head_dim, train_length, target_length, bins, threshold,
                             interpolated_dims, factors, kl_direction, angle_dtype, **method_options)[0]


def _check_methods(methods) -> list[str]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(methods)
    if not methods:
        raise RopeextError("--methods must list at least one method")
    for m in methods:
        if m not in METHODS:
            raise RopeextError(f"--methods: unknown method {m!r} (expected some of {', '.join(METHODS)})")
    return list(dict.fromkeys(methods))


def _options_of(method: str) -> tuple:
    from ropeext.rope.methods import METHOD_OPTIONS

    return tuple(METHOD_OPTIONS[method])
