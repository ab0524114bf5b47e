"""ropeext corpus: read the configured document source and write the train/validation/test splits."""

from __future__ import annotations

from pathlib import Path

from ropeext import tracking
from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.data.corpus import write_splits
from ropeext.io import write_json

COMMAND = ("corpus",)
HELP = "read documents (stdlib, text, jsonl, parquet, HF dataset) and write deterministic splits"


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument(
        "--output-dir",
        required=True,
        help="folder for {train,validation,test}.parquet (or their corpus.shards shard files) + manifest.json",
    )
    add_tracking_args(parser)


def run(args) -> None:
    config = config_from_args(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tracking.stage_run(
        "corpus", config=config, params={"corpus": config["corpus"]}, variant=args.variant, enabled=not args.no_mlflow
    ) as run_:
        manifest = write_splits(config["corpus"], out)
        write_json(out / "manifest.json", manifest)
        run_.set_tags(
            {
                "corpus.fingerprint": manifest["file_list_sha256"][:16],
                "corpus.python_version": manifest["python_version"],
            }
        )
        run_.log_metrics(
            {f"documents.{s}": n for s, n in manifest["documents"].items()}
            | {f"characters.{s}": n for s, n in manifest["characters"].items()}
            | {"skipped": manifest["skipped"]["count"]}
        )
        run_.log_outputs(out / "manifest.json")
    print(f"corpus: {manifest['documents']} documents -> {out}")
