"""ropeext report: gather every stage's results into results/report (markdown, CSV, PNG)."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args

COMMAND = ("report",)
HELP = "write the report: tables in the papers' shape (variants as rows), CSV and plots"


def add_arguments(parser) -> None:
    add_config_args(parser)
    for name, what in (("ppl", "`ropeext eval ppl` metrics.json"), ("passkey", "`ropeext eval passkey` metrics.json"),
                       ("longbench", "`ropeext eval longbench` metrics.json"),
                       ("openllm", "`ropeext eval openllm` metrics.json"), ("ruler", "`ropeext eval ruler` metrics.json"),
                       ("bf16", "`ropeext analyze bf16` bf16_deviation.json"), ("compare", "`ropeext compare` table.csv"),
                       ("angles", "`ropeext angles` heat-map PNGs")):
        parser.add_argument(f"--{name}", nargs="*", default=[], help=f"files of {what}")
    parser.add_argument("--base-model", metavar="JSON",
                        help="the base model's import_manifest.json (`ropeext import-model`) or, pre-trained here, its "
                             "training_summary.json: the report names the model by its source")
    parser.add_argument("--training", nargs="*", default=[], metavar="JSON",
                        help="training_summary.json of each fine-tuned variant, in its model directory (named by the "
                             "variant): the report states each one's fine-tuning")
    parser.add_argument("--references",
                        help="published values to show beside ours (default: report.references; null = the "
                             "repository's config/reference_values.yaml)")
    parser.add_argument("--output-dir", required=True)
    add_tracking_args(parser)


def run(args) -> None:
    from ropeext import tracking
    from ropeext.report.summary import REPOSITORY_REFERENCES, build_report

    config = config_from_args(args)
    out = Path(args.output_dir)
    inputs = {k: getattr(args, k) for k in ("ppl", "passkey", "longbench", "openllm", "ruler", "bf16", "compare", "angles")}
    inputs["base_model"] = args.base_model
    inputs["training"] = args.training
    inputs["references"] = args.references or config["report"]["references"] or str(REPOSITORY_REFERENCES)
    with tracking.stage_run("report", config=config, params={k: len(v) for k, v in inputs.items() if isinstance(v, list)},
                            variant=args.variant, enabled=not args.no_mlflow) as run_:
        written = build_report(config, inputs, out)
        run_.log_outputs(out)
    print(f"report: {len(written)} files in {out}; start with {out / 'summary.md'}")
