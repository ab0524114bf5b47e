"""ropeext solve: per-pair RoPE factors, frequencies and disturbance of one method -> scaling.json."""

from __future__ import annotations

from ropeext.commands._common import config_from_args
from ropeext.commands._rope import add_rope_args, rope_settings, show_warnings, solve_methods, stage_run, write_scaling
from ropeext.rope.registry import METHODS
from ropeext.rope.solve import check_method

COMMAND = ("solve",)
HELP = "solve one RoPE scaling method at a geometry and write scaling.json (factors, inv_freq, rope_parameters)"


def add_arguments(parser) -> None:
    parser.add_argument("--method", required=True, help=", ".join(METHODS))
    parser.add_argument("--output", required=True, metavar="JSON", help="scaling.json to write")
    add_rope_args(parser)


def run(args) -> int:
    show_warnings()
    check_method(args.method)
    config = config_from_args(args)
    s = rope_settings(args, config)
    result = solve_methods(s, [args.method])[1][args.method]
    with stage_run("solve", args, config, s, method=args.method) as run_:
        path = write_scaling(args.output, result, run_)
        run_.log_metrics(
            {
                "disturbance": result["disturbance"],
                "interpolated_dims": result["interpolated_dims"],
                "fully_interpolated_dims": result["fully_interpolated_dims"],
            }
        )
    print(
        f"{args.method}: disturbance {result['disturbance']:.6g} "
        f"({result['interpolated_dims']} dims interpolated) -> {path}"
    )
    return 0
