"""MLflow: one run per stage job (``stage_run``), tagged with stage, variant, git state, user and source.

The store is ``sqlite:///<results_dir>/mlflow.db`` unless the config or ``MLFLOW_TRACKING_URI`` says
otherwise; ``ROPEEXT_PARENT_RUN_ID`` (set by a workflow invocation) nests the run under a parent.

Lineage: every model directory a stage writes (extend, finetune, pretrain, import_model) is an MLflow
LoggedModel that points at the folder (no copy of the weights), with its scaling, layout and base as
params; an evaluation finds the LoggedModel of the folder it reads and logs its metrics against it, and
the data a run reads (corpus, tokens, packed windows) is a dataset input of the run.

Artifacts of a local (sqlite) store live beside it in ``mlartifacts/`` under ``mlflow-artifacts:/`` URIs,
which name no absolute path: ``mlflow ui --backend-store-uri sqlite:///R/mlflow.db --artifacts-destination
R/mlartifacts`` serves them wherever the results folder R was copied.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections import Counter
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from ropeext import job_warnings
from ropeext.config import config_hash, flatten, validate_config
from ropeext.errors import RopeextError, Terminated
from ropeext.model_import import MANIFEST as IMPORT_MANIFEST
from ropeext.modeling import VARIANT_MANIFEST

_MAX_PARAM_LEN = 6000
ARTIFACTS_DIR = "mlartifacts"  # a local store's artifacts, beside its database
_PROXIED = "mlflow-artifacts:"
MODEL_TYPE = "hf-causal-lm"  # the LoggedModel type of every model directory
MODEL_PATH_TAG = "ropeext.model_path"
# the stages that read a model to measure it: their metrics go to that model's LoggedModel
EVALUATION_STAGES = ("eval_ppl", "eval_passkey", "eval_longbench", "eval_ruler", "eval_openllm", "analyze_bf16")


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
    # mlflow.source.git.commit: the commit MLflow's UI shows with the run's source
    return {"git.sha": sha, "git.dirty": str(bool(dirty)).lower(), "mlflow.source.git.commit": sha}


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


def user_name() -> str:
    """The user running this process: the login name, else the uid (a container user without a passwd entry
    has neither USER nor a name, and getpass then raises)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def source_tags(command: str) -> dict[str, str]:
    """Who ran it and what: a workflow job is the JOB of its rule (ROPEEXT_RULE), anything else a LOCAL ``command``."""
    rule = os.environ.get("ROPEEXT_RULE")
    return {
        "mlflow.user": user_name(),
        "mlflow.source.name": rule or command,
        "mlflow.source.type": "JOB" if rule else "LOCAL",
    }


# ---------------------------------------------------------------- what a model directory is


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _num(value) -> str:
    return f"{float(value):.6g}"


def scaling_summary(rope: dict | None) -> dict[str, str]:
    """The RoPE extension of a transformers ``rope_parameters`` dict in a few params: its type, its factors
    (one scalar, or per-pair factors as count/min/mean/max and how many pairs are left unscaled) and the
    pre-training length it extends."""
    rope = rope or {}
    out = {"scaling.rope_type": str(rope.get("rope_type") or rope.get("type") or "default")}
    pairs = rope.get("long_factor") or rope.get("short_factor")
    if isinstance(pairs, (list, tuple)) and pairs:
        values = [float(v) for v in pairs]
        unscaled = sum(1 for v in values if abs(v - 1.0) <= 1e-6)
        out["scaling.factors"] = (
            f"{len(values)} pairs: min {_num(min(values))}, mean {_num(sum(values) / len(values))}, "
            f"max {_num(max(values))}; {unscaled} unscaled"
        )
    elif rope.get("factor") is not None:
        out["scaling.factors"] = _num(rope["factor"])
    else:
        out["scaling.factors"] = "1"
    if rope.get("rope_theta") is not None:
        out["scaling.rope_theta"] = _num(rope["rope_theta"])
    if rope.get("original_max_position_embeddings") is not None:
        out["scaling.train_length"] = str(int(rope["original_max_position_embeddings"]))
    return out


def describe_model(path: str | Path, scaling: dict | None = None) -> dict[str, str]:
    """What a model directory is, as LoggedModel params: how it was made (``role``: extended, finetuned,
    pretrained or imported), its scaling (method, rope type, factors, target and pre-training length),
    layout and base, read from its config.json and the manifest its stage wrote. ``scaling`` (a
    scaling.json applied in memory on top of the folder) replaces the folder's own."""
    folder = Path(str(path))
    config = _read_json(folder / "config.json")
    variant = _read_json(folder / VARIANT_MANIFEST)
    summary = _read_json(folder / "training_summary.json")
    imported = _read_json(folder / IMPORT_MANIFEST)
    made = variant.get("scaling") or summary.get("scaling") or {}
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    out: dict[str, str] = {}
    if variant:
        out.update(role="extended", layout="noft", base_model=str(variant.get("base", "")))
    elif summary.get("scaling"):
        out.update(role="finetuned", layout=str(summary.get("layout", "")), base_model=str(summary.get("base", "")))
    elif summary:
        out.update(role="pretrained", layout="base")
    elif imported:
        out.update(role="imported", layout="base", base_model=str(imported.get("source", "")))
    elif config:
        out.update(role="external", layout="base")
    if scaling:
        made, rope = scaling, scaling.get("rope_parameters") or {}
        out.update(role="extended in memory", layout="noft")
    method = made.get("method") or ("none" if str(rope.get("rope_type", "default")) == "default" else "")
    out["scaling.method"] = str(method or "unknown")
    out.update(scaling_summary(rope))
    target = made.get("target_length") or config.get("max_position_embeddings")
    if target is not None:
        out["scaling.target_length"] = str(int(target))
    if made.get("train_length") is not None:
        out["scaling.train_length"] = str(int(made["train_length"]))
    return {k: v for k, v in out.items() if v != ""}


# ---------------------------------------------------------------- the data a run reads


def file_digest(path: str | Path, seed: str = "") -> str:
    """A fingerprint of a data file or folder that reads no more than 128 KiB per file: each file's name,
    size, first and last 64 KiB (a Parquet file's footer describes all its row groups), after ``seed`` (the
    corpus fingerprint the data derive from)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    h = hashlib.sha256(seed.encode())
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if f != path else f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 16))
            if size > 1 << 16:
                fh.seek(max(size - (1 << 16), 1 << 16))
                h.update(fh.read())
    return h.hexdigest()[:16]


def dataset_name(path: str | Path, config: dict | None) -> str:
    """A data path as MLflow shows it: relative to the results folder when inside it."""
    path = Path(str(path))
    if config:
        try:
            return path.resolve().relative_to(Path(config.get("results_dir", "results")).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def dataset_of(path: str | Path, config: dict | None = None):
    """An MLflow dataset (metadata only: name, digest, source) for data a stage reads: the corpus folder
    (digest: the corpus fingerprint of its manifest), or tokenized / packed files (digest: ``file_digest``
    seeded with the config's corpus fingerprint)."""
    # heavy: the Snakefile parse imports this module
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource  # heavy, as above

    path = Path(str(path))
    manifest = _read_json(path / "manifest.json") if path.is_dir() else {}
    if manifest.get("file_list_sha256"):
        digest = str(manifest["file_list_sha256"])[:16]
    else:
        digest = file_digest(path, data_fingerprints(config).get("data.corpus_fingerprint", ""))
    source = LocalArtifactDatasetSource(str(path.resolve()))
    return MetaDataset(source, name=dataset_name(path, config), digest=digest)


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
    """Thin handle over an active MLflow run (or a no-op when tracking is off).

    ``model_id``: the LoggedModel this run made (``log_model``) or evaluates (``evaluate``); its metrics are
    logged against it, and against the dataset of its last ``log_input(..., context="evaluation")``."""

    def __init__(self, mlflow=None, run_id: str | None = None, uri: str = "", experiment_id: str = ""):
        self._mlflow = mlflow
        self.run_id = run_id
        self.uri = uri
        self.experiment_id = experiment_id
        self.model_id: str | None = None
        self._dataset = None
        self._local: Path | None = None
        if mlflow is not None:
            self._local = local_artifact_dir(uri, mlflow.MlflowClient(uri).get_run(run_id).info.artifact_uri)

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def _client(self):
        return self._mlflow.MlflowClient(self.uri)

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
            link = {"model_id": self.model_id, "dataset": self._dataset} if self.model_id else {}
            _retry(lambda: self._mlflow.log_metrics(clean, step=step, **link), what="log metrics", fatal=False)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active and Path(path).exists():
            _copy_or_log(self._client(), self._local, self.run_id, path, artifact_path)

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

    def log_input(self, path: str | Path, context: str, config: dict | None = None) -> None:
        """Record data this run reads (``dataset_of``) as a dataset input with ``context`` ("training" or
        "evaluation"); the metrics an evaluation logs afterwards name this dataset."""
        if not self.active or not Path(str(path)).exists():
            return
        dataset = dataset_of(path, config)
        _retry(lambda: self._mlflow.log_input(dataset, context=context), what="log a dataset input", fatal=False)
        if context == "evaluation":
            self._dataset = dataset

    def log_model(self, path: str | Path, *, name: str, stage: str, base: str | None = None) -> str | None:
        """Make the model directory ``path`` a LoggedModel of this run (its weights stay where they are):
        params ``describe_model`` plus ``path``, the folder relative to the store; tags the variant, the
        folder, the stage that made it and, when ``base`` has one, the base's LoggedModel. Its metrics
        logged from now on go to it. Returns its id."""
        if not self.active:
            return None
        ref = model_ref(path, self.uri)
        params = {**describe_model(path), "path": ref}
        tags = {MODEL_PATH_TAG: ref, "ropeext.variant": name, "ropeext.stage": stage}
        if base:
            params["base_model"] = model_ref(base, self.uri) if Path(str(base)).exists() else str(base)
            found = find_model(self._client(), self.experiment_id, model_ref(base, self.uri))
            if found is not None:
                tags["ropeext.base_model_id"] = found.model_id
        model = _retry(
            lambda: self._new_model(name, params, tags, source_run=self.run_id), what="log a model", fatal=False
        )
        self.model_id = model.model_id if model is not None else None
        return self.model_id

    def evaluate(self, path: str | Path, *, name: str, scaling: dict | None = None) -> dict[str, str]:
        """This run measures the model directory ``path`` (with ``scaling`` applied in memory, when given):
        find its LoggedModel (the newest one of that folder in the experiment; a folder no stage of this store
        made is registered now, without a source run) so that the metrics go to it. Returns the params that
        describe it (its scaling, layout, base and ``model_id``) for the run."""
        described = describe_model(path, scaling)
        if not self.active:
            return described
        ref = model_ref(path, self.uri)
        if scaling:  # a base with a scaling applied in memory: another model than the folder alone
            ref += f" + {scaling.get('method')}-{scaling.get('target_length')}"

        def find_or_register():
            found = find_model(self._client(), self.experiment_id, ref)
            if found is not None:
                return found
            tags = {MODEL_PATH_TAG: ref, "ropeext.variant": name, "ropeext.stage": "registered by an evaluation"}
            return self._new_model(name, {**described, "path": ref}, tags, source_run=None)

        model = _retry(find_or_register, what="find the evaluated model", fatal=False)
        if model is None:
            return described
        self.model_id = model.model_id
        return {**{k: v for k, v in model.params.items() if k != "path"}, "model_id": model.model_id}

    def _new_model(self, name: str, params: dict[str, str], tags: dict[str, str], source_run: str | None):
        from mlflow.entities import LoggedModelOutput  # heavy: the Snakefile parse imports this module

        client = self._client()
        params = {k: str(v)[:_MAX_PARAM_LEN] for k, v in params.items()}
        model = client.create_logged_model(
            self.experiment_id, name=name, source_run_id=source_run, tags=tags, params=params, model_type=MODEL_TYPE
        )
        model = client.finalize_logged_model(model.model_id, "READY")
        if source_run:
            client.log_outputs(source_run, [LoggedModelOutput(model.model_id, step=0)])
        return model


def model_ref(path: str | Path, uri: str) -> str:
    """How a model directory is named in the store: relative to a local store's folder when inside it (so a
    copied results folder still finds its models), else absolute; a hub id as it is."""
    p = Path(str(path))
    if not p.exists():
        return str(path)
    folder = store_dir(uri)
    if folder is not None:
        try:
            return p.resolve().relative_to(folder.resolve()).as_posix()
        except ValueError:
            pass
    return str(p.resolve())


def find_model(client, experiment_id: str, ref: str):
    """The newest LoggedModel of the folder ``ref`` (tag ropeext.model_path) in the experiment, or None."""
    order = [{"field_name": "creation_timestamp", "ascending": False}]
    if "'" not in ref and "\\" not in ref:
        page = client.search_logged_models(
            [experiment_id], filter_string=f"tags.`{MODEL_PATH_TAG}` = '{ref}'", order_by=order, max_results=1
        )
        return page[0] if page else None
    token, best = None, None  # a name the filter syntax cannot quote: look through them all
    while True:
        page = client.search_logged_models([experiment_id], order_by=order, max_results=500, page_token=token)
        for model in page:
            newer = best is None or model.creation_timestamp > best.creation_timestamp
            if model.tags.get(MODEL_PATH_TAG) == ref and newer:
                best = model
        token = page.token
        if not token:
            return best


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


def store_dir(uri: str) -> Path | None:
    """The folder of a local (sqlite) store, None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).parent


def artifact_root(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a local store keeps its artifacts: ``mlflow-artifacts:/<experiment>``, a
    location relative to the folder that serves them (``<store>/mlartifacts``; see ``local_artifact_dir``),
    so that a results folder copied elsewhere still serves them. None (MLflow decides) for other stores.

    MLflow makes any local path absolute (a plain ``file://`` root breaks when the folder moves)."""
    if store_dir(uri) is None:
        return None
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment).strip(".") or "experiment"
    return f"{_PROXIED}/{slug}"


def local_artifact_dir(uri: str, artifact_uri: str) -> Path | None:
    """The folder on this machine holding ``artifact_uri`` of a local store: ``mlflow-artifacts:/X`` is
    ``<store folder>/mlartifacts/X`` (what ``mlflow server --artifacts-destination <store folder>/mlartifacts``
    serves). None when MLflow's own client writes it (a ``file://`` root, a tracking server)."""
    folder = store_dir(uri)
    if folder is None or not artifact_uri.startswith(_PROXIED + "/") or artifact_uri.startswith(_PROXIED + "//"):
        return None
    rel = Path(artifact_uri[len(_PROXIED) :].lstrip("/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise RopeextError(f"MLflow: artifact location {artifact_uri!r} leaves the store's {ARTIFACTS_DIR} folder")
    return folder / ARTIFACTS_DIR / rel


def log_artifact(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file or a folder as an artifact of ``run_id``: copied into the local store's artifact folder
    when the run's artifacts are proxied, else through MLflow's client."""
    import mlflow  # heavy: the Snakefile parse imports this module

    client = mlflow.MlflowClient(uri)
    _copy_or_log(client, local_artifact_dir(uri, client.get_run(run_id).info.artifact_uri), run_id, path, artifact_path)


def _copy_or_log(client, local: Path | None, run_id: str, path: str | Path, artifact_path: str | None) -> None:
    path = Path(path)
    if local is None:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)
        return
    dest = local / artifact_path if artifact_path else local
    if path.is_dir():
        shutil.copytree(path, dest, dirs_exist_ok=True)  # its contents, as MLflow's log_artifacts
    else:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / path.name)


def run_artifacts(uri: str, run_id: str) -> set[str]:
    """The artifact files of a run (paths relative to its artifact root), read from the local store's folder
    or, for any other store, through MLflow's client."""
    import mlflow  # heavy: the Snakefile parse imports this module

    client = mlflow.MlflowClient(uri)
    local = local_artifact_dir(uri, client.get_run(run_id).info.artifact_uri)
    if local is not None:
        return {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()} if local.is_dir() else set()
    out, todo = set(), [None]
    while todo:
        for item in client.list_artifacts(run_id, todo.pop()):
            if item.is_dir:
                todo.append(item.path)
            else:
                out.add(item.path)
    return out


def init_store(uri: str, experiment: str) -> str:
    """Create (or open) the store and the experiment; return its id (at workflow start: concurrent jobs
    creating a fresh sqlite store race each other)."""
    check_reachable(uri)
    import mlflow  # heavy: the Snakefile parse imports this module

    folder = store_dir(uri)
    if folder is not None:  # a local store: create its folder; the artifacts go beside it
        folder.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    try:
        return _experiment_id(mlflow, experiment, artifact_root(uri, experiment))
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
    log_artifact(uri, run_id, config_file, "config")
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
    """Log the report's summary on the parent run (its main artifact) when this invocation wrote one, and its
    headline table (``headline.csv`` beside it: the best variant per evaluation within L and at L') as an
    artifact, as metrics ``headline.<evaluation>.within_<L>`` / ``headline.<evaluation>.at_<L'>`` and as tags
    naming the best variant (``<metric>.best``) and those not told apart from it (``<metric>.tied``)."""
    if not Path(summary).is_file():
        return
    log_artifact(uri, run_id, summary)
    headline = Path(summary).with_name("headline.csv")
    if not headline.is_file():
        return
    log_artifact(uri, run_id, headline)
    import mlflow  # heavy: the Snakefile parse imports this module

    metrics, tags = [], []
    with open(headline, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            where = "within" if row["at"] == "L" else "at"
            key = f"headline.{_metric_word(row['evaluation'])}.{where}_{row['length']}"
            if row["value"]:
                metrics.append(mlflow.entities.Metric(key, float(row["value"]), int(time.time() * 1000), 0))
            tags.append(mlflow.entities.RunTag(f"{key}.best", row["best"]))
            if row["not_told_apart"]:
                tags.append(mlflow.entities.RunTag(f"{key}.tied", row["not_told_apart"]))
    mlflow.MlflowClient(uri).log_batch(run_id, metrics=metrics, tags=tags)


def _metric_word(text: str) -> str:
    """'RULER average' -> 'ruler_average': a metric key's word."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def end_parent(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Close the parent run, named for the runs under it (``invocation_name``); delete it when none did
    (a no-op invocation adds no run)."""
    import mlflow  # heavy: the Snakefile parse imports this module

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    children = client.search_runs(
        [run.info.experiment_id],
        f"tags.mlflow.parentRunId = '{run_id}'",
        max_results=10000,
        order_by=["attributes.start_time ASC"],
    )
    if not children:
        client.delete_run(run_id)
        return
    client.update_run(run_id, name=invocation_name([c.data.tags.get("ropeext.stage", "?") for c in children]))
    client.set_terminated(run_id, status=status)


def invocation_name(stages: list[str]) -> str:
    """A parent run's name in the runs table, from its runs' stages in the order they started: every stage when
    there are at most three kinds ('workflow: finetune x2, report'), else the number of runs and the first three."""
    counts = Counter(stages)
    items = [stage if n == 1 else f"{stage} x{n}" for stage, n in counts.items()]
    if len(items) <= 3:
        return f"workflow: {', '.join(items)}"
    return f"workflow: {len(stages)} runs ({', '.join(items[:3])}, ...)"


@contextmanager
def stage_run(
    stage: str,
    *,
    config: dict | None = None,
    params: dict | None = None,
    variant: str | None = None,
    tags: dict | None = None,
    enabled: bool = True,
    evaluates: str | None = None,
    evaluates_scaling: dict | None = None,
) -> Iterator[StageRun]:
    """Open an MLflow run for one stage job; close it FAILED if the body raises. The job's warnings go to the
    run's tag and its record (ropeext.job_warnings), with or without MLflow.

    ``evaluates``: the model directory the stage measures (an evaluation stage, EVALUATION_STAGES, measures
    its ``params["model"]`` unless told otherwise), with ``evaluates_scaling`` applied in memory when given:
    the run's metrics go to that model's LoggedModel (``StageRun.evaluate``) and its params record the
    model's scaling, layout and base."""
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
    if evaluates is None and stage in EVALUATION_STAGES:
        evaluates = (params or {}).get("model")
    try:
        handle = StageRun(mlflow, run.info.run_id, resolve_uri(config), exp_id)
        model = {}
        if evaluates:
            name = variant or Path(str(evaluates).rstrip("/")).name
            model = handle.evaluate(evaluates, name=name, scaling=evaluates_scaling)
        handle.log_params({**run_params(stage, variant), **model, **(params or {})})
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
