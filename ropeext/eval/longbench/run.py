"""One LongBench run: build the embedded task, or evaluate a model on a data folder.

``evaluate`` reads the tasks' samples, predicts each task into a resumable JSONL file (reused only
when made with the same settings, see ``check_resume``), scores them with the benchmark's metrics,
and writes ``metrics.json`` and ``longbench.png``, all under one MLflow run. ``build_embedded`` writes
the embedded code-completion task's folder. ``settings`` is the resolved ``eval.longbench`` config
section plus ``seed``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ropeext import tracking
from ropeext.data.tokenizer import load_tokenizer
from ropeext.errors import RopeextError
from ropeext.eval.common import ResumableJsonl
from ropeext.eval.longbench import data, embedded, metrics, predict, protocol, results
from ropeext.io import write_json
from ropeext.modeling import load_causal_lm
from ropeext.runtime import given_precision, model_window, precision_params, resolve_device


def embedded_windows(settings: dict, train_length: int, target_lengths: list[int]) -> list[int]:
    """The windows the embedded task's buckets scale to: ``embedded.windows``, or L, 2L and L' when null
    (in increasing order, each once: with L' = 2L that is two windows)."""
    return list(settings["embedded"]["windows"] or sorted({train_length, 2 * train_length, max(target_lengths)}))


def build_embedded(
    settings: dict,
    *,
    output_dir: str | Path,
    tokenizer: str,
    windows: list[int],
    tokens: str | None = None,
    source_dir: str | None = None,
    config: dict | None = None,
    variant: str | None = None,
    mlflow: bool = True,
) -> dict:
    """Write the embedded task (``<task>_e.jsonl`` + ``buckets.json``); return its sample counts by bucket."""
    emb = settings["embedded"]
    if bool(tokens) == bool(source_dir):
        raise RopeextError("--build-embedded needs exactly one of --tokens PARQUET or --source-dir DIR")
    tok = load_tokenizer(tokenizer)
    edges = emb["bucket_edges"] or embedded.default_edges(windows, emb["margin"])
    if tokens:
        docs = embedded.documents_from_parquet(tokens, tok)
        source = str(tokens)
    else:
        docs = embedded.documents_from_files(source_dir)
        source = str(source_dir)
    out = Path(output_dir)
    meta = {
        "source": source,
        "tokenizer": str(tokenizer),
        "windows": windows,
        "margin": emb["margin"] if not emb["bucket_edges"] else None,
        "documents": len(docs),
    }
    params = {
        "eval.longbench.embedded": {**emb, "windows": windows, "edges": edges},
        "source": source,
        "seed": settings["seed"],
    }
    with tracking.stage_run(
        "eval_longbench_build", config=config, params=params, variant=variant, enabled=mlflow
    ) as run_:
        manifest = embedded.build_embedded_task(
            docs,
            tok,
            out,
            edges=edges,
            per_bucket=emb["per_bucket"],
            seed=settings["seed"],
            task=emb["task"],
            meta=meta,
        )
        counts = manifest["tasks"][emb["task"]]["counts"]
        run_.log_metrics({f"samples.{k}": v for k, v in counts.items()})
        run_.log_outputs(out, suffixes=(".json", ".jsonl"))
    return counts


def evaluate(
    settings: dict,
    *,
    model: str,
    output_dir: str | Path,
    tokenizer: str | None = None,
    dtype: str = "float32",
    precision: dict | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    overwrite: bool = False,
    config: dict | None = None,
    variant: str | None = None,
    mlflow: bool = True,
    progress: bool = True,
) -> dict:
    """Evaluate ``model`` on the tasks of ``settings['data_dir']``; return the metrics written to metrics.json.

    ``precision`` (``ropeext.runtime.choose_eval_dtype``) says how the dtype was chosen; it replaces ``dtype``."""
    # heavy: torch loads only when a model runs
    import torch

    s = settings
    precision = given_precision(dtype, precision)
    dtype = precision["dtype"]
    if not s["data_dir"]:
        raise RopeextError("no LongBench data: pass --data DIR (or set eval.longbench.data_dir)")
    data_dir = data.resolve_data_dir(s["data_dir"], cache_dir)
    manifest = data.read_manifest(data_dir)
    longbench_e = s["benchmark"] == "longbench-e"
    default_tasks = (
        list(manifest["tasks"])
        if manifest
        else list(protocol.LONGBENCH_E_TASKS if longbench_e else protocol.LONGBENCH_TASKS)
    )
    tasks = [metrics.base_task(t) for t in (s["tasks"] or default_tasks)]
    for t in tasks:
        metrics.metric_name(t)  # unknown task -> clear error before any work
    prompts, maxlens = ({}, {})
    if any(t not in manifest.get("tasks", {}) and t != protocol.EMBEDDED_TASK for t in tasks):
        prompts, maxlens = protocol.load_prompt_assets(s["prompts_dir"])

    specs, samples, schemes = {}, {}, {}
    for t in tasks:
        specs[t] = protocol.task_spec(
            t, prompts, maxlens, prompts_dir=s["prompts_dir"], embedded_max_new_tokens=s["embedded_max_new_tokens"]
        )
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
        samples[t] = (
            path,
            predict.select_samples(records, s["limit"], (lambda r, b=b: b.index(float(r["length"]))) if b else None),
        )

    if not any(chosen for _, chosen in samples.values()):
        raise RopeextError(
            f"LongBench: no sample to evaluate in {data_dir} (tasks {', '.join(tasks)}: every task "
            f"file is empty{' or skipped every line' if s['on_bad_line'] == 'skip' else ''})"
        )
    tok = load_tokenizer(tokenizer or model)
    device = resolve_device(device)
    lm = load_causal_lm(model, dtype=getattr(torch, dtype)).to(device).eval()
    window = model_window(lm.config) or 0
    add_bos = protocol.wants_bos(tok, s["bos"])
    budgets = {t: predict.max_input_length(window, specs[t].max_new_tokens, s["max_input_length"], t) for t in tasks}

    out = Path(output_dir)
    pred_dir = out / "predictions"
    variant = variant or Path(str(model).rstrip("/")).name
    fingerprint = {
        "global": {
            "model": str(Path(model).resolve()) if Path(model).exists() else str(model),
            "benchmark": s["benchmark"],
            "chat_template": s["chat_template"],
            "bos": add_bos,
            "dtype": dtype,
        },
        "tasks": {
            t: {"max_input_length": budgets[t], "prompt": specs[t].prompt, "max_new_tokens": specs[t].max_new_tokens}
            for t in tasks
        },
    }
    check_resume(pred_dir, fingerprint, overwrite)

    params = {
        "eval.longbench": {k: v for k, v in s.items() if k != "embedded"},
        "model": str(model),
        "tasks": tasks,
        "window": window,
        "device": device,
        **precision_params(precision),
        "bos": add_bos,
    }
    per_task, stats = {}, {}
    with tracking.stage_run("eval_longbench", config=config, params=params, variant=variant, enabled=mlflow) as run_:
        for t in tasks:
            path, chosen = samples[t]
            store = ResumableJsonl(pred_dir / f"{t}.jsonl", key="_id")
            chat = protocol.use_chat_for(specs[t], tok, s["chat_template"])
            stats[t] = predict.predict_task(
                lm,
                tok,
                specs[t],
                chosen,
                store,
                max_length=budgets[t],
                chat=chat,
                add_bos=add_bos,
                where=str(path),
                progress=progress,
            )
            keys = {c["_key"] for c in chosen}
            per_task[t] = ([r for r in store if r["_id"] in keys], schemes[t])
        result = results.build_metrics(
            per_task,
            benchmark=s["benchmark"],
            engine="ropeext",
            variant=variant,
            model=str(model),
            window=window,
            max_input_length=budgets,
            max_new_tokens={t: specs[t].max_new_tokens for t in tasks},
            prompt_source={t: specs[t].source for t in tasks},
            chat_template=s["chat_template"],
            bos=add_bos,
            limit=s["limit"],
            code_sim_backend=metrics.code_sim_backend(),
            prediction_stats=stats,
            data_dir=str(data_dir),
        )
        result["precision"] = precision
        write_json(out / "metrics.json", result)
        results.plot_buckets(result, out / "longbench.png")
        run_.log_metrics({metric_key(k): v for k, v in flat_scores(result).items()})
        run_.log_outputs(out)
        run_.log_artifact(pred_dir, "predictions")
    return result


def flat_scores(result: dict) -> dict[str, float]:
    """Every score of a metrics.json as one flat mapping (tasks, buckets, Avg, Avg>..., bucket averages)."""
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
    return flat


def metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: 'Avg>4k' -> 'Avg_gt_4k', '8k+' -> '8k_plus'."""
    return re.sub(r"[^\w\-. /]", "_", name.replace(">", "_gt_").replace("+", "_plus"))


def check_resume(pred_dir: Path, settings: dict, overwrite: bool) -> None:
    """Predictions are reused only when made with the same settings (per task)."""
    path = pred_dir / "settings.json"
    settings = json.loads(json.dumps(settings))
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("global") != settings["global"]:
            stale = sorted(t for t in old.get("tasks", {}) if (pred_dir / f"{t}.jsonl").exists())
        else:
            stale = [
                t for t in settings["tasks"] if t in old.get("tasks", {}) and old["tasks"][t] != settings["tasks"][t]
            ]
        if stale:
            if not overwrite:
                what = "model/benchmark/chat/bos/dtype" if old.get("global") != settings["global"] else "prompt budget"
                raise RopeextError(
                    f"{pred_dir} holds predictions for {', '.join(stale)} made with other settings "
                    f"({what}); pass --overwrite to discard them or choose another --output-dir"
                )
            for t in stale:
                (pred_dir / f"{t}.jsonl").unlink(missing_ok=True)
        if old.get("global") == settings["global"]:
            settings["tasks"] = {**old.get("tasks", {}), **settings["tasks"]}
    write_json(path, settings)
