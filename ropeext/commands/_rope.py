"""Options the RoPE commands (solve, compare, angles) share, resolved against the config's ``rope`` section."""

from __future__ import annotations

import sys
import warnings

from ropeext.commands._common import add_config_args, add_tracking_args, overlay, parse_list
from ropeext.errors import RopeextError

SECTION = "rope"  # the config section the options below are laid over
OPTIONS = {"bins": "bins", "kl_direction": "kl_direction", "angle_dtype": "angle_dtype", "candidates": "candidates",
           "factors_file": "factors_file", "new_rope_theta": "new_rope_theta", "beta_fast": "yarn.beta_fast",
           "beta_slow": "yarn.beta_slow", "low_freq_factor": "llama3.low_freq_factor",
           "high_freq_factor": "llama3.high_freq_factor"}
LISTS = {"candidates": str}


def add_rope_args(parser, *, selection: bool = True) -> None:
    """Geometry, histogram and method options; the config's ``rope`` section supplies what is left out."""
    g = parser.add_argument_group("geometry")
    g.add_argument("--rope-theta", required=True, type=float, metavar="B", help="RoPE base of the model")
    g.add_argument("--head-dim", required=True, type=int, metavar="d", help="attention head dimension (even)")
    g.add_argument("--train-length", required=True, type=int, metavar="L", help="pre-training length")
    g.add_argument("--target-length", required=True, type=int, metavar="L2", help="target length L' > L")
    h = parser.add_argument_group("angle histograms")
    h.add_argument("--bins", type=int, help="histogram bins over [0, 2*pi) (default: rope.bins)")
    h.add_argument("--kl-direction", choices=("code", "paper"),
                   help="code: KL(pre-training || extended) as the authors' code; paper: reversed "
                        "(default: rope.kl_direction)")
    h.add_argument("--angle-dtype", choices=("float32", "float64"),
                   help="precision of the angle arithmetic; float32 as the authors' code (default: rope.angle_dtype)")
    m = parser.add_argument_group("method options")
    if selection:
        m.add_argument("--threshold", type=float,
                       help="dprope: interpolate a pair iff its gap D(extrapolate) - D(interpolate) > t "
                            "(default: rope.threshold)")
        m.add_argument("--interpolated-dims", type=int, metavar="n",
                       help="dprope: interpolate the n/2 pairs with the largest gaps (n counts dimensions; "
                            "default: rope.interpolated_dims)")
        m.add_argument("--candidates",
                       help="dprope: comma list of candidates (extrapolate, interpolate, ntk, yarn, llama3, "
                            "dynamic_ntk, grid:K); default: rope.candidates")
    m.add_argument("--factors-file", metavar="CSV", help="longrope: one factor per rotary pair (one column, or one row)")
    m.add_argument("--new-rope-theta", type=float, help="base_change: the new RoPE base")
    m.add_argument("--beta-fast", type=float, help="yarn: beta_fast (default: rope.yarn.beta_fast)")
    m.add_argument("--beta-slow", type=float, help="yarn: beta_slow (default: rope.yarn.beta_slow)")
    m.add_argument("--yarn-no-truncate", action="store_true",
                   help="yarn: do not round the correction range to whole pairs (transformers' truncate=False)")
    m.add_argument("--low-freq-factor", type=float, help="llama3: low_freq_factor (default: rope.llama3.low_freq_factor)")
    m.add_argument("--high-freq-factor", type=float,
                   help="llama3: high_freq_factor (default: rope.llama3.high_freq_factor)")
    add_config_args(parser, required=False)
    add_tracking_args(parser)


def rope_settings(args, config: dict) -> dict:
    """The ``rope`` section with the command line laid over it, plus the geometry and the dprope selection.

    A selection on the command line (``--threshold`` or ``--interpolated-dims``) replaces the config's;
    a mapping ``rope.interpolated_dims`` is looked up at the target length.
    """
    s = overlay(config, SECTION, args, OPTIONS, lists=LISTS)
    if args.yarn_no_truncate:
        s["yarn"]["truncate"] = False
    threshold, dims = getattr(args, "threshold", None), getattr(args, "interpolated_dims", None)
    if threshold is None and dims is None:  # the config's; both set is for dprope_threshold beside dprope
        threshold, dims = s["threshold"], s["interpolated_dims"]
        if isinstance(dims, dict):
            dims = dims.get(str(args.target_length), dims.get(args.target_length))
    s["threshold"], s["interpolated_dims"] = threshold, dims
    s.update(rope_theta=args.rope_theta, head_dim=args.head_dim, train_length=args.train_length,
             target_length=args.target_length)
    return s


def geometry_kwargs(s: dict) -> dict:
    return {k: s[k] for k in ("rope_theta", "head_dim", "train_length", "target_length", "bins", "kl_direction",
                              "angle_dtype")}


def method_options(s: dict, methods) -> dict:
    """Selection, factors and every method's options for solving ``methods``; factors are read only for longrope."""
    from ropeext.rope.methods import read_factors_file

    options = {"candidates": s["candidates"], "new_rope_theta": s["new_rope_theta"], **s["yarn"], **s["llama3"]}
    out = {"threshold": s["threshold"], "interpolated_dims": s["interpolated_dims"],
           "factors": read_factors_file(s["factors_file"]) if s["factors_file"] and "longrope" in methods else None}
    out.update({k: v for k, v in options.items() if v is not None})
    return out


def compare_methods(s: dict, methods: list[str]):
    """(rows, solutions) of ``compare_solutions`` for ``methods`` with the resolved rope settings ``s``."""
    from ropeext.rope.solve import compare_solutions

    return compare_solutions(methods, **geometry_kwargs(s), **method_options(s, methods))


def method_list(text: str | None, default: list[str]) -> list[str]:
    return default if text is None else parse_list(text, "--methods", str)


def run_params(s: dict, **extra) -> dict:
    return {**{k: v for k, v in s.items() if k not in ("compare_methods", "angles_methods")}, **extra}


def show_warnings() -> None:
    """Print library warnings as one ``warning:`` line each (no file and line of the library)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
