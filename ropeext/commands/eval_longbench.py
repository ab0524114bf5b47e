"""ropeext eval longbench: LongBench / LongBench-E with the benchmark's protocol and metrics.

Two modes:

- evaluate (default): ``--model DIR --data DATA --output-dir OUT`` writes
  ``OUT/predictions/<task>.jsonl`` (resumable), ``OUT/metrics.json``, ``OUT/longbench.png``.
- ``--build-embedded``: ``--output-dir DATA`` gets ``heldout_lcc_e.jsonl`` + ``buckets.json``,
  built from ``--tokens test.parquet --tokenizer DIR`` or ``--source-dir DIR`` of .py files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.io import write_json
from ropeext.errors import RopeextError

COMMAND = ("eval", "longbench")
HELP = "LongBench / LongBench-E (official protocol and metrics) or build the embedded code-completion task"

DEFAULTS = {
    "data_dir": None,
    "prompts_dir": None,
    "benchmark": "longbench-e",
    "tasks": None,
    "limit": None,
    "max_input_length": None,
    "chat_template": "auto",
    "bos": "auto",
    "on_bad_line": "fail",
    "embedded_max_new_tokens": None,
    "embedded": {"windows": [256, 512, 1024], "margin": 56, "bucket_edges": None, "per_bucket": 20,
                 "task": "heldout_lcc"},
}


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise RopeextError(f"{option}: expected comma-separated integers, got {text!r}") from None


def add_arguments(parser) -> None:
    add_config_args(parser, required=False)
    parser.add_argument("--output-dir", required=True,
                        help="evaluation: folder for predictions/, metrics.json, longbench.png; "
                             "--build-embedded: the task folder to write")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--model", help="model directory (or hub id) to evaluate")
    ev.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's; with "
                    "--build-embedded: the tokenizer of --tokens)")
    ev.add_argument("--data", default=None, help="folder of <task>.jsonl / <task>_e.jsonl, the benchmark's "
                    "data.zip, or hf:THUDM/LongBench (default: config eval.longbench.data_dir)")
    ev.add_argument("--prompts", default=None, help="the official repository's config/ folder with "
                    "dataset2prompt.json and dataset2maxlen.json (needed for the benchmark's tasks)")
    ev.add_argument("--benchmark", choices=["longbench-e", "longbench"], default=None,
                    help="read the _e files and score by length bucket (default), or LongBench v1")
    ev.add_argument("--tasks", default=None, help="comma-separated tasks (default: those in the data folder's "
                    "buckets.json, else the benchmark's full list)")
    ev.add_argument("--limit", type=int, default=None,
                    help="first N samples per task (per task and length bucket for LongBench-E)")
    ev.add_argument("--max-input-length", type=int, default=None,
                    help="prompt budget in tokens (default: max_position_embeddings minus the task's max_new_tokens)")
    ev.add_argument("--chat-template", choices=["auto", "never"], default=None,
                    help="auto: use the tokenizer's chat template where it has one and the task allows it")
    ev.add_argument("--bos", choices=["auto", "always", "never"], default=None,
                    help="prepend BOS when the tokenizer does not add it itself (auto), always, or never")
    ev.add_argument("--on-bad-line", choices=["fail", "skip"], default=None,
                    help="a malformed JSONL line: stop with file:line (fail) or warn and skip it")
    ev.add_argument("--embedded-max-new-tokens", type=int, default=None,
                    help="generation length of the embedded task (default 32)")
    ev.add_argument("--overwrite", action="store_true",
                    help="discard earlier predictions made with different settings instead of refusing")
    ev.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ev.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    ev.add_argument("--cache-dir", default=None, help="where data.zip is unpacked (default results/cache/longbench)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    bd = parser.add_argument_group("building the embedded task")
    bd.add_argument("--build-embedded", action="store_true", help="build the code-completion task instead of evaluating")
    bd.add_argument("--tokens", default=None, help="Parquet of tokenized held-out documents (column input_ids)")
    bd.add_argument("--source-dir", default=None, help="folder of held-out .py files (instead of --tokens)")
    bd.add_argument("--windows", default=None, help="comma-separated windows the buckets scale to, e.g. 256,512,1024")
    bd.add_argument("--margin", type=int, default=None,
                    help="tokens kept free below each window for the prompt header and generation (default 56)")
    bd.add_argument("--bucket-edges", default=None, help="explicit comma-separated edges in tokens, e.g. 64,200,456,968")
    bd.add_argument("--per-bucket", type=int, default=None, help="samples per bucket (default 20)")
    bd.add_argument("--task-name", default=None, help="task name (default heldout_lcc)")
    bd.add_argument("--seed", type=int, default=None, help="sampling seed (default: config seed or 0)")
    add_tracking_args(parser)


def resolve_settings(args, config: dict | None) -> dict:
    section = ((config or {}).get("eval") or {}).get("longbench") or {}
    s = {k: section.get(k, v) for k, v in DEFAULTS.items()}
    s["embedded"] = {**DEFAULTS["embedded"], **(section.get("embedded") or {})}
    for arg, key in (("data", "data_dir"), ("prompts", "prompts_dir"), ("benchmark", "benchmark"),
                     ("limit", "limit"), ("max_input_length", "max_input_length"),
                     ("chat_template", "chat_template"), ("bos", "bos"), ("on_bad_line", "on_bad_line"),
                     ("embedded_max_new_tokens", "embedded_max_new_tokens")):
        if getattr(args, arg, None) is not None:
            s[key] = getattr(args, arg)
    if args.tasks is not None:
        s["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
    emb = s["embedded"]
    if args.windows is not None:
        emb["windows"] = _int_list(args.windows, "--windows")
    if args.margin is not None:
        emb["margin"] = args.margin
    if args.bucket_edges is not None:
        emb["bucket_edges"] = _int_list(args.bucket_edges, "--bucket-edges")
    if args.per_bucket is not None:
        emb["per_bucket"] = args.per_bucket
    if args.task_name is not None:
        emb["task"] = args.task_name
    s["seed"] = args.seed if args.seed is not None else int((config or {}).get("seed", 0))
    if s["limit"] is not None and int(s["limit"]) < 1:
        raise RopeextError(f"--limit: {s['limit']} must be >= 1")
    return s


def run(args) -> None:
    config = config_from_args(args)
    s = resolve_settings(args, config)
    if args.build_embedded:
        return _build(args, s, config)
    return _evaluate(args, s, config)


# ----------------------------------------------------------------------------- build
def _build(args, s: dict, config) -> None:
    from ropeext import tracking
    from ropeext.data.tokenizer import load_tokenizer
    from ropeext.eval.longbench import embedded

    emb = s["embedded"]
    if bool(args.tokens) == bool(args.source_dir):
        raise RopeextError("--build-embedded needs exactly one of --tokens PARQUET or --source-dir DIR")
    tok_path = args.tokenizer or args.model
    if not tok_path:
        raise RopeextError("--build-embedded needs --tokenizer DIR (the tokenizer that counts and decodes tokens)")
    tokenizer = load_tokenizer(tok_path)
    edges = emb["bucket_edges"] or embedded.default_edges(emb["windows"], emb["margin"])
    if args.tokens:
        docs = embedded.documents_from_parquet(args.tokens, tokenizer)
        source = str(args.tokens)
    else:
        docs = embedded.documents_from_files(args.source_dir)
        source = str(args.source_dir)
    out = Path(args.output_dir)
    meta = {"source": source, "tokenizer": str(tok_path), "windows": emb["windows"],
            "margin": emb["margin"] if not emb["bucket_edges"] else None, "documents": len(docs)}
    params = {"eval.longbench.embedded": {**emb, "edges": edges}, "source": source, "seed": s["seed"]}
    with tracking.stage_run("eval_longbench_build", config=config, params=params, variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        manifest = embedded.build_embedded_task(docs, tokenizer, out, edges=edges, per_bucket=emb["per_bucket"],
                                                seed=s["seed"], task=emb["task"], meta=meta)
        counts = manifest["tasks"][emb["task"]]["counts"]
        run_.log_metrics({f"samples.{k}": v for k, v in counts.items()})
        run_.log_outputs(out, suffixes=(".json", ".jsonl"))
    print(f"built {emb['task']}: {sum(counts.values())} samples in buckets "
          f"{', '.join(f'{k}: {v}' for k, v in counts.items())} -> {out}")


# ----------------------------------------------------------------------------- evaluate
def _evaluate(args, s: dict, config) -> None:
    import torch

    from ropeext import tracking
    from ropeext.data.tokenizer import load_tokenizer
    from ropeext.eval.common import ResumableJsonl
    from ropeext.eval.longbench import data, metrics, predict, protocol, results
    from ropeext.modeling import load_causal_lm

    if not args.model:
        raise RopeextError("--model is required to evaluate (or pass --build-embedded)")
    if not s["data_dir"]:
        raise RopeextError("no LongBench data: pass --data DIR (or set eval.longbench.data_dir)")
    data_dir = data.resolve_data_dir(s["data_dir"], args.cache_dir)
    manifest = data.read_manifest(data_dir)
    longbench_e = s["benchmark"] == "longbench-e"
    default_tasks = list(manifest["tasks"]) if manifest else list(
        protocol.LONGBENCH_E_TASKS if longbench_e else protocol.LONGBENCH_TASKS)
    tasks = [metrics.base_task(t) for t in (s["tasks"] or default_tasks)]
    for t in tasks:
        metrics.metric_name(t)  # unknown task -> clear error before any work
    prompts, maxlens = ({}, {})
    if any(t not in manifest.get("tasks", {}) and t != protocol.EMBEDDED_TASK for t in tasks):
        prompts, maxlens = protocol.load_prompt_assets(s["prompts_dir"])

    specs, samples, schemes = {}, {}, {}
    for t in tasks:
        specs[t] = protocol.task_spec(t, prompts, maxlens, prompts_dir=s["prompts_dir"],
                                      embedded_max_new_tokens=s["embedded_max_new_tokens"])
        if t in manifest.get("tasks", {}):
            edges = manifest["tasks"][t]["edges"]
            schemes[t] = results.edge_buckets(edges, manifest["tasks"][t].get("unit", "tokens"))
            path = data_dir / manifest["tasks"][t].get("file", f"{t}_e.jsonl")
            if not path.is_file():
                raise RopeextError(f"task {t!r}: {path} named in {data_dir / data.MANIFEST} not found")
        else:
            schemes[t] = results.STANDARD_BUCKETS if longbench_e else None
            path = data.task_file(data_dir, t, longbench_e)
        b = schemes[t]
        records = data.load_samples(path, on_error=s["on_bad_line"])
        samples[t] = (path, predict.select_samples(records, s["limit"],
                                                   (lambda r, b=b: b.index(float(r["length"]))) if b else None))

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_causal_lm(args.model, dtype=getattr(torch, args.dtype)).to(device).eval()
    window = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    add_bos = protocol.wants_bos(tokenizer, s["bos"])
    budgets = {t: predict.max_input_length(window, specs[t].max_new_tokens, s["max_input_length"], t) for t in tasks}

    out = Path(args.output_dir)
    pred_dir = out / "predictions"
    variant = args.variant or Path(str(args.model).rstrip("/")).name
    settings = {
        "global": {"model": str(Path(args.model).resolve()) if Path(args.model).exists() else str(args.model),
                   "benchmark": s["benchmark"], "chat_template": s["chat_template"], "bos": add_bos,
                   "dtype": args.dtype},
        "tasks": {t: {"max_input_length": budgets[t], "prompt": specs[t].prompt,
                      "max_new_tokens": specs[t].max_new_tokens} for t in tasks},
    }
    _check_resume(pred_dir, settings, args.overwrite)

    params = {"eval.longbench": {k: v for k, v in s.items() if k != "embedded"}, "model": str(args.model),
              "tasks": tasks, "window": window, "device": device, "dtype": args.dtype, "bos": add_bos}
    per_task, stats = {}, {}
    with tracking.stage_run("eval_longbench", config=config, params=params, variant=variant,
                            enabled=not args.no_mlflow) as run_:
        for t in tasks:
            path, chosen = samples[t]
            store = ResumableJsonl(pred_dir / f"{t}.jsonl", key="_id")
            chat = protocol.use_chat_for(specs[t], tokenizer, s["chat_template"])
            stats[t] = predict.predict_task(model, tokenizer, specs[t], chosen, store, max_length=budgets[t],
                                            chat=chat, add_bos=add_bos, where=str(path),
                                            progress=not args.no_progress)
            keys = {c["_key"] for c in chosen}
            per_task[t] = ([r for r in store if r["_id"] in keys], schemes[t])
        result = results.build_metrics(
            per_task, benchmark=s["benchmark"], variant=variant, model=str(args.model), window=window,
            max_input_length=budgets, max_new_tokens={t: specs[t].max_new_tokens for t in tasks},
            prompt_source={t: specs[t].source for t in tasks}, chat_template=s["chat_template"], bos=add_bos,
            limit=s["limit"], code_sim_backend=metrics.code_sim_backend(), prediction_stats=stats,
            data_dir=str(data_dir))
        write_json(out / "metrics.json", result)
        results.plot_buckets(result, out / "longbench.png")
        flat = {f"longbench.{t}": v["score"] for t, v in result["tasks"].items() if v["score"] is not None}
        for t, v in result["tasks"].items():
            for b, bv in (v.get("buckets") or {}).items():
                if bv["score"] is not None:
                    flat[f"longbench.{t}.{b}"] = bv["score"]
        for key in [k for k in result if k == "Avg" or k.startswith("Avg>")]:
            if result[key] is not None:
                flat[f"longbench.{key}"] = result[key]
        for b, v in (result.get("bucket_avg") or {}).items():
            if v is not None:
                flat[f"longbench.avg.{b}"] = v
        run_.log_metrics({_metric_key(k): v for k, v in flat.items()})
        run_.log_outputs(out)
        run_.log_artifact(pred_dir, "predictions")
    long_key = next((k for k in result if k.startswith("Avg>")), None)
    extra = f", {long_key} {result[long_key]}" if long_key else ""
    print(f"longbench {variant}: Avg {result['Avg']}{extra} over {len(tasks)} task(s) -> {out}")


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: 'Avg>4k' -> 'Avg_gt_4k', '8k+' -> '8k_plus'."""
    import re

    return re.sub(r"[^\w\-. /]", "_", name.replace(">", "_gt_").replace("+", "_plus"))


def _check_resume(pred_dir: Path, settings: dict, overwrite: bool) -> None:
    """Predictions are reused only when made with the same settings (per task)."""
    path = pred_dir / "settings.json"
    settings = json.loads(json.dumps(settings))
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("global") != settings["global"]:
            stale = sorted(t for t in old.get("tasks", {}) if (pred_dir / f"{t}.jsonl").exists())
        else:
            stale = [t for t in settings["tasks"]
                     if t in old.get("tasks", {}) and old["tasks"][t] != settings["tasks"][t]]
        if stale:
            if not overwrite:
                what = "model/benchmark/chat/bos/dtype" if old.get("global") != settings["global"] else "prompt budget"
                raise RopeextError(f"{pred_dir} holds predictions for {', '.join(stale)} made with other settings "
                                   f"({what}); pass --overwrite to discard them or choose another --output-dir")
            for t in stale:
                (pred_dir / f"{t}.jsonl").unlink(missing_ok=True)
        if old.get("global") == settings["global"]:
            settings["tasks"] = {**old.get("tasks", {}), **settings["tasks"]}
    write_json(path, settings)
