"""A job's warnings, collected where people look: its MLflow run, the report and the end of the workflow.

What is collected (``about_inputs``): ropeext's own warnings, those printed with ``note`` (``warning:
...`` on stderr: skipped corpus files, a model file copied instead of linked, ...) and Python warnings
whose category is defined in ropeext or that ropeext code raises (a non-integer scale L'/L, a metric
MLflow could not store, ...). Warnings of libraries (deprecations, their own notices) stay in the job's
log only: they say nothing about the user's inputs.

Where they go, when a job's MLflow run (``ropeext.tracking.stage_run``) ends, also when it fails:

- the run's tag ``ropeext.warnings`` (one line per warning);
- when the environment names a folder (``ROPEEXT_WARNINGS_DIR``; the workflow sets
  ``<results_dir>/warnings``), a record ``<job>.json`` there (rule, wildcards, stage, variant, the
  workflow invocation and the warnings), removed again when a rerun of the job no longer warns. The
  report's Warnings section reads these records, and the end of the workflow prints those of its own
  invocation (``ROPEEXT_INVOCATION``, set once per workflow run).
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ropeext.io import write_text

DIR_ENV = "ROPEEXT_WARNINGS_DIR"
INVOCATION_ENV = "ROPEEXT_INVOCATION"
TAG = "ropeext.warnings"
TAG_LIMIT = 5000  # characters of the MLflow tag (a longer text ends with how many warnings it leaves out)

_PACKAGE = str(Path(__file__).resolve().parent)
_pending: list[dict] = []  # this process's warnings since the last job's run ended


def about_inputs(category: type, filename: str) -> bool:
    """Whether a Python warning is ropeext's own: its category is defined in ropeext, or ropeext code raised it."""
    if (getattr(category, "__module__", "") or "").split(".")[0] == "ropeext":
        return True
    return os.path.abspath(filename or "").startswith(_PACKAGE + os.sep)


def _record(category: str, message: str) -> None:
    item = {"category": category, "message": message.strip()}
    if item not in _pending:
        _pending.append(item)


def note(message: str) -> None:
    """Print ``warning: <message>`` on stderr and keep it for the job's run, the report and the workflow's end."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
    _record("warning", message)


def install(show=None) -> None:
    """Record every warning Python shows that is ropeext's own; ``show`` prints it (default: the printer in
    place, Python's own unless something replaced it). Calling it again only replaces the printer."""
    current = warnings.showwarning
    inner = show or getattr(current, "_ropeext_inner", current)
    if getattr(current, "_ropeext_inner", None) is inner:
        return

    def hook(message, category, filename, lineno, file=None, line=None):
        if about_inputs(category, filename):
            _record(category.__name__, str(message))
        inner(message, category, filename, lineno, file, line)

    hook._ropeext_inner = inner
    warnings.showwarning = hook


def take() -> list[dict]:
    """The warnings recorded since the last call, in the order they first came."""
    found = list(_pending)
    _pending.clear()
    return found


def job_name(stage: str, variant: str | None) -> dict:
    """Who warned: the workflow's rule and wildcards (ROPEEXT_RULE / ROPEEXT_WILDCARDS), the stage, the variant."""
    rule, wildcards = os.environ.get("ROPEEXT_RULE", ""), os.environ.get("ROPEEXT_WILDCARDS", "")
    return {"rule": rule, "wildcards": wildcards, "stage": stage, "variant": variant or ""}


def record_file(folder: str | Path, job: dict) -> Path:
    """``<rule>+<wildcards>+<stage>+<variant>.json``: one file per command of a job (``ropeext each`` runs several)."""
    parts = [job["rule"], job["wildcards"].replace(",", "+"), job["stage"], job["variant"]]
    name = "+".join(re.sub(r"[^A-Za-z0-9._=-]+", "_", p) for p in parts if p)
    return Path(folder) / f"{name or 'job'}.json"


def tag_text(found: list[dict]) -> str:
    """The MLflow tag's text: one ``Category: message`` line per warning, cut at TAG_LIMIT characters."""
    lines = [f"{w['category']}: {w['message']}" for w in found]
    text = "\n".join(lines)
    if len(text) <= TAG_LIMIT:
        return text
    kept, size = [], 0
    for line in lines:
        if size + len(line) + 1 > TAG_LIMIT - 60:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept + [f"... and {len(lines) - len(kept)} more warnings (see the job's log)"])


def save(stage: str, variant: str | None, run=None) -> list[dict]:
    """End a job's collection: the warnings recorded since the last one go to ``run`` (a tracking.StageRun)
    and, when ROPEEXT_WARNINGS_DIR is set, to the job's record there (removed when there are none).
    A process of a multi-process job other than the first records nothing: the first one speaks for the job."""
    found = take()
    if found and run is not None and run.active:
        try:
            run.set_tags({TAG: tag_text(found)})
        except Exception as exc:  # noqa: BLE001 - the record below and the log still carry them
            print(f"warning: MLflow: could not store the job's warnings as a tag ({exc})", file=sys.stderr)
    folder = os.environ.get(DIR_ENV)
    if not folder or os.environ.get("RANK", "0") != "0":
        return found
    job = job_name(stage, variant)
    path = record_file(folder, job)
    if found:
        record = {**job, "invocation": os.environ.get(INVOCATION_ENV, ""), "warnings": found}
        write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    else:
        path.unlink(missing_ok=True)
    return found


@contextmanager
def collected(stage: str, variant: str | None = None, run=None) -> Iterator[None]:
    """Collect the warnings of a job's run (and of the process before it), saving them however it ends."""
    install()
    try:
        yield
    finally:
        save(stage, variant, run)


# ----------------------------------------------------------------------------- reading the records
def label(record: dict) -> str:
    """'corpus', 'rope (target=64)', 'eval_ppl tiny-pi-64-noft'."""
    what = record.get("variant") or ", ".join(filter(None, str(record.get("wildcards") or "").split(",")))
    name = record.get("stage") or record.get("rule") or "job"
    return f"{name} {what}" if record.get("variant") else (f"{name} ({what})" if what else name)


def read_records(folder: str | Path | None, invocation: str | None = None) -> list[dict]:
    """The records in ``folder`` (every one, or one invocation's), ordered by file name; unreadable files
    are listed as such, not skipped silently."""
    if not folder or not Path(folder).is_dir():
        return []
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            record["warnings"] = [dict(w) for w in record["warnings"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            record = {"stage": path.stem, "warnings": [{"category": "unreadable", "message": f"{path.name}: {exc}"}]}
        if invocation is None or record.get("invocation") == invocation:
            out.append(record)
    return out


def lines(records: list[dict]) -> list[str]:
    """One markdown item per job, its warnings under it."""
    out = []
    for record in records:
        out.append(f"- `{label(record)}`:")
        out += [f"  - {w['category']}: {w['message']}" for w in record["warnings"]]
    return out


def print_invocation_warnings(file=None) -> int:
    """Print the warnings the jobs of this workflow invocation recorded (the end of the workflow calls it);
    return how many."""
    folder, invocation = os.environ.get(DIR_ENV), os.environ.get(INVOCATION_ENV)
    if not folder or not invocation:
        return 0
    records = read_records(folder, invocation)
    count = sum(len(r["warnings"]) for r in records)
    if count:
        file = file or sys.stderr
        jobs = f"{len(records)} job" + ("s" if len(records) > 1 else "")
        print(
            f"ropeext: {count} warning{'s' if count > 1 else ''} from {jobs} of this run (recorded in {folder}; "
            "the report lists them under Warnings):",
            file=file,
        )
        for line in lines(records):
            print(line, file=file)
    return count
