"""Reading LongBench data: a local folder of the official JSONL files, the release's data.zip, or
the Hugging Face hub copy (whose loading script does not run with datasets >= 4, so the JSONL
files are read directly from the repository's data.zip).

Layout (as in ``data.zip``): ``<dir>/<task>.jsonl`` for LongBench and ``<dir>/<task>_e.jsonl`` for
LongBench-E. Each line holds ``input, context, answers, length, all_classes, dataset, language,
_id``. A folder written by ``ropeext eval longbench --build-embedded`` has the same layout plus a
``buckets.json`` that names its tasks and their length-bucket edges.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from ropeext import job_warnings
from ropeext.errors import RopeextError
from ropeext.eval.common import read_jsonl

FIELDS = ("input", "context", "answers", "length", "all_classes", "dataset", "language", "_id")
MANIFEST = "buckets.json"
HF_PREFIX = "hf:"
HF_DEFAULT_REPO = "THUDM/LongBench"


def _extract_zip(zip_path: Path, cache_dir: Path) -> Path:
    target = cache_dir / zip_path.stem
    done = target / ".complete"
    if not done.exists():
        tmp = target.with_name(target.name + ".partial")
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile:
            raise RopeextError(f"{zip_path}: not a zip archive (expected LongBench's data.zip)") from None
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
        done.touch()
    # data.zip holds a top folder ``data/``
    inner = [p for p in target.iterdir() if p.is_dir()]
    if not any(target.glob("*.jsonl")) and len(inner) == 1:
        return inner[0]
    return target


def resolve_data_dir(spec: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A folder of task JSONL files from a folder, a ``.zip`` or ``hf:<repo>`` (default THUDM/LongBench)."""
    spec = str(spec)
    cache = Path(cache_dir) if cache_dir else Path("results") / "cache" / "longbench"
    if spec.startswith(HF_PREFIX):
        repo = spec[len(HF_PREFIX) :] or HF_DEFAULT_REPO
        try:
            # heavy: huggingface_hub's API module takes ~0.2 s to import; only hub look-ups need it
            from huggingface_hub import hf_hub_download

            zip_path = Path(hf_hub_download(repo_id=repo, filename="data.zip", repo_type="dataset"))
        except Exception as exc:  # noqa: BLE001 - network, auth, offline mode
            raise RopeextError(
                f"cannot fetch data.zip from the hub dataset {repo!r}: {exc}. Download the benchmark's data.zip "
                f"by hand and pass its path or the unpacked folder with --data"
            ) from None
        return _extract_zip(zip_path, cache / repo.replace("/", "__"))
    path = Path(spec)
    if path.is_file() and path.suffix == ".zip":
        return _extract_zip(path, cache)
    if not path.is_dir():
        raise RopeextError(
            f"LongBench data not found: {path} (expected a folder of <task>.jsonl / <task>_e.jsonl files, "
            f"the benchmark's data.zip, or hf:THUDM/LongBench)"
        )
    return path


def read_manifest(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RopeextError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest.get("tasks"), dict):
        raise RopeextError(f"{path}: expected a 'tasks' object mapping task names to bucket edges")
    return manifest


def task_file(data_dir: Path, task: str, longbench_e: bool) -> Path:
    name = f"{task}_e.jsonl" if longbench_e else f"{task}.jsonl"
    path = Path(data_dir) / name
    if not path.is_file():
        present = sorted(p.name for p in Path(data_dir).glob("*.jsonl"))
        hint = f"files there: {', '.join(present[:30])}" if present else "the folder holds no .jsonl files"
        raise RopeextError(f"task {task!r}: {path} not found ({hint})")
    return path


def load_samples(path: Path, *, on_error: str = "fail") -> list[dict]:
    """Records of one task file; a malformed line or a record missing fields fails naming file and
    line, or is skipped with ``on_error='skip'``. Duplicate ``_id`` values get a ``#n`` suffix in
    ``_key`` so that resuming never merges two samples."""
    if on_error not in ("fail", "skip"):
        raise RopeextError(f"on_bad_line: {on_error!r} is not one of fail, skip")
    out: list[dict] = []
    seen: dict[str, int] = {}
    skipped: list[str] = []
    for n, rec in read_jsonl(path, on_error=on_error, on_skip=lambda n, msg: skipped.append(f"{path}:{n}: {msg}")):
        problem = None
        if not isinstance(rec, dict):
            problem = f"expected a JSON object, got {type(rec).__name__}"
        else:
            missing = [f for f in ("context", "input", "answers", "length", "_id") if f not in rec]
            if missing:
                problem = f"missing field(s) {', '.join(missing)} (a LongBench record has {', '.join(FIELDS)})"
            elif not isinstance(rec["answers"], list) or not all(isinstance(a, str) for a in rec["answers"]):
                problem = "'answers' must be a list of strings"
            elif not isinstance(rec["length"], (int, float)):
                problem = f"'length' must be a number, got {rec['length']!r}"
        if problem:
            if on_error == "skip":
                skipped.append(f"{path}:{n}: {problem}")
                continue
            raise RopeextError(f"{path}:{n}: {problem}")
        key = str(rec["_id"])
        seen[key] = seen.get(key, 0) + 1
        rec = dict(rec)
        rec["_key"] = key if seen[key] == 1 else f"{key}#{seen[key]}"
        rec["_line"] = n
        out.append(rec)
    for msg in skipped:
        job_warnings.note(f"skipped {msg}")
    return out
