"""LongBench / LongBench-E through lm-eval's own tasks (``eval.longbench.engine: lm_eval``).

Each LongBench task is lm-eval's ``longbench_<task>`` (``longbench_<task>_e`` for LongBench-E), its
data the hub dataset its task file names (read from the datasets cache when offline), its prompt,
generation length and scorer lm-eval's. lm-eval gives the model ``max_length`` tokens (the model's
window) and keeps the last ``max_length - max_gen_toks`` prompt tokens (LongBench's own script
cuts the middle out instead); no chat template. ``eval.longbench.limit`` keeps the first N samples
of each task.

Each logged sample carries lm-eval's per-sample ``score`` (0-1) and the record's ``length`` (words);
task scores and LongBench-E's length buckets are aggregated from them as the official scorers do
(``ropeext.eval.longbench.metrics.aggregate`` / ``aggregate_bucket``), and summarised in the shape
of the ropeext engine's metrics.json (``ropeext.eval.longbench.results``), so the report reads both
alike. lm-eval's own mean of each task is kept beside it (``lm_eval_scores``), and what it ran with
(dataset, prompt, generation length) is read back from the task configs it reports.

``problems`` builds each task through lm-eval's TaskManager first, which loads its hub dataset with
``datasets`` (from the local cache when offline), and explains what fails.
"""

from __future__ import annotations

from pathlib import Path

from ropeext import tracking
from ropeext.errors import RopeextError
from ropeext.eval.lmeval_engine import common
from ropeext.eval.longbench import results
from ropeext.eval.longbench.metrics import aggregate, base_task
from ropeext.eval.longbench.protocol import EMBEDDED_TASK, LONGBENCH_E_TASKS, LONGBENCH_TASKS
from ropeext.eval.longbench.run import flat_scores, metric_key
from ropeext.eval.openllm import runner
from ropeext.io import write_json
from ropeext.modeling import load_model_config
from ropeext.runtime import given_precision, model_window, precision_params, resolve_device

FOLDER = "longbench"
FIX = (
    "To get it: on a machine with network access and this machine's HF_HOME / HF_DATASETS_CACHE (or copy that "
    'cache here afterwards), run\n  python -c "from lm_eval.tasks import TaskManager; TaskManager().load({names!r})"'
)
PROTOCOL_NOTES = (
    "prompts longer than the window lose their beginning (lm-eval keeps the last max_length - max_gen_toks "
    "tokens); LongBench's script cuts the middle out",
    "no chat template (lm-eval's default)",
)


def task_list(settings: dict) -> list[str]:
    """The LongBench tasks of the resolved ``eval.longbench`` section: ``tasks``, or the whole benchmark."""
    default = LONGBENCH_E_TASKS if settings["benchmark"] == "longbench-e" else LONGBENCH_TASKS
    tasks = [base_task(t) for t in (settings.get("tasks") or default)]
    if EMBEDDED_TASK in tasks:
        raise RopeextError(
            f"eval.longbench.tasks: {EMBEDDED_TASK} is this project's embedded task, which lm-eval "
            "does not have; with eval.longbench.engine: lm_eval name LongBench tasks only"
        )
    return list(dict.fromkeys(tasks))


def lm_eval_names(settings: dict) -> dict[str, str]:
    """{task: lm-eval's task name} (``longbench_<task>``, ``longbench_<task>_e`` for LongBench-E)."""
    suffix = "_e" if settings["benchmark"] == "longbench-e" else ""
    return {t: f"longbench_{t}{suffix}" for t in task_list(settings)}


def problems(settings: dict) -> list[str]:
    """The LongBench suite's message, for the resolved ``eval.longbench`` section (``benchmark`` / ``tasks``), or []."""
    return common.checked("longbench", lambda: _message(settings, load_tasks(settings)[0]))


def load_tasks(settings: dict) -> tuple[dict[str, str], dict[str, int]]:
    """Each task built through lm-eval's TaskManager (which loads its dataset): {task: why it failed} and
    {task: lm-eval's generation length} of those built."""
    names = lm_eval_names(settings)
    tm = common.task_manager(FOLDER, list(names.values()))
    failures, gen = {}, {}
    for task, name in names.items():
        try:
            [built] = tm.load([name])["tasks"].values()
        except Exception as exc:  # noqa: BLE001 - the dataset loader (hub, network, files) fails in many ways
            failures[task] = common.first_line(exc)
            continue
        gen[task] = int((built.config.generation_kwargs or {}).get("max_gen_toks") or 0)
    return failures, gen


def _message(settings: dict, failures: dict[str, str]) -> list[str]:
    names = lm_eval_names(settings)
    title = "LongBench-E" if settings["benchmark"] == "longbench-e" else "LongBench"
    return common.suite_message(
        "longbench",
        title,
        [f"- the data of {names[t]}, for {t}: {r}" for t, r in failures.items()],
        FIX.format(names=[names[t] for t in failures]),
    )


def task_record(samples: list[dict], buckets) -> dict:
    """One task's scores from lm-eval's logged samples (``score`` in 0-1, ``doc.length`` in words)."""
    scores = [float(s["score"]) for s in samples]
    specific = sorted({m for s in samples for m in s.get("metrics") or () if m != "score"})
    out = {"metric": specific[0] if len(specific) == 1 else "score", "n": len(samples), "score": aggregate(scores)}
    if buckets is not None:
        out["buckets"] = results.bucket_scores(scores, [float(s["doc"]["length"]) for s in samples], buckets)
        out["bucket_unit"] = buckets.unit
    else:
        out["scores"] = scores
    return out


def build_metrics(
    samples: dict[str, list[dict]], entries: dict[str, dict], *, names: dict[str, str], benchmark: str, meta: dict
) -> dict:
    """The LongBench metrics JSON of an lm_eval run, in the ropeext engine's shape plus what lm-eval ran."""
    buckets = results.STANDARD_BUCKETS if benchmark == "longbench-e" else None
    tasks = {t: task_record(samples[t], buckets) for t in samples}
    summary = {
        "tasks": list(tasks),
        "buckets": list(buckets.names) if buckets else None,
        "edges": list(buckets.edges) if buckets else None,
        "unit": buckets.unit if buckets else None,
    }
    summary.update(results.summarize(tasks, buckets))
    out = {**meta, "benchmark": benchmark, "engine": "lm_eval", "tasks": tasks, "summaries": [summary]}
    out.update({k: v for k, v in summary.items() if k != "tasks"})
    versions = sorted({e.get("lm_eval_version") for e in entries.values() if e.get("lm_eval_version")})
    out["lm_eval_version"] = versions[0] if len(versions) == 1 else (versions or common.version())
    out["lm_eval_tasks"] = {t: names[t] for t in samples}
    out["lm_eval_scores"] = {}
    for t in samples:
        value = (entries[t].get("results", {}).get(names[t]) or {}).get("score,none")
        out["lm_eval_scores"][t] = round(100.0 * value, 2) if isinstance(value, (int, float)) else None
    out["lm_eval_config"] = configs = {t: (entries[t].get("configs") or {}).get(names[t]) or {} for t in samples}
    out["max_new_tokens"] = {t: (c.get("generation_kwargs") or {}).get("max_gen_toks") for t, c in configs.items()}
    out["prompt_source"] = {t: f"lm-eval {out['lm_eval_version']}: {names[t]}" for t in samples}
    out["data"] = {
        t: ":".join(filter(None, (c.get("dataset_path"), c.get("dataset_name")))) for t, c in configs.items()
    }
    return out


def evaluate(
    settings: dict,
    *,
    model: str,
    output_dir: str | Path,
    tokenizer: str | None = None,
    dtype: str = "float32",
    precision: dict | None = None,
    device: str = "auto",
    config: dict | None = None,
    variant: str | None = None,
    mlflow: bool = True,
    progress: bool = True,
) -> dict:
    """Run lm-eval's LongBench(-E) tasks for the resolved ``eval.longbench`` section; write and return metrics.json.

    ``precision`` (``ropeext.runtime.choose_eval_dtype``) says how the dtype was chosen; it replaces ``dtype``."""
    # heavy: tqdm (with asyncio) adds ~0.1 s to --help and the workflow parse; only a run draws a bar
    from tqdm import tqdm

    precision = given_precision(dtype, precision)
    dtype = precision["dtype"]
    failures, gen = load_tasks(settings)
    common.fail_on(_message(settings, failures))
    benchmark = settings["benchmark"]
    names = lm_eval_names(settings)
    window = model_window(load_model_config(model, "--model"))
    if not window:
        raise RopeextError(f"{model}: config has no max_position_embeddings, so lm-eval's window is unknown")
    short = {t: n for t, n in gen.items() if n >= window}
    if short:
        raise RopeextError(
            f"{model}: a window of {window} tokens leaves no room for a prompt before lm-eval's "
            f"generation length of {', '.join(f'{t} ({n})' for t, n in short.items())}"
        )
    limit, seed = settings.get("limit"), int(settings["seed"])
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    common.fresh_state(
        out,
        {
            "engine": "lm_eval",
            "model": common.model_id(model),
            "tokenizer": common.model_id(tokenizer or model),
            "max_length": window,
            "dtype": dtype,
            "seed": seed,
            "limit": limit,
            "lm_eval": common.version(),
        },
        "longbench",
    )
    results_store, samples_store = common.stores(out)
    device = resolve_device(device)
    variant = variant or Path(str(model).rstrip("/")).name
    params = {
        "eval.longbench": {k: v for k, v in settings.items() if k != "embedded"},
        "engine": "lm_eval",
        "lm_eval_tasks": names,
        "model": str(model),
        "window": window,
        "device": device,
        **precision_params(precision),
    }
    with tracking.stage_run("eval_longbench", config=config, params=params, variant=variant, enabled=mlflow) as run_:
        lm = runner.make_lm(model, tokenizer=tokenizer, max_length=window, batch_size=1, device=device, dtype=dtype)
        entries, samples = {}, {}
        with tqdm(total=len(names), desc="longbench (lm-eval)", unit="task", disable=not progress) as bar:
            for task, name in names.items():
                tm = None if name in results_store else common.task_manager(FOLDER, [name])
                entries[task] = runner.evaluate_entry(
                    lm,
                    tm,
                    name,
                    0,
                    key=name,
                    results_store=results_store,
                    samples_store=samples_store,
                    limit=limit,
                    seed=seed,
                    keep=common.keep_sample,
                )
                samples[task] = common.entry_samples(samples_store, name)
                bar.update(1)
        meta = {
            "variant": variant,
            "model": str(model),
            "window": window,
            "max_length": window,
            "limit": limit,
            "limit_scope": "task",
            "protocol_notes": list(PROTOCOL_NOTES),
            "chat_template": "never",
            "precision": precision,
        }
        metrics = build_metrics(samples, entries, names=names, benchmark=benchmark, meta=meta)
        write_json(out / "metrics.json", metrics)
        results.plot_buckets(metrics, out / "longbench.png")
        run_.log_metrics({metric_key(k): v for k, v in flat_scores(metrics).items()})
        run_.set_tags({"longbench.engine": "lm_eval", "lm_eval.version": common.version()})
        run_.log_outputs(out)
        run_.log_artifact(out / "predictions.jsonl")
    return metrics
