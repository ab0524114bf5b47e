"""ropeext extend: a base model with a RoPE extension applied and no training (a "noft" variant), one
per scaling file."""

from __future__ import annotations

from pathlib import Path

from ropeext import tracking
from ropeext.commands._common import add_tracking_args
from ropeext.errors import RopeextError
from ropeext.io import read_json
from ropeext.modeling import write_variant

COMMAND = ("extend",)
HELP = (
    "write a base model with each scaling.json's rope_parameters applied (no fine-tuning; weights linked, not copied)"
)


def add_arguments(parser) -> None:
    parser.add_argument("--base", required=True, help="base model: HF directory or hub id")
    parser.add_argument("--scaling", required=True, nargs="+", help="scaling.json file(s) from `ropeext solve`")
    parser.add_argument(
        "--output",
        required=True,
        nargs="+",
        metavar="DIR",
        help="model directory to write for each --scaling file, in the same order",
    )
    add_tracking_args(parser)


def run(args) -> None:
    if len(args.output) != len(args.scaling):
        raise RopeextError(
            f"--output: {len(args.output)} folder(s) for {len(args.scaling)} --scaling file(s) "
            "(expected one folder per scaling file, in the same order)"
        )
    scalings = [read_json(path, "scaling file") for path in args.scaling]
    params = {
        "base": args.base,
        **{
            Path(out).name: {"scaling": path, "rope_parameters": s.get("rope_parameters")}
            for path, out, s in zip(args.scaling, args.output, scalings)
        },
    }
    with tracking.stage_run("extend", params=params, variant=args.variant, enabled=not args.no_mlflow) as run_:
        for scaling, output in zip(scalings, args.output):
            written = write_variant(args.base, scaling, output, info={"steps": 0})
            for name in ("config.json", "variant_manifest.json"):
                run_.log_artifact(f"{output}/{name}", Path(output).name)
            run_.log_model(output, name=Path(output).name, stage="extend", base=args.base)  # the Models tab
            links = ", ".join(sorted(set(written["weights"].values())))
            print(f"extend: {scaling['method']} applied to {args.base} -> {output} (weights: {links})")
