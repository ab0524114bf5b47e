import mlflow
import pytest

from ropeext import tracking
from ropeext.errors import RopeextError


def test_stage_run_logs_params_metrics_tags_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "exp")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.json").write_text("{}")
    (tmp_path / "out" / "weights.bin").write_bytes(b"x")
    with tracking.stage_run("solve", params={"a": {"b": 1}}, variant="v1") as run:
        run.log_metrics({"x": 1.5, "bad": float("nan"), "skip": "text"}, step=3)
        run.log_outputs(tmp_path / "out")
    client = mlflow.MlflowClient(uri)
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED" and r.data.params == {"a.b": "1"}
    assert r.data.metrics == {"x": 1.5}
    assert r.data.tags["ropeext.stage"] == "solve" and r.data.tags["ropeext.variant"] == "v1"
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["a.json"]  # weights are not copied


def test_failed_stage_marks_the_run_failed(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(RopeextError):
        with tracking.stage_run("pack") as run:
            raise RopeextError("boom")
    assert mlflow.MlflowClient(uri).get_run(run.run_id).info.status == "FAILED"


def test_a_metric_the_store_refuses_warns_instead_of_killing_the_job(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    with tracking.stage_run("finetune") as run:
        calls = []

        def refuse(*a, **k):
            calls.append(1)
            raise RuntimeError("database is locked")

        monkeypatch.setattr(run._mlflow, "log_metrics", refuse)
        with pytest.warns(RuntimeWarning, match="could not log metrics"):
            run.log_metrics({"loss": 1.0}, step=1)
        assert len(calls) == 4
        monkeypatch.undo()


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(RopeextError, match="cannot be reached"):
        tracking.check_reachable("http://127.0.0.1:9", timeout=2)


def test_tracking_off(monkeypatch):
    monkeypatch.setenv("ROPEEXT_MLFLOW", "0")
    with tracking.stage_run("x") as run:
        assert not run.active
        run.log_metrics({"a": 1})


def test_a_spooled_run_is_imported_whole_and_the_job_never_opens_the_store(tmp_path, monkeypatch):
    """With ROPEEXT_MLFLOW_SPOOL the job writes its run to a file (MLflow not even imported); flush_spool
    imports it with its tags, params, metric steps, artifacts, status and times, then deletes the file."""
    import json
    import subprocess
    import sys

    spool = tmp_path / "spool"
    out = tmp_path / "table.csv"
    out.write_text("a,b\n1,2\n")
    job = ("import sys; from ropeext import tracking\n"
           "with tracking.stage_run('probe', params={'k': {'x': 3}}, variant='v1', tags={'t': 'u'}) as run:\n"
           f"    run.log_metrics({{'loss': 2.5}}, step=1); run.log_metrics({{'loss': 1.5}}, step=2)\n"
           f"    run.log_outputs({str(out)!r})\n"
           "print('mlflow' in sys.modules)")
    env = {**__import__("os").environ, "ROPEEXT_MLFLOW_SPOOL": str(spool), "ROPEEXT_PARENT_RUN_ID": "parent0",
           "MLFLOW_TRACKING_URI": "sqlite:///nowhere/never.db"}
    done = subprocess.run([sys.executable, "-c", job], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # the job never imported MLflow
    assert not (tmp_path / "nowhere").exists()
    [record] = [json.loads(f.read_text()) for f in spool.glob("*.json")]
    assert record["status"] == "FINISHED" and record["tags"]["mlflow.parentRunId"] == "parent0"

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.flush_spool(uri, "exp", spool) == 1
    assert not list(spool.glob("*.json"))
    client = mlflow.MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "probe:v1"
    assert run.info.start_time == record["start_time"] and run.info.end_time == record["end_time"]
    assert run.data.params == {"k.x": "3"}
    assert run.data.tags["ropeext.stage"] == "probe" and run.data.tags["t"] == "u"
    assert run.data.tags["ropeext.variant"] == "v1" and run.data.tags["mlflow.parentRunId"] == "parent0"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(1, 2.5), (2, 1.5)]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["table.csv"]
    assert tracking.flush_spool(uri, "exp", spool) == 0  # nothing left, nothing twice


def test_a_failed_spooled_job_is_recorded_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPEEXT_MLFLOW_SPOOL", str(tmp_path / "spool"))
    with pytest.raises(RuntimeError):
        with tracking.stage_run("probe"):
            raise RuntimeError("boom")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.flush_spool(uri, "exp", tmp_path / "spool") == 1
    client = mlflow.MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.info.status == "FAILED"


def _spooled_record(folder, name, **extra):
    from ropeext.io import write_json

    rec = {"run_name": name, "tags": {"ropeext.stage": "solve"}, "params": {"p": "1"}, "metrics": [["m", 2.0, 0, 0]],
           "artifacts": [], "start_time": 1000, "end_time": 2000, "status": "FINISHED", **extra}
    write_json(folder / f"{name}.json", rec)


def test_a_flush_imports_only_the_records_of_its_store(tmp_path):
    folder = tmp_path / "spool"
    folder.mkdir()
    mine, other = f"sqlite:///{tmp_path}/mine.db", f"sqlite:///{tmp_path}/other.db"
    _spooled_record(folder, "workflow-job")                                  # a workflow job's: any store
    _spooled_record(folder, "by-hand-mine", uri=mine, experiment="e")
    _spooled_record(folder, "by-hand-other", uri=other, experiment="e")
    _spooled_record(folder, "by-hand-other-exp", uri=mine, experiment="f")
    assert tracking.flush_spool(mine, "e", folder) == 2
    assert sorted(p.name for p in folder.glob("*.json")) == ["by-hand-other-exp.json", "by-hand-other.json"]
    client = mlflow.MlflowClient(mine)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["by-hand-mine", "workflow-job"]


def test_concurrent_flushes_import_each_run_once(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    folder = tmp_path / "spool"
    folder.mkdir()
    uri = f"sqlite:///{tmp_path}/m.db"
    tracking.init_store(uri, "e")  # the store exists before the race, as at workflow start
    for i in range(6):
        _spooled_record(folder, f"r{i}", uri=uri, experiment="e")
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "ropeext.tracking", "flush", uri, "e", str(folder)], env=env)
             for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"r{i}" for i in range(6)]
    assert not list(folder.glob("*.json"))
