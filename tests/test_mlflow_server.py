"""MLflow lineage against a real `mlflow server`: a tiny DAG logs to it over HTTP, checked through the REST API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
CONFIG = REPO / ".test" / "config.yaml"
# Jobs that need no model: the RoPE job of each target length (scaling JSON, tables, PNG).
FIRST = [
    "results/rope/scaling/dprope-64.json",
    "results/rope/compare-64/table.csv",
    "results/rope/scaling/dprope-96.json",
]
ADDED = "results/rope/angles-128/heatmap.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, endpoint: str, **query) -> bytes:
    url = f"{base}{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on a free local port with a sqlite store and proxied artifacts; stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root}/m.db",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "art"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=root,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if _get(base, "/health").strip() == b"OK":
                    break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"mlflow server did not come up:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"uri": base, "root": root}
    finally:
        # the server forks workers: stop its whole process group
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()


def _snakemake(workdir: Path, uri: str, *targets: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", MLFLOW_TRACKING_URI=uri)
    for key in ("MLFLOW_EXPERIMENT_NAME", "ROPEEXT_PARENT_RUN_ID", "ROPEEXT_MLFLOW"):
        env.pop(key, None)
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile", str(CONFIG), "--cores", "2", *targets]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def _check(proc: subprocess.CompletedProcess, workdir: Path) -> None:
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(workdir.glob("results/logs/*/*.log")))
        pytest.fail(f"snakemake failed:\n{proc.stderr[-4000:]}\n{logs}")


def _runs(uri: str) -> tuple[str, list[dict]]:
    name = yaml.safe_load(CONFIG.read_text())["mlflow"]["experiment"]
    exp = json.loads(_get(uri, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=name))["experiment"]
    runs, token = [], None
    while True:
        body = {"experiment_ids": [exp["experiment_id"]], "max_results": 500, "run_view_type": "ACTIVE_ONLY"}
        if token:
            body["page_token"] = token
        page = _post(uri, "/api/2.0/mlflow/runs/search", body)
        runs.extend(page.get("runs", []))
        token = page.get("next_page_token")
        if not token:
            return exp["experiment_id"], runs


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _params(run: dict) -> dict:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def _artifacts(uri: str, run_id: str) -> set[str]:
    listing = json.loads(_get(uri, "/api/2.0/mlflow/artifacts/list", run_id=run_id))
    return {f["path"] for f in listing.get("files", []) if not f.get("is_dir")}


@pytest.fixture(scope="module")
def lineage(server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lineage")
    _check(_snakemake(workdir, server["uri"], *FIRST), workdir)
    _, runs = _runs(server["uri"])
    return {"workdir": workdir, "runs": runs, **server}


def test_one_parent_and_one_child_per_job(lineage):
    uri, runs, workdir = lineage["uri"], lineage["runs"], lineage["workdir"]
    parents = [r for r in runs if _tags(r).get("ropeext.stage") == "workflow"]
    children = [r for r in runs if _tags(r).get("ropeext.stage") != "workflow"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent["info"]["status"] == "FINISHED"
    ptags = _tags(parent)
    assert ptags["ropeext.experiment"] == yaml.safe_load(CONFIG.read_text())["experiment"]
    assert len(ptags["ropeext.config_hash"]) >= 8 and len(ptags["git.sha"]) == 40

    jobs = sorted(workdir.glob("results/benchmarks/*/*.tsv"))  # one benchmark file per executed job
    assert len(children) == len(jobs) == 2
    by_variant = {}
    for run in children:
        tags = _tags(run)
        assert run["info"]["status"] == "FINISHED", run["info"]
        assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]
        assert tags["git.sha"] == ptags["git.sha"] and tags["git.dirty"] in ("true", "false")
        by_variant[(tags["ropeext.stage"], tags["ropeext.variant"])] = run
    assert set(by_variant) == {("rope", "micro-64"), ("rope", "micro-96")}

    rope = by_variant[("rope", "micro-64")]
    params = _params(rope)
    assert params["target_length"] == "64" and params["train_length"] == "32" and params["bins"] == "90"
    assert {m["key"] for m in rope["data"]["metrics"]} >= {"disturbance.dprope", "reduction_vs_pi.yarn"}
    files = _artifacts(uri, rope["info"]["run_id"])
    assert {"none-64.json", "dprope-64.json", "table.csv", "compare.json", "heatmap.png"} <= files
    local = workdir / "results" / "rope" / "scaling" / "dprope-64.json"
    remote = _get(uri, "/get-artifact", path=local.name, run_uuid=rope["info"]["run_id"])
    assert json.loads(remote) == json.loads(local.read_text())
    table = workdir / "results" / "rope" / "compare-64" / "table.csv"
    assert _get(uri, "/get-artifact", path="table.csv", run_uuid=rope["info"]["run_id"]) == table.read_bytes()
    # artifacts went through the server (proxied), not into the job's working directory
    assert list((lineage["root"] / "art").rglob("table.csv"))
    assert not (workdir / "mlruns").exists() and not (workdir / "mlartifacts").exists()


def test_cached_jobs_add_no_run(lineage):
    uri, workdir = lineage["uri"], lineage["workdir"]
    before = {r["info"]["run_id"] for r in lineage["runs"]}

    same = _snakemake(workdir, uri, *FIRST)
    _check(same, workdir)
    assert "Nothing to be done" in same.stdout + same.stderr
    _, runs = _runs(uri)
    assert {r["info"]["run_id"] for r in runs} == before

    # one more target: only the new job (and this invocation's parent) adds runs
    _check(_snakemake(workdir, uri, *FIRST, ADDED), workdir)
    _, runs = _runs(uri)
    new = [r for r in runs if r["info"]["run_id"] not in before]
    stages = sorted(_tags(r)["ropeext.stage"] for r in new)
    assert stages == ["rope", "workflow"]
    parent = next(r for r in new if _tags(r)["ropeext.stage"] == "workflow")
    rope = next(r for r in new if _tags(r)["ropeext.stage"] == "rope")
    assert _tags(rope)["mlflow.parentRunId"] == parent["info"]["run_id"]
    assert parent["info"]["run_name"] == "workflow: rope"  # named for the one job that ran under it
    assert "heatmap.png" in _artifacts(uri, rope["info"]["run_id"])


def test_unreachable_server_fails_before_any_job(tmp_path):
    port = _free_port()  # nothing listens there
    uri = f"http://127.0.0.1:{port}"
    start = time.time()
    proc = _snakemake(tmp_path, uri, *FIRST)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert f"MLflow tracking server {uri} cannot be reached" in err
    assert "MLFLOW_TRACKING_URI" in err
    assert time.time() - start < 120
    # no job started: no outputs, no job logs, no benchmark files
    assert not (tmp_path / "results" / "rope").exists()
    assert not (tmp_path / "logs").exists() and not (tmp_path / "benchmarks").exists()
