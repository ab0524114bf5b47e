"""The RULER evaluation loop and its summary.

``evaluate`` walks tasks x lengths x samples, builds each sample, generates greedily through the
callable it is given and appends one record per sample to a resumable JSONL store, so a rerun
continues where it stopped. Records keep the prompt's hash and size, not the prompt (prompts are
rebuilt from the seed; at long lengths they would make the file huge).
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from ropeext.errors import RopeextError
from ropeext.eval.ruler.fit import TooShort, encode
from ropeext.eval.ruler.generate import Sources, make_sample
from ropeext.eval.ruler.metrics import RULER_THRESHOLD, average_by_length, effective_length, score_sample, task_scores
from ropeext.eval.ruler.tasks import describe_templates


def fingerprint(seed: int, templates: dict, sources: Sources, tokenizer) -> str:
    """A short hash of everything that shapes the prompts (a resumed run must match it)."""
    blob = json.dumps(
        {
            "seed": seed,
            "templates": templates,
            "essay": None if sources.essay is None else hashlib.sha256(sources.essay.text.encode()).hexdigest(),
            "qa": {k: [v.path, len(v.items), len(v.documents)] for k, v in sorted(sources.qa.items())},
            "tokenizer": [type(tokenizer).__name__, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id],
        },
        sort_keys=True,
        default=str,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def evaluate(
    generate: Callable[[list[int], int], str],
    tokenizer,
    *,
    tasks: list[str],
    lengths: list[int],
    num_samples: int,
    seed: int,
    sources: Sources,
    templates: dict,
    store,
    progress=None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], dict]:
    """Run (or resume) the grid; return the records and {task: {length: reason}} of skipped cells."""
    fp = fingerprint(seed, templates, sources, tokenizer)
    stale = [r["_id"] for r in store if r.get("fingerprint") != fp]
    if stale:
        raise RopeextError(
            f"{store.path}: holds predictions made with other settings (seed, templates, "
            f"sources or tokenizer), e.g. {stale[0]}; use another output folder or delete the file"
        )
    records: list[dict] = []
    skipped: dict[str, dict[str, str]] = {}
    for task in tasks:
        for length in lengths:
            hint = None
            for index in range(num_samples):
                _id = f"{task}/{length}/{index}"
                if _id in store:
                    records.append(store.records[_id])
                    if progress is not None:
                        progress.update(1)
                    continue
                try:
                    sample = make_sample(
                        task, length, index, tokenizer, seed=seed, sources=sources, templates=templates, hint=hint
                    )
                except TooShort as exc:
                    skipped.setdefault(task, {})[str(length)] = str(exc)
                    log(f"skipped {task} at length {length}: {exc}")
                    if progress is not None:
                        progress.update(num_samples - index)
                    break
                hint = sample["n_units"] or None
                prompt = sample.pop("prompt")
                ids = encode(tokenizer, prompt)
                prediction = generate(ids, sample["max_new_tokens"])
                record = {
                    **sample,
                    "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
                    "prediction": prediction,
                    "score": score_sample(sample["metric"], prediction, sample["answers"]),
                    "fingerprint": fp,
                }
                store.append(record)
                records.append(record)
                if progress is not None:
                    progress.update(1)
    return records, skipped


def summarize(
    records: list[dict],
    *,
    tasks: list[str],
    lengths: list[int],
    subset: str,
    threshold: float = RULER_THRESHOLD,
    skipped: dict | None = None,
    templates: dict | None = None,
) -> dict:
    """Per task per length (x100), the average over tasks per length, its mean, the effective length, the sample
    counts and score sums behind them, and (given the templates) where each task kind's prompt wording came from."""
    scores = task_scores(records)
    avg = average_by_length(scores, tasks, lengths)
    ran = [t for t in tasks if t in scores]
    partial = {}
    for L in lengths:
        vals = [scores[t][L] for t in ran if L in scores[t]]
        partial[L] = round(sum(vals) / len(vals), 2) if vals else None
    counts: dict[str, dict[str, int]] = {}
    sums: dict[str, dict[str, float]] = {}
    for r in records:
        c = counts.setdefault(r["task"], {})
        c[str(r["length"])] = c.get(str(r["length"]), 0) + 1
        t = sums.setdefault(r["task"], {})
        t[str(r["length"])] = t.get(str(r["length"]), 0.0) + float(r["score"])
    full = [v for v in avg.values() if v is not None]
    return {
        "benchmark": "ruler",
        "subset": subset,
        "tasks": list(tasks),
        "lengths": list(lengths),
        "threshold": threshold,
        "scores": {t: {str(L): v for L, v in s.items()} for t, s in scores.items()},
        "average": {str(L): v for L, v in avg.items()},
        "avg": round(sum(full) / len(full), 2) if full and len(full) == len(lengths) else None,
        "effective_length": effective_length(avg, threshold),
        "average_of_tasks_run": {str(L): v for L, v in partial.items()},
        "samples": counts,
        # per task and length the sum of the samples' scores in [0, 1] (the number correct where a score is 0 or 1):
        # with ``samples`` what an interval of each score needs
        "score_sum": {t: {L: round(v, 6) for L, v in by.items()} for t, by in sums.items()},
        "skipped": skipped or {},
        **(describe_templates(templates) if templates is not None else {}),
    }


def flat_metrics(metrics: dict) -> dict[str, float]:
    """The scalar metrics logged to MLflow: per task and length, the average per length and overall, the
    effective length."""
    logged = {f"ruler.{t}_at_{L}": v for t, by in metrics["scores"].items() for L, v in by.items()}
    logged |= {f"ruler.avg_at_{L}": v for L, v in metrics["average"].items() if v is not None}
    if metrics["avg"] is not None:
        logged["ruler.avg"] = metrics["avg"]
    if metrics["effective_length"] is not None:
        logged["ruler.effective_length"] = metrics["effective_length"]
    return logged


def log_by_length(run, metrics: dict) -> None:
    """The average over tasks with the context length as the step: one curve per run in MLflow's charts."""
    for L, v in metrics["average"].items():
        if v is not None:
            run.log_metrics({"ruler.avg_by_length": v}, step=int(L))


def check_any_ran(records: list[dict], skipped: dict) -> None:
    """A suite in which every cell was skipped measured nothing: one RopeextError saying why each was."""
    if records:
        return
    reasons = sorted({reason for by_length in skipped.values() for reason in by_length.values()})
    cells = sum(len(by_length) for by_length in skipped.values())
    raise RopeextError(
        f"RULER: every cell was skipped ({cells} task x length cells), nothing was measured: "
        + ("; ".join(reasons) if reasons else "no task to run")
    )
