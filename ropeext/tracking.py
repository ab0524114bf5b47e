"""MLflow: one run per stage job.

Every CLI stage wraps its work in ``stage_run(...)``. The run is tagged with the experiment,
stage, variant and git state, gets the resolved settings it used as params, and collects the
stage's metrics and its JSON/CSV/PNG files as artifacts. The store is
``sqlite:///<results_dir>/mlflow.db`` unless the config or ``MLFLOW_TRACKING_URI`` says otherwise.
``ROPEEXT_PARENT_RUN_ID`` (set by a workflow invocation) nests the run under a parent.

Short jobs spool their run instead of opening the store: with ``ROPEEXT_MLFLOW_SPOOL`` set (the
workflow sets it for every job but pre-training and fine-tuning, whose metrics are worth watching
live), the run's tags, params, metrics (with their steps and times) and artifact paths are written
to a JSON file in that folder, and ``flush_spool`` imports them into the store in one process at the
end of the workflow invocation (or at the start of the next one, after an interruption). Importing
MLflow and opening the store cost about two seconds per job, the larger part of a short job.

A short stage run by hand (``stage_run(..., defer=True)``: solve, angles, compare, extend) spools its
run the same way, into the config's spool folder, and starts a detached ``python -m ropeext.tracking
flush`` that imports it: the command returns as soon as its work is done and the run appears in the
store a few seconds later. Such a record names its store and experiment, and only a flush into that
store imports it; flushes of one folder take turns (a lock file).
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ropeext.config import config_hash, flatten
from ropeext.errors import RopeextError

_MAX_PARAM_LEN = 6000
SPOOL_ENV = "ROPEEXT_MLFLOW_SPOOL"


def store_uri(config: dict) -> str:
    """The config's MLflow store: ``mlflow.tracking_uri``, or a SQLite file inside its results_dir."""
    return config["mlflow"]["tracking_uri"] or f"sqlite:///{config['results_dir']}/mlflow.db"


def resolve_uri(config: dict | None = None) -> str:
    """MLFLOW_TRACKING_URI when set, else the config's store (a config validated from {} without one)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if config is None:
        from ropeext.config import validate_config

        config = validate_config({})
    return store_uri(config)


def resolve_experiment(config: dict | None = None) -> str:
    """MLFLOW_EXPERIMENT_NAME when set, else the config's mlflow.experiment (the schema's without a config)."""
    env = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if env:
        return env
    if config is None:
        from ropeext.config import validate_config

        config = validate_config({})
    return config["mlflow"]["experiment"]


def spool_dir(config: dict) -> Path:
    """Where the workflow's short jobs spool their runs (inside the config's results_dir)."""
    return Path(config["results_dir"]) / ".mlflow-spool"


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """Commit SHA and dirty flag of the repository holding the package (empty outside git)."""
    cwd = cwd or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not sha:
        return {}
    return {"git.sha": sha, "git.dirty": str(bool(dirty)).lower()}


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers, as run tags."""
    from importlib import metadata

    out = {}
    for name in ("ropeext", "torch", "transformers", "accelerate", "lm-eval", "mlflow", "snakemake"):
        try:
            out[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def data_fingerprints(config: dict | None) -> dict[str, str]:
    """The corpus fingerprint recorded by the corpus stage, when this config's corpus exists."""
    if not config:
        return {}
    manifest = Path(config.get("results_dir", "results")) / "corpus" / "manifest.json"
    if not manifest.is_file():
        return {}
    import json

    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return {}
    return {"data.corpus_fingerprint": str(data.get("file_list_sha256", ""))[:16],
            "data.corpus_source": str(data.get("source", ""))}


def job_tags() -> dict[str, str]:
    """The Snakemake rule and wildcards of this job (set by the rules as ROPEEXT_RULE / ROPEEXT_WILDCARDS)."""
    tags = {}
    if os.environ.get("ROPEEXT_RULE"):
        tags["ropeext.rule"] = os.environ["ROPEEXT_RULE"]
    for item in filter(None, os.environ.get("ROPEEXT_WILDCARDS", "").split(",")):
        key, _, value = item.partition("=")
        if key and value:
            tags[f"ropeext.wildcards.{key}"] = value
    return tags


def _prepare_store(uri: str) -> str | None:
    """Create the folder of a local sqlite store; return the artifact root to use beside it."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        return (db.parent.resolve() / "mlartifacts").as_uri()
    return None


def _experiment_id(mlflow, name: str, artifact_root: str | None) -> str:
    def find_or_create() -> str:  # creating fails when another job created it at the same moment: retried
        exp = mlflow.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else mlflow.create_experiment(name, artifact_location=artifact_root)

    try:
        return _retry(find_or_create, what="create or find the experiment", attempts=5)
    except Exception:  # noqa: BLE001 - reported as one line
        raise RopeextError(f"MLflow: could not create or find experiment {name!r}") from None


def _retry(fn, *, what: str, fatal: bool = True, attempts: int = 4):
    """Call ``fn``, retrying transient store errors (a busy sqlite file, a hiccup of a server).

    With ``fatal=False`` a persistent failure is reported as a warning and the job goes on: a
    long training run should not die because one metric point could not be written.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types for the same condition
            if attempt + 1 < attempts:
                time.sleep(0.5 * 2**attempt)
                continue
            if fatal:
                raise
            import warnings

            warnings.warn(f"MLflow: could not {what} ({exc}); continuing without it", RuntimeWarning, stacklevel=3)
            return None


def _param_values(params: dict[str, Any]) -> dict[str, str]:
    """Flattened params as MLflow stores them: text, cut to its length limit."""
    return {k: str(v)[:_MAX_PARAM_LEN] for k, v in flatten(params).items()}


def _metric_values(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric metrics under names MLflow accepts (``@`` spelled ``_at_``); others are dropped."""
    clean = {}
    for k, v in metrics.items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(fv):
            clean[k.replace("@", "_at_")] = fv
    return clean


class StageRun:
    """Thin handle over an active MLflow run (or a no-op when tracking is off)."""

    def __init__(self, mlflow=None, run_id: str | None = None):
        self._mlflow = mlflow
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.active:
            return
        items = list(_param_values(params).items())
        for i in range(0, len(items), 90):
            self._mlflow.log_params(dict(items[i:i + 90]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.active:
            return
        clean = _metric_values(metrics)
        if clean:
            _retry(lambda: self._mlflow.log_metrics(clean, step=step), what="log metrics", fatal=False)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active and Path(path).exists():
            if Path(path).is_dir():
                self._mlflow.log_artifacts(str(path), artifact_path=artifact_path)
            else:
                self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_outputs(self, folder: str | Path, suffixes=(".json", ".csv", ".png", ".md")) -> None:
        """Log every file under ``folder`` with one of ``suffixes`` (model weights are not copied)."""
        folder = Path(folder)
        if not self.active or not folder.exists():
            return
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        for f in files:
            if f.suffix in suffixes:
                rel = f.parent.relative_to(folder) if folder.is_dir() else Path(".")
                self.log_artifact(f, None if str(rel) == "." else str(rel))


class SpooledRun(StageRun):
    """A run recorded to a JSON file of the spool folder, for ``flush_spool`` to import later."""

    def __init__(self, record: dict):
        super().__init__(None, None)
        self.record = record

    @property
    def active(self) -> bool:
        return True

    def log_params(self, params: dict[str, Any]) -> None:
        self.record["params"].update(_param_values(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self.record["metrics"].extend([k, v, now, step or 0] for k, v in _metric_values(metrics).items())

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.record["tags"].update({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self.record["artifacts"].append([str(Path(path).resolve()), artifact_path])


def _spool_file(folder: Path, record: dict) -> Path:
    import uuid

    from ropeext.io import write_json

    return write_json(folder / f"{record['start_time']:015d}-{uuid.uuid4().hex[:8]}.json", record)


def flush_spool(uri: str, experiment: str, folder: str | Path) -> int:
    """Import the spooled runs of ``folder`` into the store (oldest first) and delete their files; how many.

    Records that name another store or experiment (spooled by hand, see ``stage_run``) stay.
    """
    import fcntl

    folder = Path(folder)
    if not folder.is_dir() or not any(folder.glob("*.json")):
        return 0
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one flush of a folder at a time: none imports a run twice
        return _flush_locked(uri, experiment, folder)


def _flush_locked(uri: str, experiment: str, folder: Path) -> int:
    from ropeext.io import read_json

    records = []
    for f in sorted(folder.glob("*.json")):
        rec = read_json(f, "spooled MLflow run")
        if rec.get("uri", uri) == uri and rec.get("experiment", experiment) == experiment:
            records.append((f, rec))
    if not records:
        return 0
    import mlflow
    from mlflow.entities import Metric, Param

    exp_id = init_store(uri, experiment)
    client = mlflow.MlflowClient(uri)
    for f, rec in records:
        run = _retry(lambda: client.create_run(exp_id, start_time=rec["start_time"], tags=rec["tags"],
                                               run_name=rec["run_name"]), what="create a run")
        rid = run.info.run_id
        params = [Param(k, v) for k, v in rec["params"].items()]
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in rec["metrics"]]
        for i in range(0, max(len(params), len(metrics)), 100):
            client.log_batch(rid, metrics=metrics[i:i + 100], params=params[i:i + 100])
        for path, artifact_path in rec["artifacts"]:
            if Path(path).exists():
                client.log_artifact(rid, path, artifact_path)
        client.set_terminated(rid, status=rec["status"], end_time=rec["end_time"])
        f.unlink()
    return len(records)


def flush_in_background(uri: str, experiment: str, folder: str | Path) -> None:
    """Start a detached ``python -m ropeext.tracking flush`` of ``folder`` (its output: flush.log there)."""
    import sys

    folder = Path(folder)
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with open(folder / "flush.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "ropeext.tracking", "flush", uri, experiment, str(folder)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear message when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError) as exc:
        raise RopeextError(
            f"MLflow tracking server {uri} cannot be reached ({exc}); start it, or set MLFLOW_TRACKING_URI / "
            "mlflow.tracking_uri to a reachable store (default sqlite:///<results_dir>/mlflow.db)") from None


def init_store(uri: str, experiment: str) -> str:
    """Create (or open) the store and the experiment once, before any job runs; return its id.

    Run at workflow start: concurrent jobs creating a fresh sqlite store race each other.
    """
    check_reachable(uri)
    import mlflow

    artifact_root = _prepare_store(uri)
    mlflow.set_tracking_uri(uri)
    try:
        return _experiment_id(mlflow, experiment, artifact_root)
    except RopeextError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RopeextError(f"MLflow tracking store {uri!r} cannot be used: {exc}") from None


def start_parent(uri: str, experiment: str, tags: dict | None = None) -> str:
    """Open the parent run of one workflow invocation; stage runs nest under it."""
    import mlflow

    exp_id = init_store(uri, experiment)
    client = mlflow.MlflowClient(uri)
    run = client.create_run(exp_id, run_name="workflow", tags={"ropeext.stage": "workflow", **git_state(),
                                                                **{k: str(v) for k, v in (tags or {}).items()}})
    return run.info.run_id


def end_parent(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Close the parent run; delete it when no stage ran under it (a no-op invocation adds no run)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'", max_results=1)
    if not children:
        client.delete_run(run_id)
        return
    client.set_terminated(run_id, status=status)


@contextmanager
def stage_run(stage: str, *, config: dict | None = None, params: dict | None = None,
              variant: str | None = None, tags: dict | None = None,
              enabled: bool = True, defer: bool = False) -> Iterator[StageRun]:
    """Open an MLflow run for one stage job; close it FAILED if the body raises.

    ``defer``: outside the workflow, spool the run and import it in a background process (short stages
    whose work takes less time than opening the store).
    """
    if not enabled or os.environ.get("ROPEEXT_MLFLOW", "1") == "0":
        yield StageRun()
        return
    all_tags = {"ropeext.stage": stage, **git_state()}
    if config:
        all_tags["ropeext.experiment"] = config.get("experiment", "")
        all_tags["ropeext.config_hash"] = config_hash(config)
    if variant:
        all_tags["ropeext.variant"] = variant
    parent = os.environ.get("ROPEEXT_PARENT_RUN_ID")
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    all_tags.update(job_tags())
    all_tags.update(package_versions())
    all_tags.update(data_fingerprints(config))
    all_tags.update(tags or {})
    run_name = f"{stage}:{variant}" if variant else stage

    spool = os.environ.get(SPOOL_ENV)
    background = None
    if not spool and defer:
        if config is None:
            from ropeext.config import validate_config

            config = validate_config({})
        spool = str(spool_dir(config).resolve())
        background = {"uri": resolve_uri(config), "experiment": resolve_experiment(config)}
        check_reachable(background["uri"])  # an HTTP store that does not answer still fails the command
    if spool:
        record = {"run_name": run_name, "tags": {k: str(v) for k, v in all_tags.items()}, "params": {},
                  "metrics": [], "artifacts": [], "start_time": int(time.time() * 1000), **(background or {})}
        handle = SpooledRun(record)

        def close(status: str) -> None:
            record.update(status=status, end_time=int(time.time() * 1000))
            _spool_file(Path(spool), record)
            if background:
                flush_in_background(background["uri"], background["experiment"], spool)

        try:
            if params:
                handle.log_params(params)
            yield handle
        except BaseException:
            close("FAILED")
            raise
        close("FINISHED")
        return

    import mlflow

    uri = resolve_uri(config)
    artifact_root = _prepare_store(uri)
    mlflow.set_tracking_uri(uri)
    try:
        exp_id = _experiment_id(mlflow, resolve_experiment(config), artifact_root)
    except RopeextError:
        raise
    except Exception as exc:
        raise RopeextError(f"MLflow tracking store {uri!r} cannot be used: {exc}") from None
    run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    handle = StageRun(mlflow, run.info.run_id)
    try:
        if params:
            handle.log_params(params)
        yield handle
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def main(argv: list[str] | None = None) -> int:
    """``python -m ropeext.tracking flush URI EXPERIMENT FOLDER``: import a spool folder into a store."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ropeext.tracking")
    sub = ap.add_subparsers(dest="action", required=True)
    f = sub.add_parser("flush", help="import the spooled runs of FOLDER into the store URI")
    f.add_argument("uri")
    f.add_argument("experiment")
    f.add_argument("folder")
    args = ap.parse_args(argv)
    n = flush_spool(args.uri, args.experiment, args.folder)
    print(f"imported {n} spooled run(s) into {args.uri}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
