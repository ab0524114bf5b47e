"""ropeext report: gather every stage's results into results/report (markdown, CSV, PNG)."""

from __future__ import annotations

import os
from pathlib import Path

from ropeext import job_warnings, tracking
from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.report.references import REPOSITORY_REFERENCES
from ropeext.suites import SUITES

COMMAND = ("report",)
HELP = "write the report: tables in the papers' shape (variants as rows), CSV and plots"


def add_arguments(parser) -> None:
    add_config_args(parser)
    for suite in SUITES:
        parser.add_argument(
            f"--{suite.name}",
            nargs="*",
            default=[],
            metavar="JSON",
            help=f"{suite.metrics} files of the {suite.name} suite (rule {suite.rule})",
        )
    parser.add_argument("--compare", nargs="*", default=[], help="table.csv files of `ropeext compare`")
    parser.add_argument("--angles", nargs="*", default=[], help="heat-map PNGs of `ropeext angles`")
    parser.add_argument(
        "--base-model",
        metavar="JSON",
        help="the base model's import_manifest.json (`ropeext import-model`) or, pre-trained here, its "
        "training_summary.json: the report names the model by its source",
    )
    parser.add_argument(
        "--training",
        nargs="*",
        default=[],
        metavar="JSON",
        help="training_summary.json of each fine-tuned variant, in its model directory (named by the "
        "variant): the report states each one's fine-tuning",
    )
    parser.add_argument(
        "--references",
        help="published values to show beside ours (default: report.references; null = the "
        "repository's config/reference_values.yaml)",
    )
    parser.add_argument(
        "--warnings",
        metavar="FOLDER",
        help="the jobs' warning records (default: $ROPEEXT_WARNINGS_DIR, which the workflow sets to "
        "<results_dir>/warnings): listed in the report's Warnings section",
    )
    parser.add_argument("--output-dir", required=True)
    add_tracking_args(parser)


def run(args) -> None:
    # heavy: ropeext.report.summary imports pandas at its top (through ropeext.report.document), and --help
    # imports every command
    from ropeext.report.summary import build_report

    config = config_from_args(args)
    out = Path(args.output_dir)
    inputs = {k: getattr(args, k) for k in [s.name for s in SUITES] + ["compare", "angles"]}
    inputs["base_model"] = args.base_model
    inputs["training"] = args.training
    inputs["references"] = args.references or config["report"]["references"] or str(REPOSITORY_REFERENCES)
    inputs["warnings"] = args.warnings or os.environ.get(job_warnings.DIR_ENV)
    with tracking.stage_run(
        "report",
        config=config,
        params={k: len(v) for k, v in inputs.items() if isinstance(v, list)},
        variant=args.variant,
        enabled=not args.no_mlflow,
    ) as run_:
        written = build_report(config, inputs, out)
        run_.log_outputs(out)
    print(f"report: {len(written)} files in {out}; start with {out / 'summary.md'}")
