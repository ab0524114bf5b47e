"""ropeext extend: a base model with a RoPE extension applied and no training (a "noft" variant)."""

from __future__ import annotations

from ropeext.commands._common import add_tracking_args
from ropeext.io import read_json

COMMAND = ("extend",)
HELP = "write a base model with a scaling.json's rope_parameters applied (no fine-tuning; weights linked, not copied)"


def add_arguments(parser) -> None:
    parser.add_argument("--base", required=True, help="base model: HF directory or hub id")
    parser.add_argument("--scaling", required=True, help="scaling.json from `ropeext solve`")
    parser.add_argument("--output", required=True, metavar="DIR", help="model directory to write")
    add_tracking_args(parser)


def run(args) -> None:
    from ropeext import tracking
    from ropeext.modeling import write_variant

    scaling = read_json(args.scaling, "scaling file")
    with tracking.stage_run("extend", params={"base": args.base, "scaling": args.scaling, "method": scaling["method"],
                                              "rope_parameters": scaling["rope_parameters"]},
                            variant=args.variant, enabled=not args.no_mlflow) as run_:
        written = write_variant(args.base, scaling, args.output, info={"steps": 0})
        run_.log_artifact(f"{args.output}/config.json")
        run_.log_artifact(f"{args.output}/variant_manifest.json")
    links = ", ".join(sorted(set(written["weights"].values())))
    print(f"extend: {scaling['method']} applied to {args.base} -> {args.output} (weights: {links})")
