"""The Open LLM metrics JSON and the variants-as-rows table."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ropeext.errors import RopeextError
from ropeext.eval.openllm.presets import headline_metric, is_percent
from ropeext.io import read_json


def split_metrics(raw: dict) -> dict[str, float]:
    """lm-eval's ``{"acc,none": .., "acc_stderr,none": .., "alias": ..}`` -> ``{"acc": .., "acc_stderr": ..}``.

    The ``none`` filter is dropped from the name; other filters stay (``exact_match,strict-match``).
    """
    out = {}
    for key, value in raw.items():
        if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric, _, filt = key.partition(",")
        out[metric if filt == "none" else f"{metric},{filt}"] = float(value)
    return out


def build_metrics(
    records: list[dict],
    *,
    variant: str,
    model: str,
    max_length: int,
    preset: str | None,
    local_tasks: dict | None = None,
) -> dict:
    """One JSON for one variant: per entry its metrics, headline score, version, n-shot and config."""
    # heavy: lm-eval loads only when its engine runs
    import lm_eval

    tasks = {}
    for rec in records:
        name = rec["task"]
        res = rec["results"]
        metrics = split_metrics(res.get(name) or rec.get("groups", {}).get(name) or {})
        if not metrics and len(res) == 1:  # a tag: one task under another name
            metrics = split_metrics(next(iter(res.values())))
        head = headline_metric(name, metrics)
        tasks[name] = {
            "num_fewshot": rec["num_fewshot"],
            "metrics": metrics,
            "headline": head,
            "score": metrics.get(head) if head else None,
            "version": rec["versions"].get(name),
            "subtasks": {t: split_metrics(m) for t, m in res.items() if t != name},
            "versions": rec["versions"],
            "n_shot": rec["n-shot"],
            "n_samples": rec["n-samples"],
            "configs": rec["configs"],
        }
    percent = [t["score"] for t in tasks.values() if t["score"] is not None and is_percent(t["headline"])]
    return {
        "task": "openllm",
        "variant": variant,
        "model": model,
        "max_length": max_length,
        "preset": preset,
        "lm_eval_version": (records[0].get("lm_eval_version") if records else None) or lm_eval.__version__,
        "transformers_version": records[0].get("transformers_version") if records else None,
        "average": sum(percent) / len(percent) if percent else None,
        "tasks": tasks,
        "local_tasks": local_tasks,
    }


def flat_metrics(metrics: dict) -> dict[str, float]:
    """Scalar metrics for MLflow: ``openllm.<task>.<metric>`` and ``openllm.average``."""
    out = {}
    for task, t in metrics["tasks"].items():
        for m, v in t["metrics"].items():
            out[f"openllm.{task}.{m.replace(',', '.')}"] = v
    if metrics.get("average") is not None:
        out["openllm.average"] = metrics["average"]
    return out


def summary_table(metrics: Iterable[dict | str | Path]):
    """Variants as rows, each task's headline metric as a column (x100 for accuracies), and ``Avg``.

    ``Avg`` is the mean over the accuracy-like columns only (as the DPRoPE paper's Table 2); a
    perplexity-like column (bits per byte) stays as it is. Returns a pandas DataFrame.
    """
    # heavy: pandas loads only when tables are built
    import pandas as pd

    rows = {}
    for m in metrics:
        if not isinstance(m, dict):
            m = read_json(m, "Open LLM metrics JSON")
        if m.get("task") != "openllm":
            raise RopeextError(f"not an Open LLM metrics JSON (task={m.get('task')!r}): {m.get('variant')}")
        row = {}
        for task, t in m["tasks"].items():
            if t["score"] is None:
                continue
            pct = is_percent(t["headline"])
            row[task] = round(100.0 * t["score"] if pct else t["score"], 2 if pct else 4)
        percent = [
            100.0 * t["score"] for t in m["tasks"].values() if t["score"] is not None and is_percent(t["headline"])
        ]
        row["Avg"] = round(sum(percent) / len(percent), 2) if percent else float("nan")
        rows[m.get("variant") or m.get("model", "?")] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df = df[[c for c in df.columns if c != "Avg"] + ["Avg"]]
    df.index.name = "variant"
    return df
