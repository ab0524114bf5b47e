"""The DPRoPE solver: per rotary pair, the scaling whose angle distribution stays closest to pre-training.

Two candidates per pair, extrapolate (kappa_i = 1) and interpolate (kappa_i = s); the gap
g_i = D_i(extrapolate) - D_i(interpolate). A pair is interpolated iff g_i > t (ties extrapolate),
or, given n interpolated dimensions, the n/2 pairs with the largest gaps are.

Beyond the two, a candidate set may add per-pair values of other methods (``yarn``, ``ntk``) or a
``grid:K`` of K uniform factors spaced geometrically from 1 to s. Each pair then takes its
candidate of least D_i, unless that beats extrapolation by no more than t (or, with n, the pair is
not among the n/2 pairs where the best candidate beats extrapolation most).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropeext.errors import RopeextError
from ropeext.rope.methods import MethodFrequencies, ntk_factors, per_pair

BASIC = ("extrapolate", "interpolate")


@dataclass
class Candidate:
    name: str
    factors: np.ndarray


def parse_candidates(spec) -> list[str]:
    if spec is None:
        return list(BASIC)
    names = [c.strip() for c in (spec.split(",") if isinstance(spec, str) else spec) if str(c).strip()]
    if not names:
        raise RopeextError("--candidates must name at least one candidate")
    return list(dict.fromkeys(["extrapolate", *names]))  # extrapolation first: ties go to it


def build_candidates(names: list[str], ws) -> list[Candidate]:
    """The candidates' per-pair factors; ``yarn``, ``llama3`` and ``dynamic_ntk`` as the workspace solves them."""
    geometry = ws.geometry
    s, pairs = float(geometry.scale), geometry.pairs
    out: list[Candidate] = []
    for name in names:
        if name == "extrapolate":
            out.append(Candidate(name, np.ones(pairs)))
        elif name in ("interpolate", "pi"):
            out.append(Candidate(name, np.full(pairs, s)))
        elif name == "ntk":
            out.append(Candidate(name, ntk_factors(geometry)))
        elif name in ("yarn", "llama3", "dynamic_ntk"):
            out.append(Candidate(name, ws.frequencies(name).factors))
        elif name.startswith("grid:"):
            try:
                k = int(name.split(":", 1)[1])
            except ValueError:
                k = 0
            if k < 2:
                raise RopeextError(f"--candidates: {name!r} must be grid:K with an integer K >= 2")
            for f in np.geomspace(1.0, s, k):
                out.append(Candidate(f"factor={f:.6g}", np.full(pairs, f)))
        else:
            raise RopeextError(
                f"--candidates: unknown candidate {name!r} (expected extrapolate, interpolate, "
                "ntk, yarn, llama3, dynamic_ntk or grid:K)"
            )
    # drop duplicates of an earlier candidate (the grid contains 1 and s)
    unique: list[Candidate] = []
    for cand in out:
        if not any(np.array_equal(cand.factors, u.factors) for u in unique):
            unique.append(cand)
    return unique


def check_selection(threshold, interpolated_dims, head_dim: int) -> tuple[float, int | None]:
    if threshold is not None and interpolated_dims is not None:
        raise RopeextError("--threshold and --interpolated-dims cannot be combined: give one of them")
    if interpolated_dims is not None:
        try:
            n = int(interpolated_dims)
        except (TypeError, ValueError):
            raise RopeextError(f"--interpolated-dims must be an even integer, got {interpolated_dims!r}") from None
        if n != interpolated_dims or n % 2 or not 0 <= n <= head_dim:
            raise RopeextError(
                f"--interpolated-dims must be an even integer between 0 and the head dimension "
                f"{head_dim} (it counts dimensions, two per pair), got {interpolated_dims!r}"
            )
        return 0.0, n
    try:
        t = 0.0 if threshold is None else float(threshold)
    except (TypeError, ValueError):
        raise RopeextError(f"--threshold must be a number, got {threshold!r}") from None
    if not np.isfinite(t):
        raise RopeextError(f"--threshold must be finite, got {threshold!r}")
    return t, None


def choose(disturbances: np.ndarray, threshold: float = 0.0, interpolated_dims: int | None = None) -> np.ndarray:
    """Index of the chosen candidate per pair; ``disturbances`` has shape (candidates, pairs), row 0 = extrapolate."""
    d = np.asarray(disturbances, dtype=np.float64)
    pairs = d.shape[1]
    if d.shape[0] == 1:
        return np.zeros(pairs, dtype=np.int64)
    others = d[1:]
    best_other = np.argmin(others, axis=0) + 1  # ties: earliest candidate
    gain = d[0] - others.min(axis=0)  # gap against extrapolation
    if interpolated_dims is None:
        leave = gain > threshold
    else:
        order = np.argsort(-gain, kind="stable")
        leave = np.zeros(pairs, dtype=bool)
        leave[order[: interpolated_dims // 2]] = True
    return np.where(leave, best_other, 0)


def dprope(ws, *, threshold=None, interpolated_dims=None, candidates=None) -> MethodFrequencies:
    """Per pair, the candidate of least disturbance: by threshold, or the n/2 pairs of largest gaps."""
    if threshold is not None and interpolated_dims is not None:
        raise RopeextError(
            "--threshold and --interpolated-dims (rope.threshold and rope.interpolated_dims) "
            "cannot both steer dprope: give one of them, or list dprope_threshold too, which "
            "takes the threshold while dprope takes the count"
        )
    g = ws.geometry
    t, n = check_selection(threshold, interpolated_dims, g.head_dim)
    names = parse_candidates(candidates)
    cands = build_candidates(names, ws)
    per_cand = [per_pair(g, c.factors) for c in cands]
    dist = np.stack([ws.disturbance(r) for r in per_cand])
    chosen = choose(dist, t, n)
    pairs = np.arange(g.pairs)
    result = per_pair(g, np.stack([c.factors for c in cands])[chosen, pairs], {"candidates": names})
    picked = np.stack([r.frequencies(g, ws.angle_dtype) for r in per_cand])[chosen, pairs]
    if np.array_equal(result.frequencies(g, ws.angle_dtype), picked):
        result.per_pair_disturbance = dist[chosen, pairs]  # the same per-pair frequencies, so the same histograms
    else:
        result.per_pair_disturbance = ws.disturbance(result)
    d = result.details
    d["threshold"] = None if n is not None else t
    d["interpolated_dims_requested"] = n
    d["candidates"] = {
        c.name: {
            "factors": [float(x) for x in c.factors],
            "per_pair_disturbance": [float(x) for x in row],
            "disturbance": float(np.mean(row)),
        }
        for c, row in zip(cands, dist)
    }
    d["chosen_candidate"] = [cands[k].name for k in chosen]
    if len(cands) == 2:
        d["gap"] = [float(x) for x in dist[0] - dist[1]]
    basic = [i for i, c in enumerate(cands) if c.name in BASIC]
    if len(cands) > 2 and len(basic) == 2:
        d_basic = dist[basic][choose(dist[basic], t, n), pairs]
        d["basic_disturbance"] = float(np.mean(d_basic))
        d["candidates_lower_total"] = bool(np.mean(result.per_pair_disturbance) < np.mean(d_basic))
    return result


def dprope_threshold(ws, *, threshold=None, candidates=None) -> MethodFrequencies:
    """DPRoPE by the threshold rule (0.0 when none is set), whatever count of dimensions is configured."""
    return dprope(ws, threshold=0.0 if threshold is None else threshold, candidates=candidates)
