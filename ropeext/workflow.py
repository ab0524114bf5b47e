"""Python support for the Snakemake workflow (called from workflow/rules/common.smk and the Snakefile).

Kept in the package so the rule files stay declarative: the resolved config every job reads,
the MLflow environment jobs inherit, and the parent run of one workflow invocation.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ropeext.config import config_hash
from ropeext.io import write_text


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
    from ropeext.tracking import store_uri

    os.environ.setdefault("MLFLOW_TRACKING_URI", store_uri(config))
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", config["mlflow"]["experiment"])


_JOB_SERVER = None
# The job server costs one start-up of its own (about 7 s of imports) and saves about 3 s per job: it
# starts when at least this many jobs that can use it are to run.
JOB_SERVER_MIN_JOBS = 5


def start_invocation(config: dict, server_jobs: int = JOB_SERVER_MIN_JOBS) -> None:
    """Open the store once (failing fast when it cannot be reached), import runs an interrupted invocation
    left in the spool, open this invocation's parent run, and start the job server (``job_server``) when
    ``server_jobs`` (the jobs to run that can use it) make it worth its start-up."""
    global _JOB_SERVER
    from ropeext.tracking import flush_spool, spool_dir, start_parent

    uri, experiment = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_EXPERIMENT_NAME"]
    run_id = start_parent(uri, experiment,
                          tags={"ropeext.experiment": config["experiment"], "ropeext.config_hash": config_hash(config)})
    flush_spool(uri, experiment, spool_dir(config))
    os.environ["ROPEEXT_PARENT_RUN_ID"] = run_id
    if config["job_server"] and server_jobs >= JOB_SERVER_MIN_JOBS:
        from ropeext import jobserver

        _JOB_SERVER = jobserver.start(log=Path(config["results_dir"]) / "logs" / "job_server.log")


def end_invocation(config: dict, status: str) -> None:
    """Stop the job server, import the runs the jobs spooled, then close the parent run (deleted when
    nothing ran under it)."""
    global _JOB_SERVER
    from ropeext import jobserver
    from ropeext.tracking import end_parent, flush_spool, spool_dir

    jobserver.stop(_JOB_SERVER)
    _JOB_SERVER = None

    uri = os.environ["MLFLOW_TRACKING_URI"]
    flush_spool(uri, os.environ["MLFLOW_EXPERIMENT_NAME"], spool_dir(config))
    run_id = os.environ.pop("ROPEEXT_PARENT_RUN_ID", None)
    if run_id:
        end_parent(uri, run_id, status)
