"""ropeext eval longbench: LongBench / LongBench-E with the benchmark's protocol and metrics.

Two modes:

- evaluate (default): ``--model DIR --data DATA --output-dir OUT`` writes
  ``OUT/predictions/<task>.jsonl`` (resumable), ``OUT/metrics.json``, ``OUT/longbench.png``.
- ``--build-embedded``: ``--output-dir DATA`` gets ``heldout_lcc_e.jsonl`` + ``buckets.json``,
  built from ``--tokens test.parquet --tokenizer DIR`` or ``--source-dir DIR`` of .py files.
"""

from __future__ import annotations

from ropeext.commands._common import (
    add_config_args,
    add_run_args,
    add_tracking_args,
    config_from_args,
    overlay,
    precision_of,
    seed_of,
    variant_of,
)
from ropeext.errors import RopeextError
from ropeext.eval.lmeval_engine import longbench
from ropeext.eval.longbench.run import build_embedded, embedded_windows, evaluate
from ropeext.runtime import resolve_device

COMMAND = ("eval", "longbench")
HELP = "LongBench / LongBench-E (official protocol and metrics) or build the embedded code-completion task"

SECTION = "eval.longbench"  # the config section the options below are laid over
OPTIONS = {
    "engine": "engine",
    "data": "data_dir",
    "prompts": "prompts_dir",
    "benchmark": "benchmark",
    "tasks": "tasks",
    "limit": "limit",
    "max_input_length": "max_input_length",
    "chat_template": "chat_template",
    "bos": "bos",
    "on_bad_line": "on_bad_line",
    "embedded_max_new_tokens": "embedded_max_new_tokens",
    "windows": "embedded.windows",
    "margin": "embedded.margin",
    "bucket_edges": "embedded.bucket_edges",
    "per_bucket": "embedded.per_bucket",
    "task_name": "embedded.task",
}
LISTS = {"tasks": str, "windows": int, "bucket_edges": int}


def add_arguments(parser) -> None:
    add_config_args(parser, required=False)
    parser.add_argument(
        "--output-dir",
        required=True,
        help="evaluation: folder for predictions/, metrics.json, longbench.png; "
        "--build-embedded: the task folder to write",
    )
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--model", help="model directory (or hub id) to evaluate")
    ev.add_argument(
        "--engine",
        choices=["ropeext", "lm_eval"],
        help="ropeext (this project's protocol on --data) or lm_eval (lm-eval's own LongBench tasks on "
        "their hub dataset; --data and --prompts do not apply); default: eval.longbench.engine",
    )
    ev.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer directory (default: the model's; with --build-embedded: the tokenizer of --tokens)",
    )
    ev.add_argument(
        "--data",
        help="folder of <task>.jsonl / <task>_e.jsonl, the benchmark's "
        "data.zip, or hf:THUDM/LongBench (default: eval.longbench.data_dir)",
    )
    ev.add_argument(
        "--prompts",
        help="the official repository's config/ folder with dataset2prompt.json and "
        "dataset2maxlen.json (default: eval.longbench.prompts_dir; the benchmark's tasks need it)",
    )
    ev.add_argument(
        "--benchmark",
        choices=["longbench-e", "longbench"],
        help="read the _e files and score by length bucket, or LongBench v1 (default: eval.longbench.benchmark)",
    )
    ev.add_argument(
        "--tasks",
        help="comma-separated tasks (default: eval.longbench.tasks; null = those in the data "
        "folder's buckets.json, else the benchmark's full list)",
    )
    ev.add_argument("--limit", type=int, help="first N samples per task (per task and length bucket for LongBench-E)")
    ev.add_argument(
        "--max-input-length",
        type=int,
        help="prompt budget in tokens (default: max_position_embeddings minus the task's max_new_tokens)",
    )
    ev.add_argument(
        "--chat-template",
        choices=["auto", "never"],
        help="auto: use the tokenizer's chat template where it has one and the task allows it",
    )
    ev.add_argument(
        "--bos",
        choices=["auto", "always", "never"],
        help="BOS in front of raw prompts: as the tokenizer does (auto), always, or never",
    )
    ev.add_argument(
        "--on-bad-line",
        choices=["fail", "skip"],
        help="a malformed JSONL line: stop with file:line (fail) or warn and skip it",
    )
    ev.add_argument(
        "--embedded-max-new-tokens",
        type=int,
        help="generation length of the embedded task (default: eval.longbench.embedded_max_new_tokens; "
        "null = the task's own)",
    )
    ev.add_argument(
        "--overwrite",
        action="store_true",
        help="discard earlier predictions made with different settings instead of refusing",
    )
    ev.add_argument("--cache-dir", default=None, help="where data.zip is unpacked (default results/cache/longbench)")
    add_run_args(ev)
    bd = parser.add_argument_group("building the embedded task")
    bd.add_argument(
        "--build-embedded", action="store_true", help="build the code-completion task instead of evaluating"
    )
    bd.add_argument("--tokens", default=None, help="Parquet of tokenized held-out documents (column input_ids)")
    bd.add_argument("--source-dir", default=None, help="folder of held-out .py files (instead of --tokens)")
    bd.add_argument(
        "--windows",
        help="comma-separated windows the buckets scale to, e.g. 256,512,1024 "
        "(default: eval.longbench.embedded.windows; null = L, 2L and L' of the config)",
    )
    bd.add_argument(
        "--margin",
        type=int,
        help="tokens kept free below each window for the prompt header and generation "
        "(default: eval.longbench.embedded.margin)",
    )
    bd.add_argument("--bucket-edges", help="explicit comma-separated edges in tokens, e.g. 64,200,456,968")
    bd.add_argument("--per-bucket", type=int, help="samples per bucket (default: eval.longbench.embedded.per_bucket)")
    bd.add_argument("--task-name", help="task name (default: eval.longbench.embedded.task)")
    bd.add_argument("--seed", type=int, help="sampling seed (default: the config's seed)")
    add_tracking_args(parser)


def resolve_settings(args, config: dict) -> dict:
    s = overlay(config, SECTION, args, OPTIONS, lists=LISTS)
    s["seed"] = seed_of(args, config)
    if s["limit"] is not None and int(s["limit"]) < 1:
        raise RopeextError(f"--limit: {s['limit']} must be >= 1")
    return s


def run(args) -> None:
    config = config_from_args(args)
    s = resolve_settings(args, config)
    if args.build_embedded:
        tokenizer = args.tokenizer or args.model
        if not tokenizer:
            raise RopeextError("--build-embedded needs --tokenizer DIR (the tokenizer that counts and decodes tokens)")
        windows = embedded_windows(s, config["model"]["train_length"], config["extension"]["target_lengths"])
        counts = build_embedded(
            s,
            output_dir=args.output_dir,
            tokenizer=tokenizer,
            windows=windows,
            tokens=args.tokens,
            source_dir=args.source_dir,
            config=config,
            variant=args.variant,
            mlflow=not args.no_mlflow,
        )
        print(
            f"built {s['embedded']['task']}: {sum(counts.values())} samples in buckets "
            f"{', '.join(f'{k}: {v}' for k, v in counts.items())} -> {args.output_dir}"
        )
        return
    if not args.model:
        raise RopeextError("--model is required to evaluate (or pass --build-embedded)")
    variant = variant_of(args)
    precision = precision_of(args, config, resolve_device(args.device))
    if s["engine"] == "lm_eval":
        result = longbench.evaluate(
            s,
            model=args.model,
            output_dir=args.output_dir,
            tokenizer=args.tokenizer,
            precision=precision,
            device=args.device,
            config=config,
            variant=variant,
            mlflow=not args.no_mlflow,
            progress=not args.no_progress,
        )
    else:
        result = evaluate(
            s,
            model=args.model,
            output_dir=args.output_dir,
            tokenizer=args.tokenizer,
            precision=precision,
            device=args.device,
            cache_dir=args.cache_dir,
            overwrite=args.overwrite,
            config=config,
            variant=variant,
            mlflow=not args.no_mlflow,
            progress=not args.no_progress,
        )
    long_key = next((k for k in result if k.startswith("Avg>")), None)
    extra = f", {long_key} {result[long_key]}" if long_key else ""
    print(f"longbench {variant}: Avg {result['Avg']}{extra} over {len(result['tasks'])} task(s) -> {args.output_dir}")
