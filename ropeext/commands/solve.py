"""ropeext solve: per-pair RoPE factors, frequencies and disturbance of one method -> scaling.json."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import config_from_args
from ropeext.commands._rope import add_rope_args, geometry_kwargs, method_options, rope_settings, run_params, show_warnings
from ropeext.io import write_json

COMMAND = ("solve",)
HELP = "solve one RoPE scaling method at a geometry and write scaling.json (factors, inv_freq, rope_parameters)"


def add_arguments(parser) -> None:
    parser.add_argument("--method", required=True,
                        help="none, pi, ntk, dynamic_ntk, yarn, llama3, base_change, longrope or dprope")
    parser.add_argument("--output", required=True, metavar="JSON", help="scaling.json to write")
    add_rope_args(parser)


def run(args) -> int:
    from ropeext import tracking
    from ropeext.rope.methods import METHOD_OPTIONS, check_method
    from ropeext.rope.solve import solve

    show_warnings()
    check_method(args.method)
    config = config_from_args(args)
    s = rope_settings(args, config)
    kwargs = method_options(s, [args.method])
    options = {k: v for k, v in kwargs.items() if k in METHOD_OPTIONS[args.method]}
    result = solve(args.method, **geometry_kwargs(s), threshold=kwargs["threshold"],
                   interpolated_dims=kwargs["interpolated_dims"], factors=kwargs["factors"], **options)
    with tracking.stage_run("solve", config=config, params=run_params(s, method=args.method), variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        path = write_json(args.output, result)
        run_.log_metrics({"disturbance": result["disturbance"], "interpolated_dims": result["interpolated_dims"],
                          "fully_interpolated_dims": result["fully_interpolated_dims"]})
        run_.log_outputs(path)
    print(f"{args.method}: disturbance {result['disturbance']:.6g} "
          f"({result['interpolated_dims']} dims interpolated) -> {Path(args.output)}")
    return 0
