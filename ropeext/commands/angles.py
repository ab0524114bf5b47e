"""ropeext angles: per-pair rotary angle histograms (.npz) and a heat map (pairs x bins)."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import config_from_args
from ropeext.commands._rope import (
    add_methods_arg,
    add_rope_args,
    method_list,
    rope_settings,
    show_warnings,
    solve_methods,
    stage_run,
    write_angles,
)
from ropeext.errors import RopeextError

COMMAND = ("angles",)
HELP = "rotary angle histograms per pair: pre-training and each method at the target length (.npz + heat map)"


def add_arguments(parser) -> None:
    add_methods_arg(parser, "angles_methods")
    parser.add_argument("--output", required=True, metavar="NPZ", help="histograms file (.npz) to write")
    parser.add_argument(
        "--plot", default=None, metavar="PNG", help="heat map to write (default: the --output path with .png)"
    )
    add_rope_args(parser)


def run(args) -> int:
    show_warnings()
    out = Path(args.output)
    if out.suffix != ".npz":
        raise RopeextError(f"--output must end in .npz, got {out}")
    config = config_from_args(args)
    s = rope_settings(args, config)
    methods = method_list(args.methods, s["angles_methods"])
    _, solutions = solve_methods(s, methods)
    with stage_run("angles", args, config, s, methods=methods) as run_:
        write_angles(out, Path(args.plot) if args.plot else out.with_suffix(".png"), s, solutions, run_)
    return 0
