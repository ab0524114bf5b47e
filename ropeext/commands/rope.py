"""ropeext rope: the workflow's RoPE job for one target length: angle histograms, every method's
scaling.json and the method comparison, from the resolved config."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.commands._rope import (
    config_settings,
    show_warnings,
    solve_methods,
    stage_run,
    write_angles,
    write_compare,
    write_scaling,
)
from ropeext.config import scaling_methods

COMMAND = ("rope",)
HELP = (
    "one target length's RoPE geometry from the config: angle histograms, scaling/<method>-<L'>.json of "
    "extension.methods and rope.compare_methods, and the comparison"
)


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument("--target-length", required=True, type=int, metavar="L2", help="target length L'")
    parser.add_argument(
        "--output-dir",
        required=True,
        help="folder of angles-L2/, scaling/ and compare-L2/ (the workflow's results/rope)",
    )
    add_tracking_args(parser)


def run(args) -> int:
    show_warnings()
    config = config_from_args(args)
    s = config_settings(config, args.target_length)
    compared, pictured = s["compare_methods"], s["angles_methods"]
    rows, solutions = solve_methods(s, list(dict.fromkeys(compared + pictured + scaling_methods(config))))
    out, target = Path(args.output_dir), args.target_length
    with stage_run("rope", args, config, s) as run_:
        for method in scaling_methods(config):
            write_scaling(out / "scaling" / f"{method}-{target}.json", solutions[method], run_)
        write_angles(
            out / f"angles-{target}" / "histograms.npz",
            out / f"angles-{target}" / "heatmap.png",
            s,
            {m: solutions[m] for m in pictured},
            run_,
        )
        write_compare(
            out / f"compare-{target}" / "table.csv", s, rows[: len(compared)], {m: solutions[m] for m in compared}, run_
        )
    return 0
