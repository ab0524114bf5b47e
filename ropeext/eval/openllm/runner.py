"""Run lm-eval's ``simple_evaluate`` with ``HFLM`` over a model directory, one task entry at a time.

Each entry (a task, group or tag with its few-shot count) is evaluated by its own call and its
results appended to a resumable JSONL, so a rerun after an interruption continues with the
entries not yet done. Per-sample outputs go to a second resumable JSONL.

The Open LLM suite and the ``lm_eval`` engines of RULER and LongBench (``ropeext.eval.lmeval_engine``)
all build their model with ``make_lm`` and run their tasks with ``evaluate_entry``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ropeext.errors import RopeextError
from ropeext.eval.openllm.presets import check_known
from ropeext.modeling import check_weights, weights_error


class EntryError(RopeextError):
    """An lm-eval task that could not be built; ``cause`` is what lm-eval raised."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.cause = cause


def _plain(obj):
    """A JSON-safe copy (lm-eval results hold callables, numpy scalars, and the like)."""
    return json.loads(json.dumps(obj, default=_repr, allow_nan=True))


def _repr(obj):
    try:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return repr(obj) if callable(obj) else str(obj)


def task_manager(include_paths: Iterable[str | Path], names: list[str], metadata: dict | None = None):
    """A TaskManager that knows ``names``: only the local folders when they suffice (fast), else lm-eval's own too.

    ``metadata`` reaches every task's config (lm-eval's ``--metadata``: RULER's ``max_seq_lengths`` and
    tokenizer, for example).
    """
    # heavy: lm-eval loads only when its engine runs
    from lm_eval.tasks import TaskManager

    paths = [str(Path(p).resolve()) for p in include_paths]
    for p in paths:
        if not Path(p).is_dir():
            raise RopeextError(f"task folder not found: {p}")
    if paths:
        local = TaskManager(include_path=paths, include_defaults=False, metadata=metadata)
        if all(n in local.all_tasks for n in names):
            return local
    full = TaskManager(include_path=paths or None, include_defaults=True, metadata=metadata)
    where = "lm-eval's tasks" + (f" or the task folders {', '.join(paths)}" if paths else "")
    check_known(names, set(full.all_tasks), where)
    return full


def load_entry(tm, name: str, num_fewshot: int):
    """Build the task (or group/tag) ``name`` with ``num_fewshot`` on each of its tasks; load its data."""
    try:
        loaded = tm.load([name])
    except (KeyError, ValueError, TypeError) as exc:
        raise EntryError(f"lm-eval task {name!r} cannot be built: {exc}", exc) from None
    except Exception as exc:  # noqa: BLE001 - the dataset loader (hub, network, files) fails in many ways
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EntryError(
            f"lm-eval task {name!r}: its dataset could not be loaded ({type(exc).__name__}: {first}). "
            f"Offline, a hub task needs its dataset in the local Hugging Face cache (run it once with "
            f"network access, or set HF_DATASETS_OFFLINE=0); otherwise use the local tasks "
            f"(--preset local) or a task folder (--include-path) with dataset_path: json",
            exc,
        ) from None
    for task in loaded["tasks"].values():
        if (
            num_fewshot > 0
            and not task.has_training_docs()
            and not task.has_validation_docs()
            and task.config.fewshot_split is None
        ):
            raise RopeextError(
                f"lm-eval task {task.task_name!r} has no split to draw {num_fewshot} few-shot examples from"
            )
        task.set_config(key="num_fewshot", value=num_fewshot)
    top = [loaded["groups"][name]] if name in loaded.get("groups", {}) else list(loaded["tasks"].values())
    return top


def make_lm(
    model: str | Path, *, tokenizer: str | Path | None, max_length: int, batch_size: int | str, device: str, dtype: str
):
    """lm-eval's ``HFLM`` over a model directory (or hub id): the one model construction of every lm-eval run."""
    check_weights(model, deep=True)  # HFLM loads without telling which weights it initialised at random
    # heavy: lm-eval loads only when its engine runs
    from lm_eval.models.huggingface import HFLM

    try:
        return HFLM(
            pretrained=str(model),
            tokenizer=str(tokenizer) if tokenizer else None,
            max_length=int(max_length),
            batch_size=batch_size,
            device=device,
            dtype=dtype,
        )
    except Exception as exc:  # noqa: BLE001 - one line naming the model (and the weight file at fault)
        raise weights_error(model, exc) from None


def drop_arguments(sample: dict) -> dict:
    """A logged sample as stored by default: everything but the request arguments (the full prompt)."""
    return {k: v for k, v in sample.items() if k != "arguments"}


def evaluate_entry(
    lm,
    tm,
    name: str,
    num_fewshot: int,
    *,
    key: str,
    results_store,
    samples_store=None,
    limit: int | float | None = None,
    seed: int = 0,
    bootstrap_iters: int = 0,
    keep: Callable[[dict], dict] = drop_arguments,
) -> dict:
    """Evaluate one task entry under ``key`` unless ``results_store`` has it; return its record.

    The record holds lm-eval's results, versions, n-shot, sample counts and task configs; each
    logged sample goes to ``samples_store`` as ``keep`` shapes it.
    """
    # heavy: lm-eval loads only when its engine runs
    from lm_eval import simple_evaluate

    if key in results_store:
        return results_store.records[key]
    top = load_entry(tm, name, num_fewshot)
    res = simple_evaluate(
        model=lm,
        tasks=top,
        num_fewshot=None,
        task_manager=tm,
        limit=limit,
        bootstrap_iters=bootstrap_iters,
        log_samples=samples_store is not None,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if samples_store is not None:
        for task, samples in (res.get("samples") or {}).items():
            for s in samples:
                rec = _plain(keep(s))
                samples_store.append({"_id": f"{key}/{task}/{s['doc_id']}", "entry": key, "task": task, **rec})
    results_store.append(
        _plain(
            {
                "_id": key,
                "task": name,
                "num_fewshot": num_fewshot,
                "results": res["results"],
                "groups": res.get("groups", {}),
                "versions": res.get("versions", {}),
                "n-shot": res.get("n-shot", {}),
                "n-samples": res.get("n-samples", {}),
                "higher_is_better": res.get("higher_is_better", {}),
                "configs": res.get("configs", {}),
                "lm_eval_version": res.get("lm_eval_version"),
                "transformers_version": res.get("transformers_version"),
                "limit": limit,
                "seed": seed,
            }
        )
    )
    return results_store.records[key]


def evaluate_entries(
    lm,
    tm,
    entries: list[tuple[str, int]],
    *,
    results_store,
    samples_store=None,
    limit: int | float | None = None,
    seed: int = 0,
    bootstrap_iters: int = 0,
    progress=None,
) -> list[dict]:
    """Evaluate every (task, num_fewshot) entry not yet in ``results_store``; return all entry records."""
    out = []
    for name, shots in entries:
        out.append(
            evaluate_entry(
                lm,
                tm,
                name,
                shots,
                key=f"{name}:{shots}",
                results_store=results_store,
                samples_store=samples_store,
                limit=limit,
                seed=seed,
                bootstrap_iters=bootstrap_iters,
            )
        )
        if progress is not None:
            progress.update(1)
    return out
