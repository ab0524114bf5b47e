"""RULER through lm-eval's own tasks (``eval.ruler.engine: lm_eval``).

Each (task, length) is one lm-eval entry: the task is built with lm-eval's ``max_seq_lengths``
metadata set to that one length and the model's tokenizer, so lm-eval generates that length's
samples (500, as RULER) and ``limit`` keeps the first ``eval.ruler.samples`` of them. lm-eval scores
each sample under a metric named by its length (the other lengths get -1, which it ignores when
aggregating). The per-sample scores of the logged samples are summarised as the ropeext engine
summarises its own (``ropeext.eval.ruler.run.summarize``: mean x 100 per task and length, average
over tasks, effective length), under this project's task names, so the report reads both alike;
lm-eval's own aggregate of each entry is kept beside them (``lm_eval_scores``).

A length at which lm-eval cannot build a single sample (it raises ``ValueError``) is recorded as
skipped for that task, as the ropeext engine records a task too long for a length.

lm-eval generates the data when it builds a task, with the model's tokenizer; what it fetches for that
is loaded first by ``problems`` through lm-eval's own RULER functions: the essay haystack (a hub
dataset) and the sentence splitter's nltk data for the essay tasks, the SQuAD / HotpotQA files (fetched
at every run, no copy kept) for the QA tasks.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ropeext import tracking
from ropeext.eval.lmeval_engine import common
from ropeext.eval.openllm import runner
from ropeext.eval.ruler import report
from ropeext.eval.ruler.run import flat_metrics, log_by_length, summarize
from ropeext.eval.ruler.tasks import TASKS, resolve_tasks
from ropeext.io import write_json
from ropeext.runtime import given_precision, precision_params, resolve_device

FOLDER = "ruler"
# lm-eval's name of each of this project's RULER tasks
LM_EVAL_TASKS = {
    **{t: t for t in TASKS if t.startswith("niah")},
    "vt": "ruler_vt",
    "cwe": "ruler_cwe",
    "fwe": "ruler_fwe",
    "qa_1": "ruler_qa_squad",
    "qa_2": "ruler_qa_hotpot",
}
FIX = (
    "To get it: on a machine with network access and this machine's HF_HOME / HF_DATASETS_CACHE and NLTK_DATA "
    "(or copy those caches here afterwards), run\n"
    "  python -c \"from lm_eval.tasks.ruler import prepare_niah as p; p.get_haystack(type_haystack='essay'); "
    "p.cached_sent_tokenize('One. Two.')\"\n"
    "The QA files have no cache: run with network access, or leave their tasks out (eval.ruler.tasks)."
)


def problems(settings: dict) -> list[str]:
    """The RULER suite's message, for the resolved ``eval.ruler`` section (``tasks`` / ``subset``), or []."""
    return common.checked("ruler", lambda: _problems(settings))


def _problems(settings: dict) -> list[str]:
    tasks, _ = resolve_tasks(settings.get("tasks"), settings.get("subset"))
    common.task_manager(FOLDER, [LM_EVAL_TASKS[t] for t in tasks])  # every name known to lm-eval
    try:  # heavy, and imports nltk and wonderwords: only this engine needs them
        # its import tries to download nltk data and prints about it; what is missing is reported below
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            # heavy: lm-eval loads only when its engine runs
            from lm_eval.tasks.ruler import prepare_niah, qa_utils
    except ImportError as exc:
        return [
            f"eval.ruler.engine: lm_eval: lm-eval's RULER tasks cannot be imported ({common.first_line(exc)}); "
            "install the versions pinned in requirements.lock"
        ]
    essay = [t for t in tasks if TASKS[t].get("haystack") == "essay"]
    probes = []
    if essay:
        probes += [
            (
                "the essay haystack (prepare_niah.get_haystack)",
                essay,
                lambda: prepare_niah.get_haystack(type_haystack="essay"),
            ),
            (
                "the sentence splitter's nltk data (prepare_niah.cached_sent_tokenize)",
                essay,
                lambda: prepare_niah.cached_sent_tokenize("One. Two."),
            ),
        ]
    for task, reader in (("qa_1", qa_utils.read_squad), ("qa_2", qa_utils.read_hotpotqa)):
        if task in tasks:
            probes.append(
                (
                    f"the {TASKS[task]['dataset']} file (qa_utils.{reader.__name__}, fetched at every run)",
                    [task],
                    reader,
                )
            )
    failures = [
        f"- {what}, for {', '.join(on)}: {reason}"
        for what, on, call in probes
        if (reason := common.attempt(call)) is not None
    ]
    return common.suite_message("ruler", "RULER", failures, FIX)


def entry_key(name: str, length: int) -> str:
    return f"{name}@{length}"


def sample_records(samples_store, keys: dict[str, tuple[str, int]]) -> list[dict]:
    """RULER records (task, length, index, score, prediction, answers) from lm-eval's logged samples of
    the entries ``keys`` ({entry key: (task, length)}); the score is the sample's metric for its length."""
    records = []
    for key, (task, length) in keys.items():
        for s in common.entry_samples(samples_store, key):
            resps = s.get("filtered_resps") or [""]
            records.append(
                {
                    "task": task,
                    "length": length,
                    "index": int(s["doc_id"]),
                    "score": float(s[str(length)]),
                    "prediction": resps[0],
                    "answers": s.get("target"),
                }
            )
    return records


def lm_eval_score(entry: dict, name: str, length: int) -> float | None:
    """lm-eval's aggregate of one entry at its length, x100 (None when it reports none or -1)."""
    value = (entry.get("results", {}).get(name) or {}).get(f"{length},none")
    if not isinstance(value, (int, float)) or value < 0:
        return None
    return round(100.0 * float(value), 2)


def build_metrics(
    records: list[dict],
    entries: dict[tuple[str, int], dict],
    *,
    names: dict[str, str],
    tasks: list[str],
    lengths: list[int],
    subset: str,
    threshold: float,
    skipped: dict,
    samples: int,
    meta: dict,
) -> dict:
    """The RULER metrics JSON of an lm_eval run: the ropeext engine's shape plus what lm-eval ran."""
    summary = summarize(records, tasks=tasks, lengths=lengths, subset=subset, threshold=threshold, skipped=skipped)
    first = {}
    for (task, _), entry in entries.items():
        first.setdefault(task, entry)
    versions = sorted({e.get("lm_eval_version") for e in entries.values() if e.get("lm_eval_version")})
    version = versions[0] if len(versions) == 1 else (versions or common.version())
    return {
        **meta,
        "samples_per_cell": samples,
        **summary,
        "engine": "lm_eval",
        "lm_eval_version": version,
        "lm_eval_tasks": {t: names[t] for t in tasks},
        "lm_eval_scores": {
            t: {str(L): lm_eval_score(e, names[t], L) for (tt, L), e in entries.items() if tt == t} for t in tasks
        },
        "lm_eval_config": {t: (e.get("configs") or {}).get(names[t]) for t, e in first.items()},
        "template_source": {TASKS[t]["kind"]: f"lm-eval {version}'s RULER tasks" for t in tasks},
    }


def evaluate(
    settings: dict,
    *,
    model: str,
    output_dir: str | Path,
    window: int | None,
    tokenizer: str | None = None,
    dtype: str = "float32",
    precision: dict | None = None,
    device: str = "auto",
    config: dict | None = None,
    variant: str | None = None,
    mlflow: bool = True,
    progress: bool = True,
) -> dict:
    """Run lm-eval's RULER tasks for the resolved ``eval.ruler`` section; write and return metrics.json.

    ``precision`` (``ropeext.runtime.choose_eval_dtype``) says how the dtype was chosen; it replaces ``dtype``."""
    # heavy: tqdm (with asyncio) adds ~0.1 s to --help and the workflow parse; only a run draws a bar
    from tqdm import tqdm

    common.fail_on(problems(settings))
    precision = given_precision(dtype, precision)
    dtype = precision["dtype"]
    tasks, subset = resolve_tasks(settings["tasks"], settings["subset"])
    names = {t: LM_EVAL_TASKS[t] for t in tasks}
    lengths = sorted(dict.fromkeys(int(L) for L in settings["lengths"]))
    samples, seed = int(settings["samples"]), int(settings["seed"])
    tok = str(tokenizer or model)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_length = max(lengths)
    common.fresh_state(
        out,
        {
            "engine": "lm_eval",
            "model": common.model_id(model),
            "tokenizer": common.model_id(tok),
            "max_length": max_length,
            "dtype": dtype,
            "seed": seed,
            "samples": samples,
            "lm_eval": common.version(),
        },
        "ruler",
    )
    results_store, samples_store = common.stores(out)
    device = resolve_device(device)
    variant = variant or Path(str(model).rstrip("/")).name
    keys = {entry_key(names[t], L): (t, L) for t in tasks for L in lengths}
    params = {
        "eval.ruler": dict(settings),
        "engine": "lm_eval",
        "lm_eval_tasks": names,
        "model": str(model),
        **precision_params(precision),
        "device": device,
        "max_length": max_length,
    }
    with tracking.stage_run("eval_ruler", config=config, params=params, variant=variant, enabled=mlflow) as run_:
        lm = runner.make_lm(model, tokenizer=tokenizer, max_length=max_length, batch_size=1, device=device, dtype=dtype)
        entries, skipped = {}, {}
        with tqdm(total=len(keys), desc="ruler (lm-eval)", unit="entry", disable=not progress) as bar:
            for key, (task, length) in keys.items():
                try:
                    tm = (
                        None
                        if key in results_store
                        else common.task_manager(FOLDER, [names[task]], {"max_seq_lengths": [length], "tokenizer": tok})
                    )
                    entries[(task, length)] = runner.evaluate_entry(
                        lm,
                        tm,
                        names[task],
                        0,
                        key=key,
                        results_store=results_store,
                        samples_store=samples_store,
                        limit=samples,
                        seed=seed,
                        keep=common.keep_sample,
                    )
                except runner.EntryError as exc:
                    if not isinstance(exc.cause, ValueError):
                        raise
                    reason = str(exc.cause).strip().splitlines()[0] if str(exc.cause).strip() else "no samples"
                    skipped.setdefault(task, {})[str(length)] = f"lm-eval built no sample: {reason}"
                    tqdm.write(f"skipped {task} at length {length}: {reason}")
                bar.update(1)
        done = {k: v for k, v in keys.items() if (v[0], v[1]) in entries}
        records = sample_records(samples_store, done)
        meta = {"variant": variant, "model": str(model), "window": window, "max_length": max_length, "seed": seed}
        meta["precision"] = precision
        metrics = build_metrics(
            records,
            entries,
            names=names,
            tasks=tasks,
            lengths=lengths,
            subset=subset,
            threshold=float(settings["threshold"]),
            skipped=skipped,
            samples=samples,
            meta=meta,
        )
        write_json(out / "metrics.json", metrics)
        report.plot_overview(metrics, out / "heatmap.png")
        report.plot_task_heatmaps(records, lengths, out / "heatmaps")
        run_.log_metrics(flat_metrics(metrics))
        log_by_length(run_, metrics)
        run_.set_tags({"ruler.subset": subset, "ruler.engine": "lm_eval", "lm_eval.version": common.version()})
        run_.log_outputs(out)
        run_.log_artifact(out / "predictions.jsonl")
    return metrics
