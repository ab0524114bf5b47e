"""Checks of the RoPE settings: the DPRoPE pair selection, each method's options, the longrope factors file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

from ropeext.checks.registry import check, head_dim
from ropeext.errors import RopeextError
from ropeext.rope.geometry import Geometry, make_geometry
from ropeext.rope.methods import check_factors, read_factors_file


def _method_lists(config: dict) -> dict[str, list[str]]:
    return {
        "extension.methods": config["extension"]["methods"],
        "rope.compare_methods": config["rope"]["compare_methods"],
        "rope.angles_methods": config["rope"]["angles_methods"],
    }


def _uses(config: dict, method: str) -> str | None:
    """Which method lists name ``method`` ("extension.methods, rope.compare_methods"), or None."""
    keys = [key for key, methods in _method_lists(config).items() if method in methods]
    return ", ".join(keys) or None


@check(
    "rope.threshold / rope.interpolated_dims",
    "both set at once; interpolated_dims odd, negative or above the head dimension (per target in the "
    "mapping form); a mapping without an entry for a target DPRoPE is solved at",
)
def _selection(config: dict) -> Iterator[str]:
    rope = config["rope"]
    dims = rope["interpolated_dims"]
    if (
        rope["threshold"] is not None
        and dims is not None
        and _uses(config, "dprope")
        and not _uses(config, "dprope_threshold")
    ):
        yield (
            "rope.threshold and rope.interpolated_dims are both set: they are two ways of choosing the pairs "
            "DPRoPE interpolates (by disturbance gap, or by count); give one of them, or list dprope_threshold "
            "beside dprope (it takes the threshold, dprope the count)"
        )
    if dims is None:
        return
    head = head_dim(config)

    def bad(key, n):
        if isinstance(n, bool) or not isinstance(n, int) or n % 2 or not 0 <= n <= head:
            return (
                f"{key}: {n!r} must be an even number of dimensions (two per rotary pair) between 0 and the "
                f"head dimension {head} (model.architecture hidden_size / num_attention_heads)"
            )
        return None

    if not isinstance(dims, dict):
        problem = bad("rope.interpolated_dims", dims)
        if problem:
            yield problem
        return
    covered = set()
    for key, n in dims.items():
        try:
            covered.add(int(key))
        except (TypeError, ValueError):
            yield f"rope.interpolated_dims: {key!r} is not a target length (expected an integer key)"
            continue
        problem = bad(f"rope.interpolated_dims.{key}", n)
        if problem:
            yield problem
    missing = [t for t in config["extension"]["target_lengths"] if t not in covered]
    if missing and _uses(config, "dprope"):
        yield (
            f"rope.interpolated_dims: no entry for target length {', '.join(map(str, missing))} "
            f"(extension.target_lengths), where dprope is solved ({_uses(config, 'dprope')}); add one per "
            "target, or give one integer"
        )


@check(
    "rope methods",
    "base_change without a valid rope.new_rope_theta, longrope without rope.factors_file, "
    "llama3 factors out of order, a DPRoPE grid candidate below 2, a geometry the solver refuses",
)
def _methods(config: dict) -> Iterator[str]:
    rope = config["rope"]
    where = _uses(config, "base_change")
    if where:
        new = rope["new_rope_theta"]
        if new is None:
            yield (
                f"rope.new_rope_theta: required by base_change ({where}): the new RoPE base, written as a "
                "number, e.g. 5.0e+6"
            )
        elif not (math.isfinite(new) and new > 1):
            yield f"rope.new_rope_theta: {new!r} must be a finite number > 1 (base_change, {where})"
    where = _uses(config, "longrope")
    if where and not rope["factors_file"]:
        yield f"rope.factors_file: required by longrope ({where}): a CSV of one factor per rotary pair"
    where = _uses(config, "llama3")
    low, high = rope["llama3"]["low_freq_factor"], rope["llama3"]["high_freq_factor"]
    if where and not high > low:
        yield (
            f"rope.llama3.high_freq_factor: {high} must be greater than rope.llama3.low_freq_factor {low} "
            f"(llama3, {where})"
        )
    if _uses(config, "dprope"):
        for name in rope["candidates"] or ():
            if name.startswith("grid:") and int(name.split(":", 1)[1]) < 2:
                yield f"rope.candidates: {name!r} must be grid:K with K >= 2"
    arch, train = config["model"]["architecture"], config["model"]["train_length"]
    for target in config["extension"]["target_lengths"]:
        try:
            make_geometry(arch["rope_theta"], head_dim(config), train, target, warn=False)
        except RopeextError as exc:
            yield f"extension.target_lengths: {target}: {exc}"


@check(
    "rope.factors_file",
    "a longrope factors file that is missing, unparsable or has the wrong count or a "
    "factor <= 0 (read with the solver's own parser)",
    paths=True,
)
def _factors(config: dict) -> Iterator[str]:
    path = config["rope"]["factors_file"]
    if not (path and _uses(config, "longrope")):
        return
    if not Path(path).is_file():
        yield f"rope.factors_file: file not found: {path} (longrope, {_uses(config, 'longrope')})"
        return
    arch, train = config["model"]["architecture"], config["model"]["train_length"]
    geometry = Geometry(arch["rope_theta"], head_dim(config), train, max(config["extension"]["target_lengths"]))
    try:
        check_factors(read_factors_file(path), geometry, source=str(path))
    except RopeextError as exc:
        yield f"rope.factors_file: {str(exc).replace('--factors-file ', '')}"
