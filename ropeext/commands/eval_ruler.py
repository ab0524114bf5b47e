"""ropeext eval ruler: the RULER-style long-context suite, generated locally at any length."""

from __future__ import annotations

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
from ropeext.data.tokenizer import load_tokenizer
from ropeext.errors import RopeextError
from ropeext.eval.common import ResumableJsonl, greedy_generate
from ropeext.eval.lmeval_engine import ruler
from ropeext.eval.ruler import qa as qa_mod
from ropeext.eval.ruler import report
from ropeext.eval.ruler.generate import Sources
from ropeext.eval.ruler.haystack import essay_stream
from ropeext.eval.ruler.run import check_any_ran, evaluate, flat_metrics, log_by_length, summarize
from ropeext.eval.ruler.tasks import QA_TASKS, TASKS, load_templates, resolve_tasks
from ropeext.io import write_json
from ropeext.modeling import load_causal_lm, load_model_config
from ropeext.runtime import model_window, precision_params, resolve_device

COMMAND = ("eval", "ruler")
HELP = (
    "RULER suite (needle in a haystack, variable tracking, word extraction, QA) at a list of lengths: "
    "metrics JSON, predictions JSONL, heat maps"
)

SECTION = "eval.ruler"  # the config section the options below are laid over
OPTIONS = (
    "engine",
    "lengths",
    "samples",
    "subset",
    "tasks",
    "threshold",
    "essay_source",
    "squad",
    "hotpotqa",
    "templates",
    "max_length",
)


def add_arguments(parser) -> None:
    add_eval_args(parser, "metrics.json, predictions.jsonl, heatmap.png and heatmaps/<task>.png")
    parser.add_argument(
        "--engine",
        choices=["ropeext", "lm_eval"],
        help="ropeext (samples generated here, offline) or lm_eval (lm-eval's own RULER tasks; "
        "default: eval.ruler.engine)",
    )
    parser.add_argument(
        "--lengths",
        help="comma-separated sequence lengths in model tokens, prompt + answer budget (default: eval.ruler.lengths)",
    )
    parser.add_argument("--samples", type=int, help="samples per task and length (default: eval.ruler.samples)")
    parser.add_argument(
        "--subset",
        help="task subset: all, synthetic (no QA) or anchor_llama2 (without niah_multikey_3 "
        "and cwe, as the AnchorAttention paper's Llama-2 tables); default: eval.ruler.subset",
    )
    parser.add_argument("--tasks", help="comma-separated task names (overrides --subset)")
    parser.add_argument(
        "--threshold",
        type=float,
        help="effective-length threshold on the average score (default: eval.ruler.threshold)",
    )
    parser.add_argument(
        "--essay-source",
        help="essay haystack: a folder of .txt files or a Parquet with an input_ids column "
        "(decoded with the tokenizer)",
    )
    parser.add_argument(
        "--essay-tokenizer",
        default=None,
        help="tokenizer that wrote the essay Parquet's input_ids (default: the model's)",
    )
    parser.add_argument("--squad", help="SQuAD JSON for qa_1 (qa_1 is skipped without it)")
    parser.add_argument("--hotpotqa", help="HotpotQA dev JSON for qa_2 (qa_2 is skipped without it)")
    parser.add_argument(
        "--templates",
        help="prompt wording: ropeext, or a YAML/JSON file (your copy of RULER's templates, say) "
        "overriding per-kind fields of it (default: eval.ruler.templates)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        help="the longest sequence the model may be given (default: eval.ruler.max_length; null = "
        "its max_position_embeddings); raise it to measure extrapolation past the window",
    )
    add_run_args(parser, seed="seed of the samples")
    add_tracking_args(parser)


def resolve_settings(args, config: dict) -> dict:
    s = overlay(config, SECTION, args, OPTIONS, lists={"lengths": int, "tasks": str})
    s["seed"] = seed_of(args, config)
    if int(s["samples"]) <= 0:
        raise RopeextError(f"--samples: {s['samples']} must be positive")
    if any(int(L) <= 0 for L in s["lengths"]):
        raise RopeextError(f"--lengths: expected positive integers, got {s['lengths']}")
    s["lengths"] = sorted(dict.fromkeys(int(L) for L in s["lengths"]))
    s["tasks"], s["subset"] = resolve_tasks(s["tasks"], s["subset"])
    return s


def run(args) -> None:
    # heavy: torch loads only when a model runs
    import torch

    # heavy: tqdm (with asyncio) adds ~0.1 s to --help and the workflow parse; only a run draws a bar
    from tqdm import tqdm

    config = config_from_args(args)
    s = resolve_settings(args, config)
    templates = load_templates(s["templates"])
    check_model_path(args.model)
    window = s["max_length"] or model_window(load_model_config(args.model, "--model"))
    if window:
        too_long = [L for L in s["lengths"] if L > window]
        if too_long:
            raise RopeextError(
                f"--lengths: {', '.join(map(str, too_long))} exceed the model's window of {window} "
                f"tokens (max_position_embeddings of {args.model}); pass --max-length to allow "
                f"extrapolation past it"
            )
    if s["engine"] == "lm_eval":
        _run_lm_eval(args, config, s, window)
        return

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    tasks = list(s["tasks"])
    sources = Sources()
    if any(TASKS[t].get("haystack") == "essay" for t in tasks):
        if not s["essay_source"]:
            need = [t for t in tasks if TASKS[t].get("haystack") == "essay"]
            raise RopeextError(
                f"tasks {', '.join(need)} need an essay haystack: pass --essay-source (a folder "
                f"of .txt files or a Parquet of input_ids) or choose other --tasks"
            )
        essay_tok = load_tokenizer(args.essay_tokenizer) if args.essay_tokenizer else tokenizer
        sources.essay = essay_stream(s["essay_source"], essay_tok, max_tokens=4 * max(s["lengths"]) + 4096)
    qa_skipped = {}
    for task in [t for t in tasks if t in QA_TASKS]:
        dataset = TASKS[task]["dataset"]
        path = s[dataset]
        if path:
            sources.qa[dataset] = qa_mod.LOADERS[dataset](path)
        else:
            option = "--squad" if dataset == "squad" else "--hotpotqa"
            print(f"skipping {task}: no {dataset} file given ({option} PATH)")
            qa_skipped[task] = {str(L): f"no {dataset} file given ({option})" for L in s["lengths"]}
    tasks_to_run = [t for t in tasks if t not in qa_skipped]
    if not tasks_to_run:
        check_any_ran([], qa_skipped)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    variant = variant_of(args)
    device = resolve_device(args.device)
    precision = precision_of(args, config, device)
    model = load_causal_lm(args.model, dtype=getattr(torch, precision["dtype"])).to(device).eval()

    def generate(ids: list[int], max_new_tokens: int) -> str:
        return greedy_generate(model, tokenizer, ids, max_new_tokens)

    params = {
        "eval.ruler": {k: v for k, v in s.items()},
        "model": str(args.model),
        **precision_params(precision),
        "device": device,
        "window": window,
    }
    with tracking.stage_run(
        "eval_ruler", config=config, params=params, variant=variant, enabled=not args.no_mlflow
    ) as run_:
        store = ResumableJsonl(out / "predictions.jsonl", key="_id")
        total = len(tasks_to_run) * len(s["lengths"]) * s["samples"]
        with tqdm(total=total, desc="ruler", unit="sample", disable=args.no_progress) as bar:
            records, skipped = evaluate(
                generate,
                tokenizer,
                tasks=tasks_to_run,
                lengths=s["lengths"],
                num_samples=s["samples"],
                seed=s["seed"],
                sources=sources,
                templates=templates,
                store=store,
                progress=bar,
                log=lambda msg: tqdm.write(msg),
            )
        skipped.update(qa_skipped)
        check_any_ran(records, skipped)
        # QA tasks without a source leave the task list (and the label says so); tasks too long
        # for a length stay in it, so that length has no complete average
        subset = s["subset"] + (f" without {', '.join(qa_skipped)}" if qa_skipped else "")
        summary = summarize(
            records,
            tasks=tasks_to_run,
            lengths=s["lengths"],
            subset=subset,
            threshold=float(s["threshold"]),
            skipped=skipped,
            templates=templates,
        )
        metrics = {
            "variant": variant,
            "engine": "ropeext",
            "model": str(args.model),
            "window": window,
            "seed": s["seed"],
            "samples_per_cell": s["samples"],
            "precision": precision,
            **summary,
        }
        write_json(out / "metrics.json", metrics)
        report.plot_overview(metrics, out / "heatmap.png")
        report.plot_task_heatmaps(records, s["lengths"], out / "heatmaps")
        run_.log_metrics(flat_metrics(metrics))
        log_by_length(run_, metrics)
        run_.set_tags({"ruler.subset": s["subset"]})
        run_.log_outputs(out)
        run_.log_artifact(out / "predictions.jsonl")
    by_len = ", ".join(f"{L}: {v}" for L, v in metrics["average"].items())
    print(
        f"ruler {variant} ({subset}): average by length {by_len}; effective length "
        f"{metrics['effective_length']} (threshold {s['threshold']}) -> {out}"
    )


def _run_lm_eval(args, config: dict, s: dict, window: int | None) -> None:
    """lm-eval's own RULER tasks (the essay and QA options of the ropeext engine do not apply)."""
    variant = variant_of(args)
    metrics = ruler.evaluate(
        s,
        model=args.model,
        output_dir=args.output_dir,
        window=window,
        tokenizer=args.tokenizer,
        precision=precision_of(args, config, resolve_device(args.device)),
        device=args.device,
        config=config,
        variant=variant,
        mlflow=not args.no_mlflow,
        progress=not args.no_progress,
    )
    by_len = ", ".join(f"{L}: {v}" for L, v in metrics["average"].items())
    print(
        f"ruler {variant} (lm-eval {metrics['lm_eval_version']}, {metrics['subset']}): average by length "
        f"{by_len}; effective length {metrics['effective_length']} (threshold {s['threshold']}) -> {args.output_dir}"
    )
