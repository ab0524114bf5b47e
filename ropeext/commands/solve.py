"""ropeext solve: per-pair RoPE factors, frequencies and disturbance of one method -> scaling.json."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.io import write_json

COMMAND = ("solve",)
HELP = "solve one RoPE scaling method at a geometry and write scaling.json (factors, inv_freq, rope_parameters)"


def add_geometry_args(parser, *, selection: bool = True) -> None:
    """Geometry, histogram and method options shared by solve, compare and angles."""
    g = parser.add_argument_group("geometry")
    g.add_argument("--rope-theta", required=True, type=float, metavar="B", help="RoPE base of the model")
    g.add_argument("--head-dim", required=True, type=int, metavar="d", help="attention head dimension (even)")
    g.add_argument("--train-length", required=True, type=int, metavar="L", help="pre-training length")
    g.add_argument("--target-length", required=True, type=int, metavar="L2", help="target length L' > L")
    h = parser.add_argument_group("angle histograms")
    h.add_argument("--bins", type=int, default=360, help="histogram bins over [0, 2*pi) (default 360)")
    h.add_argument("--kl-direction", choices=("code", "paper"), default="code",
                   help="code: KL(pre-training || extended) as the authors' code (default); paper: reversed")
    h.add_argument("--angle-dtype", choices=("float32", "float64"), default="float32",
                   help="precision of the angle arithmetic (default float32, as the authors' code)")
    m = parser.add_argument_group("method options")
    if selection:
        m.add_argument("--threshold", type=float, default=None,
                       help="dprope: interpolate a pair iff its gap D(extrapolate) - D(interpolate) > t (default 0)")
        m.add_argument("--interpolated-dims", type=int, default=None, metavar="n",
                       help="dprope: interpolate the n/2 pairs with the largest gaps (n counts dimensions)")
        m.add_argument("--candidates", default=None,
                       help="dprope: comma list of candidates (extrapolate, interpolate, ntk, yarn, llama3, "
                            "dynamic_ntk, grid:K); default extrapolate,interpolate")
    m.add_argument("--factors-file", default=None, metavar="CSV",
                   help="longrope: one factor per rotary pair (one column, or one row)")
    m.add_argument("--new-rope-theta", type=float, default=None, help="base_change: the new RoPE base")
    m.add_argument("--beta-fast", type=float, default=None, help="yarn: beta_fast (default 32)")
    m.add_argument("--beta-slow", type=float, default=None, help="yarn: beta_slow (default 1)")
    m.add_argument("--yarn-no-truncate", action="store_true",
                   help="yarn: do not round the correction range to whole pairs (transformers' truncate=False)")
    m.add_argument("--low-freq-factor", type=float, default=None, help="llama3: low_freq_factor (default 1)")
    m.add_argument("--high-freq-factor", type=float, default=None, help="llama3: high_freq_factor (default 4)")


def geometry_kwargs(args) -> dict:
    return {"rope_theta": args.rope_theta, "head_dim": args.head_dim, "train_length": args.train_length,
            "target_length": args.target_length, "bins": args.bins, "kl_direction": args.kl_direction,
            "angle_dtype": args.angle_dtype}


def compare_from_args(args):
    """(rows, solutions) of `compare_solutions` for the methods and options on the command line."""
    from ropeext.rope.methods import METHOD_OPTIONS
    from ropeext.rope.solve import compare_solutions

    kwargs = method_kwargs(args)
    allowed = {k for opts in METHOD_OPTIONS.values() for k in opts}
    options = {k: v for k, v in kwargs.items() if k in allowed}
    return compare_solutions(args.methods, **geometry_kwargs(args), threshold=kwargs.get("threshold"),
                             interpolated_dims=kwargs.get("interpolated_dims"), factors=kwargs.get("factors"),
                             **options)


def method_kwargs(args) -> dict:
    """Selection settings, factors and method options present on the command line."""
    from ropeext.rope.methods import read_factors_file

    out = {"threshold": getattr(args, "threshold", None),
           "interpolated_dims": getattr(args, "interpolated_dims", None)}
    if args.factors_file:
        out["factors"] = read_factors_file(args.factors_file)
    options = {"candidates": getattr(args, "candidates", None), "new_rope_theta": args.new_rope_theta,
               "beta_fast": args.beta_fast, "beta_slow": args.beta_slow,
               "truncate": False if args.yarn_no_truncate else None,
               "low_freq_factor": args.low_freq_factor, "high_freq_factor": args.high_freq_factor}
    out.update({k: v for k, v in options.items() if v is not None})
    return out


def options_for(method: str, options: dict) -> dict:
    """The method options that ``method`` takes (the others on the command line belong to other methods)."""
    from ropeext.rope.methods import METHOD_OPTIONS

    return {k: v for k, v in options.items() if k in METHOD_OPTIONS[method]}


def run_params(args, **extra) -> dict:
    params = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("no_mlflow", "config")}
    params.update(extra)
    return params


def add_arguments(parser) -> None:
    add_geometry_args(parser)
    parser.add_argument("--method", required=True,
                        help="none, pi, ntk, dynamic_ntk, yarn, llama3, base_change, longrope or dprope")
    parser.add_argument("--output", required=True, metavar="JSON", help="scaling.json to write")
    add_config_args(parser, required=False)
    add_tracking_args(parser)


def _show_warnings():
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def run(args) -> int:
    from ropeext import tracking
    from ropeext.rope.methods import check_method
    from ropeext.rope.solve import solve

    _show_warnings()
    check_method(args.method)
    kwargs = method_kwargs(args)
    result = solve(args.method, **geometry_kwargs(args), threshold=kwargs.pop("threshold"),
                   interpolated_dims=kwargs.pop("interpolated_dims"), factors=kwargs.pop("factors", None),
                   **options_for(args.method, kwargs))
    config = config_from_args(args)
    with tracking.stage_run("solve", config=config, params=run_params(args), variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        path = write_json(args.output, result)
        run_.log_metrics({"disturbance": result["disturbance"], "interpolated_dims": result["interpolated_dims"],
                          "fully_interpolated_dims": result["fully_interpolated_dims"]})
        run_.log_outputs(path)
    print(f"{args.method}: disturbance {result['disturbance']:.6g} "
          f"({result['interpolated_dims']} dims interpolated) -> {Path(args.output)}")
    return 0


def atomic_path(path: Path) -> Path:
    """A temporary sibling of ``path`` to write to before renaming."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
