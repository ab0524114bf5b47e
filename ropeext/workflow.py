"""Python support for the Snakemake workflow (called from workflow/rules/common.smk and the Snakefile).

Kept in the package so the rule files stay declarative: the resolved config every job reads,
the MLflow environment jobs inherit, the parent run of one workflow invocation, and where jobs record
their warnings (printed at the end of the invocation, listed in the report).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

from ropeext import job_warnings
from ropeext.config import config_hash
from ropeext.errors import RopeextError
from ropeext.io import held_outputs, write_text
from ropeext.tracking import attach_summary, describe_invocation, end_parent, start_parent, store_uri


def write_resolved_config(config: dict, results_dir: str) -> str:
    """Write the validated config (defaults filled) where every job reads it; rewrite only on change."""
    path = Path(results_dir) / ".config" / "config.yaml"
    text = json.dumps(config, sort_keys=True, indent=1)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)
    return str(path)


def export_job_paths(repo_root: str) -> None:
    """Jobs run `python -m ropeext.cli` with the interpreter that runs Snakemake, activated or not, and
    import the package from this checkout, so the rules and the code they call always match.

    Under ``--sdm conda`` the activated environment's bin comes before this one, and PYTHONPATH gives
    that environment the package without installing it.
    """
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)


def export_tracking_env(config: dict) -> None:
    """Jobs log to the config's MLflow store and experiment unless the environment already names them."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", store_uri(config))
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", config["mlflow"]["experiment"])


def export_warnings_env(results_dir: str) -> None:
    """Jobs record their warnings in <results_dir>/warnings under this invocation's id (ropeext.job_warnings);
    a job that parses the workflow again (a cluster job) keeps the id its invocation exported."""
    os.environ[job_warnings.DIR_ENV] = os.path.abspath(os.path.join(results_dir, "warnings"))
    os.environ.setdefault(job_warnings.INVOCATION_ENV, uuid.uuid4().hex)


def print_warnings() -> int:
    """The end of the workflow (Snakefile onsuccess / onerror): print the warnings of this invocation's jobs."""
    return job_warnings.print_invocation_warnings(sys.stderr)


def check_no_writers(results_dir: str) -> None:
    """Stop before any job when some process still writes an output under ``results_dir`` (the lock of
    ``ropeext.io.lock_output`` is held): a job of an earlier invocation that outlived it, or a command run
    by hand. Names each output and its holder's pid."""
    held = held_outputs(results_dir)
    if held:
        lines = "\n".join(f"  {output}: {holder}" for output, holder in held)
        raise RopeextError(
            f"{len(held)} output(s) under results_dir {results_dir} are still being written by another process:\n"
            f"{lines}\nwait for them to end or stop them (kill PID), then start again"
        )


def start_invocation(config: dict) -> None:
    """Refuse to start while another process writes an output here; open the store once (failing fast when
    it cannot be reached) and this invocation's parent run."""
    check_no_writers(config["results_dir"])
    uri, experiment = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_EXPERIMENT_NAME"]
    run_id = start_parent(
        uri, experiment, tags={"ropeext.experiment": config["experiment"], "ropeext.config_hash": config_hash(config)}
    )
    os.environ["ROPEEXT_PARENT_RUN_ID"] = run_id
    os.environ["ROPEEXT_SUMMARY"] = summary_path(config)
    describe_invocation(uri, run_id, config, write_resolved_config(config, config["results_dir"]), summary_path(config))


def summary_path(config: dict) -> str:
    return str(Path(config["results_dir"]) / "report" / "summary.md")


def end_invocation(status: str) -> None:
    """Close the parent run (deleted when nothing ran under it)."""
    run_id = os.environ.pop("ROPEEXT_PARENT_RUN_ID", None)
    if run_id:
        attach_summary(os.environ["MLFLOW_TRACKING_URI"], run_id, os.environ.get("ROPEEXT_SUMMARY", ""))
        end_parent(os.environ["MLFLOW_TRACKING_URI"], run_id, status)
