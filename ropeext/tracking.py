"""MLflow: one run per stage job (``stage_run``), tagged with stage, variant, git state, user and source.

The store is ``sqlite:///<results_dir>/mlflow.db`` unless the config or ``MLFLOW_TRACKING_URI`` says
otherwise; ``ROPEEXT_PARENT_RUN_ID`` (set by a workflow invocation) nests the run under a parent.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from ropeext import job_warnings
from ropeext.config import config_hash, flatten, validate_config
from ropeext.errors import RopeextError, Terminated

_MAX_PARAM_LEN = 6000


def store_uri(config: dict) -> str:
    """The config's MLflow store: ``mlflow.tracking_uri``, or a SQLite file inside its results_dir."""
    return config["mlflow"]["tracking_uri"] or f"sqlite:///{config['results_dir']}/mlflow.db"


def resolve_uri(config: dict | None = None) -> str:
    """MLFLOW_TRACKING_URI when set, else the config's store (a config validated from {} without one)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return store_uri(validate_config({}) if config is None else config)


def resolve_experiment(config: dict | None = None) -> str:
    """MLFLOW_EXPERIMENT_NAME when set, else the config's mlflow.experiment (the schema's without a config)."""
    env = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if env:
        return env
    return (validate_config({}) if config is None else config)["mlflow"]["experiment"]


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """Commit SHA and dirty flag of the repository holding the package (empty outside git)."""
    cwd = cwd or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not sha:
        return {}
    return {"git.sha": sha, "git.dirty": str(bool(dirty)).lower()}


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers, as run tags."""
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
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return {}
    return {
        "data.corpus_fingerprint": str(data.get("file_list_sha256", ""))[:16],
        "data.corpus_source": str(data.get("source", "")),
    }


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


def source_tags(command: str) -> dict[str, str]:
    """Who ran it and what: a workflow job is the JOB of its rule (ROPEEXT_RULE), anything else a LOCAL ``command``."""
    rule = os.environ.get("ROPEEXT_RULE")
    return {
        "mlflow.user": getpass.getuser(),
        "mlflow.source.name": rule or command,
        "mlflow.source.type": "JOB" if rule else "LOCAL",
    }


# The experiment is one of model training (MLflow's UI then opens on its runs, not on the GenAI pages).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(mlflow, name: str, artifact_root: str | None) -> str:
    def find_or_create() -> str:  # creating fails when another job created it at the same moment: retried
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return mlflow.create_experiment(name, artifact_location=artifact_root, tags=EXPERIMENT_TAGS)

    try:
        return _retry(find_or_create, what="create or find the experiment", attempts=5)
    except Exception:  # noqa: BLE001 - reported as one line
        raise RopeextError(f"MLflow: could not create or find experiment {name!r}") from None


def _retry(fn, *, what: str, fatal: bool = True, attempts: int = 4):
    """Call ``fn``, retrying transient store errors; with ``fatal=False`` a persistent one is a warning
    (a long training run should not die because one metric point could not be written)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types for the same condition
            if attempt + 1 < attempts:
                time.sleep(0.5 * 2**attempt)
                continue
            if fatal:
                raise
            warnings.warn(f"MLflow: could not {what} ({exc}); continuing without it", RuntimeWarning, stacklevel=3)
            return None


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
        items = [(k, str(v)[:_MAX_PARAM_LEN]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 90):
            self._mlflow.log_params(dict(items[i : i + 90]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.active:
            return
        clean = {}  # the finite numbers, under names MLflow accepts
        for k, v in metrics.items():
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(fv):
                clean[k.replace("@", "_at_")] = fv
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


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear message when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError) as exc:
        raise RopeextError(
            f"MLflow tracking server {uri} cannot be reached ({exc}); start it, or set MLFLOW_TRACKING_URI / "
            "mlflow.tracking_uri to a reachable store (default sqlite:///<results_dir>/mlflow.db)"
        ) from None


def init_store(uri: str, experiment: str) -> str:
    """Create (or open) the store and the experiment; return its id (at workflow start: concurrent jobs
    creating a fresh sqlite store race each other)."""
    check_reachable(uri)
    import mlflow  # heavy: the Snakefile parse imports this module

    artifact_root = None
    if uri.startswith("sqlite:///"):  # a local store: create its folder, keep the artifacts beside it
        db = Path(uri[len("sqlite:///") :])
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_root = (db.parent.resolve() / "mlartifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return _experiment_id(mlflow, experiment, artifact_root)
    except RopeextError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RopeextError(f"MLflow tracking store {uri!r} cannot be used: {exc}") from None


def start_parent(uri: str, experiment: str, tags: dict | None = None) -> str:
    """Open the parent run of one workflow invocation; stage runs nest under it."""
    import mlflow  # heavy: the Snakefile parse imports this module

    exp_id = init_store(uri, experiment)
    client = mlflow.MlflowClient(uri)
    tags = {
        "ropeext.stage": "workflow",
        **git_state(),
        **source_tags("snakemake"),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    close_stale_runs(client, exp_id)  # what died with an earlier invocation on this machine ends KILLED
    run = client.create_run(exp_id, run_name="workflow", tags={**tags, **process_tags()})
    return run.info.run_id


def describe_invocation(uri: str, run_id: str, config: dict, config_file: str, summary: str) -> None:
    """What a reader of the experiment sees first: its description (what ran, where the summary is), and
    on the parent run the resolved config as an artifact and the settings that tell runs apart as params."""
    import mlflow  # heavy: the Snakefile parse imports this module

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    ext = config.get("extension", {})
    settings = {
        "experiment": config.get("experiment"),
        "config_hash": config_hash(config),
        "model": (config.get("model") or {}).get("path") or "built here (model.architecture)",
        "methods": ",".join(map(str, ext.get("methods", []))),
        "layouts": ",".join(map(str, ext.get("layouts", []))),
        "target_lengths": ",".join(map(str, ext.get("target_lengths", []))),
    }
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in settings.items()])
    client.log_artifact(run_id, config_file, "config")
    note = (
        f"ropeext experiment `{settings['experiment']}`: methods {settings['methods']} x layouts "
        f"{settings['layouts']} at target lengths {settings['target_lengths']} on {settings['model']}. "
        "Each workflow invocation is a parent run named `workflow` (its params: the settings; its artifacts: "
        "the resolved config and, when the report ran, `summary.md`); every job is a child run with params "
        f"stage, variant, method, layout and target_length. The report: {summary}."
    )
    client.set_experiment_tag(run.info.experiment_id, "mlflow.note.content", note)
    for key, value in EXPERIMENT_TAGS.items():
        client.set_experiment_tag(run.info.experiment_id, key, value)


def attach_summary(uri: str, run_id: str, summary: str) -> None:
    """Log the report's summary on the parent run (its main artifact) when this invocation wrote one."""
    import mlflow  # heavy: the Snakefile parse imports this module

    if Path(summary).is_file():
        mlflow.MlflowClient(uri).log_artifact(run_id, summary)


def end_parent(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Close the parent run; delete it when no stage ran under it (a no-op invocation adds no run)."""
    import mlflow  # heavy: the Snakefile parse imports this module

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'", max_results=1)
    if not children:
        client.delete_run(run_id)
        return
    client.set_terminated(run_id, status=status)


@contextmanager
def stage_run(
    stage: str,
    *,
    config: dict | None = None,
    params: dict | None = None,
    variant: str | None = None,
    tags: dict | None = None,
    enabled: bool = True,
) -> Iterator[StageRun]:
    """Open an MLflow run for one stage job; close it FAILED if the body raises. The job's warnings go to the
    run's tag and its record (ropeext.job_warnings), with or without MLflow."""
    if not enabled or os.environ.get("ROPEEXT_MLFLOW", "1") == "0":
        with job_warnings.collected(stage, variant):
            yield StageRun()
        return
    all_tags = {"ropeext.stage": stage, **git_state(), **source_tags(f"ropeext {stage}")}
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
    import mlflow  # heavy: the Snakefile parse imports this module

    exp_id = init_store(resolve_uri(config), resolve_experiment(config))
    # an earlier attempt of this job that died without closing its run (SIGKILL, a lost node) ends KILLED now
    same = {"ropeext.stage": stage, **{k: v for k, v in all_tags.items() if k.startswith("ropeext.wildcards.")}}
    if variant:
        same["ropeext.variant"] = variant
    close_stale_runs(mlflow.MlflowClient(), exp_id, same)
    all_tags.update(process_tags())
    run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    handle = StageRun(mlflow, run.info.run_id)
    try:
        handle.log_params({**run_params(stage, variant), **(params or {})})
        with job_warnings.collected(stage, variant, handle):
            yield handle
    except (KeyboardInterrupt, Terminated):
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


_WILDCARD_PARAMS = {"method": "method", "layout": "layout", "target": "target_length"}


def run_params(stage: str, variant: str | None) -> dict[str, str]:
    """The params every run has, so that MLflow's compare view and charts can group by them: the stage,
    the variant and (for a workflow job) its method, layout and target length."""
    out = {"stage": stage, **({"variant": variant} if variant else {})}
    for item in filter(None, os.environ.get("ROPEEXT_WILDCARDS", "").split(",")):
        key, _, value = item.partition("=")
        if key in _WILDCARD_PARAMS and value:
            out[_WILDCARD_PARAMS[key]] = value
    return out


def process_tags() -> dict[str, str]:
    """Where the process writing a run lives, so that a later job can tell whether it is still alive."""
    return {"ropeext.host": socket.gethostname(), "ropeext.pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live ropeext process on this machine (a reused pid of another program is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True  # no /proc here: trust the signal
    return b"ropeext" in cmdline or b"snakemake" in cmdline


def close_stale_runs(client, experiment_id: str, tags: dict[str, str] | None = None) -> list[str]:
    """End as KILLED the RUNNING runs of this machine (matching ``tags``) whose process is gone; return
    their ids. Runs of other machines are left alone: nothing here can tell whether they still run."""
    query = ["attributes.status = 'RUNNING'", f"tags.`ropeext.host` = '{socket.gethostname()}'"]
    query += [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()]
    closed = []
    for run in client.search_runs([experiment_id], " and ".join(query), max_results=1000):
        pid = run.data.tags.get("ropeext.pid", "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            client.set_tag(run.info.run_id, "ropeext.ended", "its process died; closed by a later job")
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed
