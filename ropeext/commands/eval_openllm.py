"""ropeext eval openllm: Open LLM tasks through lm-eval over a model directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from ropeext import tracking
from ropeext.commands._common import (
    add_eval_args,
    add_run_args,
    add_tracking_args,
    check_model_path,
    config_from_args,
    overlay,
    precision_of,
    seed_of,
    variant_of,
)
from ropeext.config import config_hash
from ropeext.data.tokenizer import load_tokenizer
from ropeext.errors import RopeextError
from ropeext.eval.common import ResumableJsonl
from ropeext.eval.openllm import presets, report, runner
from ropeext.eval.openllm.local_tasks import build_local_tasks
from ropeext.io import read_json, write_json
from ropeext.modeling import load_model_config
from ropeext.runtime import model_window, precision_params, resolve_device

COMMAND = ("eval", "openllm")
HELP = "Open LLM tasks with lm-eval (presets dprope_paper, leaderboard_v1, or local tasks built from held-out text)"

SECTION = "eval.openllm"  # the config section the options below are laid over
OPTIONS = ("preset", "tasks", "num_fewshot", "batch_size", "limit")


def add_arguments(parser) -> None:
    add_eval_args(parser, "metrics.json, results.jsonl, predictions.jsonl and the local task folders")
    parser.add_argument("--preset", help="dprope_paper, leaderboard_v1 or local (default: eval.openllm.preset)")
    parser.add_argument(
        "--tasks", help="explicit lm-eval tasks instead of a preset, as name[:num_fewshot],... e.g. hellaswag:10,mmlu:5"
    )
    parser.add_argument("--num-fewshot", type=int, help="few-shot count for every task (overrides the preset's counts)")
    parser.add_argument(
        "--heldout", default=None, help="Parquet of held-out tokenized documents (input_ids) for the local tasks"
    )
    parser.add_argument(
        "--include-path", action="append", default=[], help="extra folder of lm-eval task YAMLs (repeatable)"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="the window lm-eval gives the model (default: the model's max_position_embeddings)",
    )
    parser.add_argument(
        "--batch-size", help="lm-eval batch size, an integer or 'auto' (default: eval.openllm.batch_size)"
    )
    parser.add_argument(
        "--limit", type=float, help="at most this many samples per task (a fraction if < 1); for quick checks only"
    )
    add_run_args(parser, seed="seed of the local tasks and of lm-eval")
    add_tracking_args(parser)


def resolve_settings(args, config: dict) -> dict:
    s = overlay(config, SECTION, args, OPTIONS)
    if args.preset is not None or args.tasks is not None:  # either one on the command line replaces both
        s["preset"], s["tasks"] = args.preset, args.tasks
    bs = s["batch_size"]
    if not (isinstance(bs, int) or str(bs) == "auto" or str(bs).isdigit()) or str(bs) == "0":
        raise RopeextError(f"--batch-size: expected a positive integer or 'auto', got {bs!r}")
    s["batch_size"] = bs if str(bs) == "auto" else int(bs)
    if s["limit"] is not None:
        if s["limit"] <= 0:
            raise RopeextError(f"--limit: {s['limit']} must be positive")
        s["limit"] = int(s["limit"]) if s["limit"] >= 1 else float(s["limit"])
    if s["num_fewshot"] is not None and s["num_fewshot"] < 0:
        raise RopeextError(f"--num-fewshot: {s['num_fewshot']} must be >= 0")
    s["seed"] = seed_of(args, config)
    return s


def _fresh_state(out: Path, fingerprint: dict) -> None:
    """Keep earlier per-entry results only when they were made with the same settings."""
    state = out / "state.json"
    if state.exists() and read_json(state) != fingerprint:
        for name in ("results.jsonl", "predictions.jsonl"):
            (out / name).unlink(missing_ok=True)
        print(f"openllm: settings changed since the last run in {out}; starting over")
    write_json(state, fingerprint)


def run(args) -> None:
    # heavy: tqdm (with asyncio) adds ~0.1 s to --help and the workflow parse; only a run draws a bar
    from tqdm import tqdm

    config = config_from_args(args)
    s = resolve_settings(args, config)
    entries = presets.resolve_tasks(s["preset"], s["tasks"], s["num_fewshot"])
    names = [n for n, _ in entries]
    out = Path(args.output_dir)
    include = [Path(p) for p in args.include_path]
    for p in include:
        if not p.is_dir():
            raise RopeextError(f"--include-path: folder not found: {p}")
    model_path = check_model_path(args.model)
    max_length = args.max_length or model_window(load_model_config(model_path, "--model"))
    if not max_length:
        raise RopeextError(f"{model_path}: config has no max_position_embeddings; give --max-length")
    variant = variant_of(args)
    tok_path = args.tokenizer or model_path

    local_manifest = None
    if any(n in presets.LOCAL_TASKS for n in names):
        if not args.heldout:
            raise RopeextError(
                f"--heldout (a Parquet of held-out tokenized documents) is required for the local "
                f"tasks {', '.join(n for n in names if n in presets.LOCAL_TASKS)}"
            )
        tokenizer = load_tokenizer(tok_path)
        loc = s["local"]
        if max_length <= loc["max_line_tokens"] + 1:
            raise RopeextError(
                f"--max-length {max_length} leaves no room for a context before a next line of up "
                f"to {loc['max_line_tokens']} tokens"
            )
        local_manifest = build_local_tasks(
            args.heldout,
            tokenizer,
            out / "tasks",
            n_items=loc["items"],
            n_fewshot_items=loc["fewshot_items"],
            context_lines=loc["context_lines"],
            n_choices=loc["choices"],
            max_context_tokens=min(loc["max_context_tokens"], max_length - loc["max_line_tokens"] - 1),
            max_line_tokens=loc["max_line_tokens"],
            ppl_docs=loc["ppl_docs"],
            ppl_tokens=loc["ppl_tokens"],
            seed=s["seed"],
        )
        include.append(out / "tasks")
    elif (out / "tasks").is_dir():
        shutil.rmtree(out / "tasks")

    device = resolve_device(args.device)
    precision = precision_of(args, config, device)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = {
        "model": str(Path(model_path).resolve()) if Path(model_path).is_dir() else model_path,
        "max_length": max_length,
        "limit": s["limit"],
        "seed": s["seed"],
        "dtype": precision["dtype"],
        "local_tasks": config_hash(local_manifest["sha256"]) if local_manifest else None,
    }
    params = {
        "eval.openllm": s,
        "tasks": dict(entries),
        "model": model_path,
        "max_length": max_length,
        **precision_params(precision),
        "device": device,
    }
    with tracking.stage_run(
        "eval_openllm", config=config, params=params, variant=variant, enabled=not args.no_mlflow
    ) as run_:
        tm = runner.task_manager(include, names)
        _fresh_state(out, fingerprint)
        results_store = ResumableJsonl(out / "results.jsonl", key="_id")
        samples_store = ResumableJsonl(out / "predictions.jsonl", key="_id")
        lm = runner.make_lm(
            model_path,
            tokenizer=args.tokenizer,
            max_length=max_length,
            batch_size=s["batch_size"],
            device=device,
            dtype=precision["dtype"],
        )
        with tqdm(total=len(entries), desc="openllm", unit="task", disable=args.no_progress) as bar:
            records = runner.evaluate_entries(
                lm,
                tm,
                entries,
                results_store=results_store,
                samples_store=samples_store,
                limit=s["limit"],
                seed=s["seed"],
                progress=bar,
            )
        preset = presets.preset_label(s["preset"], s["tasks"])
        metrics = report.build_metrics(
            records, variant=variant, model=model_path, max_length=max_length, preset=preset, local_tasks=local_manifest
        )
        metrics["precision"] = precision
        write_json(out / "metrics.json", metrics)
        run_.set_tags({"lm_eval.version": metrics["lm_eval_version"]})
        run_.log_metrics(report.flat_metrics(metrics))
        run_.log_outputs(out)
    scores = ", ".join(f"{t}: {v['score']:.4f}" for t, v in metrics["tasks"].items() if v["score"] is not None)
    print(f"openllm {variant}: {scores} -> {out}")
