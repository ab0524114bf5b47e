"""The job server: jobs forked from a warm process behave as the same job started cold.

What a job sees is compared between the two paths: its output on the caller's streams, its exit
status, its working directory, its environment (an MLflow store named only there). The fall-backs
(no server, a socket nobody serves, another package) start the job cold, and a worker whose client
goes away is killed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ropeext import jobserver
from tests.conftest import REPO

SOLVE = ["solve", "--head-dim", "16", "--rope-theta", "10000", "--train-length", "64", "--target-length", "256",
         "--method", "pi"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("jobserver") / "server.log"
    env_before = os.environ.get(jobserver.ENV)
    handle = jobserver.start(log=log)
    assert handle is not None
    path = handle[1]
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield {"path": path, "log": log, "pid": handle[0]}
    jobserver.stop(handle)
    if env_before is not None:
        os.environ[jobserver.ENV] = env_before
    assert not os.path.exists(os.path.dirname(path))


def _client(args, cwd, socket_path, **env):
    environ = {k: v for k, v in os.environ.items() if k != jobserver.ENV}
    environ["PYTHONPATH"] = str(REPO)
    if socket_path:
        environ[jobserver.ENV] = socket_path
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "ropeext.jobserver", "run", "--", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)


def _served(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if re.match(r"job \d+: ", line)]


def test_a_job_runs_forked_with_the_clients_directory_streams_and_status(server, tmp_path):
    before = len(_served(server["log"]))
    out = _client([*SOLVE, "--output", "rel/pi.json", "--no-mlflow"], tmp_path, server["path"])
    assert out.returncode == 0, out.stderr
    assert "pi: disturbance" in out.stdout
    assert json.loads((tmp_path / "rel" / "pi.json").read_text())["method"] == "pi"
    served = _served(server["log"])
    assert len(served) == before + 1 and "solve" in served[-1]

    bad = _client([*SOLVE[:-1], "bogus", "--output", "x.json", "--no-mlflow"], tmp_path, server["path"])
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --method must be one of")
    usage = _client(["no-such-command"], tmp_path, server["path"])
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_the_job_sees_the_clients_environment(server, tmp_path):
    store = tmp_path / "store.db"
    out = _client([*SOLVE, "--output", "pi.json"], tmp_path, server["path"],
                  MLFLOW_TRACKING_URI=f"sqlite:///{store}", MLFLOW_EXPERIMENT_NAME="forked")
    assert out.returncode == 0, out.stderr
    spool = tmp_path / "results" / ".mlflow-spool"  # solve by hand: imported in the background
    deadline = time.monotonic() + 120
    while list(spool.glob("*.json")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("forked").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["disturbance"] > 0


@pytest.mark.parametrize("where", ["unset", "nobody", "other_package"])
def test_without_a_reachable_server_the_job_starts_cold(server, tmp_path, where):
    before = len(_served(server["log"]))
    if where == "unset":
        path = None
    elif where == "nobody":
        path = str(tmp_path / "no.sock")
    else:  # a server of another checkout: same interpreter, different package
        path = server["path"]
    env = {}
    if where == "other_package":
        copy = tmp_path / "checkout"
        copy.mkdir()
        os.symlink(REPO / "ropeext", copy / "ropeext")
        env["PYTHONPATH"] = str(copy)
    out = _client([*SOLVE, "--output", "pi.json", "--no-mlflow"], tmp_path, path, **env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "pi.json").is_file()
    assert len(_served(server["log"])) == before


def test_a_worker_whose_client_is_gone_is_killed():
    ours, theirs = socket.socketpair()
    worker = os.fork()
    if worker == 0:  # like the real worker, it holds no end of the connection
        ours.close()
        theirs.close()
        time.sleep(60)
        os._exit(0)
    theirs.close()
    t0 = time.monotonic()
    assert jobserver._wait(worker, ours) == 1
    assert time.monotonic() - t0 < 30
    with pytest.raises(ChildProcessError):
        os.waitpid(worker, 0)


def test_the_worker_status_is_its_exit_code_or_signal():
    for code, expected in ((0, 0), (3, 3)):
        ours, theirs = socket.socketpair()
        worker = os.fork()
        if worker == 0:
            os._exit(code)
        assert jobserver._wait(worker, ours) == expected
    ours, theirs = socket.socketpair()
    worker = os.fork()
    if worker == 0:
        time.sleep(60)
        os._exit(0)
    os.kill(worker, signal.SIGTERM)
    assert jobserver._wait(worker, ours) == 128 + signal.SIGTERM


def test_the_client_reads_messages_that_arrive_together(tmp_path, monkeypatch):
    """A job that ends at once: its pid and its status reach the client in one read."""
    import threading

    path = str(tmp_path / "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    seen = {}

    def fake_server():
        conn, _ = listener.accept()
        jobserver._send(conn, {"pid": os.getpid(), **jobserver._identity()})
        seen["request"], fds = jobserver._receive(conn, want_fds=3)
        for fd in fds:
            os.close(fd)
        conn.sendall(b'{"pid": 999999}\n{"status": 7}\n')  # one write, both messages
        conn.close()

    thread = threading.Thread(target=fake_server)
    thread.start()
    monkeypatch.setenv(jobserver.ENV, path)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        assert jobserver.run(["solve", "--help"]) == 7
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        thread.join(timeout=30)
        listener.close()
    assert seen["request"]["argv"] == ["solve", "--help"] and seen["request"]["cwd"] == os.getcwd()
