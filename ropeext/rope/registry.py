"""The RoPE scaling methods: one entry each, the one place a method is added.

An entry names the method's function (``function(ws, **options) -> MethodFrequencies``, see
``ropeext.rope.methods``), the keys of the config's ``rope`` section it takes as options (dotted for
nested keys; the function gets each under its last part; their defaults live in the schema's ``rope``
section), and one line of description. The schema's method enum, the CLI's ``--method`` choices,
the workflow's ``method`` wildcard and the report read this table. docs/adding-a-rope-method.md is
the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ropeext.rope import dprope, methods


@dataclass(frozen=True)
class Method:
    function: Callable
    description: str
    options: tuple[str, ...] = ()
    ours: bool = False  # one of this project's DPRoPE selections (the report sets them against the others)


METHODS: dict[str, Method] = {
    "none": Method(methods.none, "no scaling: the pre-training frequencies run at the target length"),
    "pi": Method(methods.pi, "position interpolation: every frequency divided by the scale s"),
    "ntk": Method(methods.ntk, "NTK-aware base change B' = B s^(d/(d-2)), as per-pair factors"),
    "dynamic_ntk": Method(methods.dynamic_ntk, "transformers' dynamic NTK, evaluated at the target length"),
    "yarn": Method(
        methods.yarn,
        "YaRN: NTK-by-parts ramp between beta_fast and beta_slow rotations",
        ("yarn.beta_fast", "yarn.beta_slow", "yarn.truncate"),
    ),
    "llama3": Method(
        methods.llama3, "Llama 3 frequency-band scaling", ("llama3.low_freq_factor", "llama3.high_freq_factor")
    ),
    "base_change": Method(methods.base_change, "a new RoPE base (rope.new_rope_theta)", ("new_rope_theta",)),
    "longrope": Method(methods.longrope, "per-pair factors read from rope.factors_file", ("factors_file",)),
    "dprope": Method(
        dprope.dprope,
        "DPRoPE: per pair, the candidate whose angles stay closest to pre-training "
        "(by rope.interpolated_dims when set, else rope.threshold)",
        ("threshold", "interpolated_dims", "candidates"),
        ours=True,
    ),
    "dprope_threshold": Method(
        dprope.dprope_threshold, "DPRoPE by rope.threshold, whatever the count", ("threshold", "candidates"), ours=True
    ),
}
