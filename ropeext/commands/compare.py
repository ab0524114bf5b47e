"""ropeext compare: disturbance of several RoPE methods at one geometry -> table.csv and plots."""

from __future__ import annotations

from ropeext.commands._common import config_from_args
from ropeext.commands._rope import (
    DETAILS_JSON,
    HISTOGRAMS_PNG,
    PER_PAIR_PNG,
    add_methods_arg,
    add_rope_args,
    method_list,
    rope_settings,
    show_warnings,
    solve_methods,
    stage_run,
    write_compare,
)

COMMAND = ("compare",)
HELP = "compare RoPE methods at one geometry: table.csv, per-pair disturbance and angle histogram plots"


def add_arguments(parser) -> None:
    add_methods_arg(parser, "compare_methods")
    parser.add_argument(
        "--output",
        required=True,
        metavar="CSV",
        help=f"table.csv to write; {PER_PAIR_PNG}, {HISTOGRAMS_PNG} and {DETAILS_JSON} go beside it",
    )
    add_rope_args(parser)


def run(args) -> int:
    show_warnings()
    config = config_from_args(args)
    s = rope_settings(args, config)
    methods = method_list(args.methods, s["compare_methods"])
    rows, solutions = solve_methods(s, methods)
    with stage_run("compare", args, config, s, methods=methods) as run_:
        write_compare(args.output, s, rows, solutions, run_)
    return 0
