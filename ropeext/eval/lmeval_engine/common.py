"""What the lm_eval engines of RULER and LongBench share: lm-eval's task folder, the start check's message, resumable
state, stored samples.

A run writes, under its output folder, ``results.jsonl`` (lm-eval's results of each task entry, one
line per entry, resumable), ``predictions.jsonl`` (the samples lm-eval logs, with the request
arguments dropped and long document fields replaced by their hash and size) and ``state.json``
(the settings the stored entries were made with; other settings start over).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

from ropeext.errors import RopeextError
from ropeext.eval.common import ResumableJsonl
from ropeext.eval.openllm import runner
from ropeext.eval.openllm.runner import drop_arguments
from ropeext.io import read_json, write_json

LONG_TEXT = 2000  # document fields longer than this (characters) are stored as hash and size


def fail_on(problems: list[str]) -> None:
    """Stop with the offline check's messages, before anything is loaded."""
    if problems:
        raise RopeextError("\n\n".join(problems))


def version() -> str:
    return importlib.metadata.version("lm_eval")


def first_line(exc: BaseException) -> str:
    """What an exception says, on one line (its first with words: nltk frames its messages in stars), with its type."""
    line = next((x.strip() for x in str(exc).splitlines() if any(c.isalnum() for c in x)), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def task_manager(folder: str, names: list[str], metadata: dict | None = None):
    """A TaskManager over one folder of lm-eval's own tasks, ``lm_eval.tasks.<folder>``, the package lm-eval
    indexes by default (indexing one folder takes milliseconds, all of lm-eval's tasks seconds)."""
    import lm_eval.tasks  # heavy: only the lm_eval engine needs it

    return runner.task_manager([Path(lm_eval.tasks.__file__).parent / folder], names, metadata)


def _short(value):
    if isinstance(value, str) and len(value) > LONG_TEXT:
        return {"sha256": hashlib.sha256(value.encode()).hexdigest(), "chars": len(value)}
    return value


def keep_sample(sample: dict) -> dict:
    """A logged sample as stored: no request arguments (the full prompt), long document fields as hash and size."""
    out = drop_arguments(sample)
    if isinstance(out.get("doc"), dict):
        out["doc"] = {k: _short(v) for k, v in out["doc"].items()}
    return out


def fresh_state(out: Path, fingerprint: dict, label: str) -> None:
    """Keep earlier entries only when they were made with the same settings."""
    state = out / "state.json"
    if state.exists() and read_json(state) != fingerprint:
        for name in ("results.jsonl", "predictions.jsonl"):
            (out / name).unlink(missing_ok=True)
        print(f"{label}: settings changed since the last run in {out}; starting over")
    write_json(state, fingerprint)


def stores(out: Path):
    """The resumable results and predictions files of a run."""
    return ResumableJsonl(out / "results.jsonl", key="_id"), ResumableJsonl(out / "predictions.jsonl", key="_id")


def model_id(model) -> str:
    """A model directory as an absolute path (a hub id as given): what the state fingerprint records."""
    return str(Path(model).resolve()) if Path(str(model)).is_dir() else str(model)


def entry_samples(samples_store, key: str) -> list[dict]:
    """The stored samples of one entry, in document order."""
    return sorted((r for r in samples_store if r.get("entry") == key), key=lambda r: int(r["doc_id"]))


def attempt(call) -> str | None:
    """None when ``call()`` succeeds, else what it raised on one line."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - datasets, requests and nltk fail in many ways
        return first_line(exc)
    return None


def suite_message(suite: str, title: str, failures: list[str], fix: str) -> list[str]:
    """One message for ``suite``: each failure (``- what, for tasks: what lm-eval said``), how to get it, the
    other engine."""
    if not failures:
        return []
    return [
        "\n".join(
            [
                f"eval.{suite}.engine: lm_eval runs lm-eval {version()}'s own {title} tasks, which could "
                "not load what they need here:",
                *failures,
                fix,
                f"Or set eval.{suite}.engine: ropeext (this project's offline implementation).",
            ]
        )
    ]


def checked(suite: str, check) -> list[str]:
    """``check()``'s messages; a RopeextError (an unknown task, say) as one message of ``suite``."""
    try:
        return check()
    except RopeextError as exc:
        return [f"eval.{suite}.engine: lm_eval: {exc}"]
