import getpass

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
    assert r.info.status == "FINISHED" and r.data.params == {"a.b": "1", "stage": "solve", "variant": "v1"}
    assert r.data.metrics == {"x": 1.5}
    assert r.data.tags["ropeext.stage"] == "solve" and r.data.tags["ropeext.variant"] == "v1"
    assert r.data.tags["mlflow.user"] == getpass.getuser()
    assert (r.data.tags["mlflow.source.name"], r.data.tags["mlflow.source.type"]) == ("ropeext solve", "LOCAL")
    assert tracking.run_artifacts(uri, run.run_id) == {"a.json"}  # weights are not copied


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


@pytest.fixture
def parent_run(tmp_path, monkeypatch):
    """A sqlite store with an invocation's parent run open, and the environment its jobs' runs read:
    (store URI, parent run id)."""
    uri = f"sqlite:///{tmp_path}/m.db"
    parent = tracking.start_parent(uri, "exp")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "exp")
    monkeypatch.setenv("ROPEEXT_PARENT_RUN_ID", parent)
    return uri, parent


def test_a_workflow_job_and_the_parent_run_record_user_and_source(parent_run, monkeypatch):
    """A job of the workflow is the JOB of its rule, nested under the invocation's parent run (snakemake)."""
    uri, parent = parent_run
    monkeypatch.setenv("ROPEEXT_RULE", "extend")
    monkeypatch.setenv("ROPEEXT_WILDCARDS", "target=1024")
    with tracking.stage_run("extend") as run:
        pass
    client = mlflow.MlflowClient(uri)
    job, top = client.get_run(run.run_id).data.tags, client.get_run(parent).data.tags
    assert (job["mlflow.source.name"], job["mlflow.source.type"]) == ("extend", "JOB")
    assert job["mlflow.parentRunId"] == parent and job["ropeext.wildcards.target"] == "1024"
    assert (top["mlflow.source.name"], top["mlflow.source.type"]) == ("snakemake", "LOCAL")
    assert job["mlflow.user"] == top["mlflow.user"] == getpass.getuser()


@pytest.mark.parametrize(
    "stages, name",
    [
        (["report"], "workflow: report"),
        (["finetune", "eval_ppl", "finetune", "report"], "workflow: finetune x2, eval_ppl, report"),
        (["corpus", "tokenizer", "pack", "pack", "pretrain"], "workflow: 5 runs (corpus, tokenizer, pack x2, ...)"),
    ],
)
def test_an_invocation_is_named_by_what_ran_under_it(stages, name):
    assert tracking.invocation_name(stages) == name


def test_the_parent_run_is_named_by_its_jobs_when_it_ends(parent_run):
    """Four invocations in the runs table read apart: each parent is renamed for the runs under it."""
    uri, parent = parent_run
    for stage in ("finetune", "finetune", "report"):
        with tracking.stage_run(stage):
            pass
    tracking.end_parent(uri, parent)
    run = mlflow.MlflowClient(uri).get_run(parent)
    assert (run.info.run_name, run.info.status) == ("workflow: finetune x2, report", "FINISHED")


def test_a_run_whose_process_died_is_closed_killed_by_the_next_attempt(tmp_path, monkeypatch):
    """A job killed with every process at once (SIGKILL) cannot close its run; the next attempt of the same
    job on this machine ends it KILLED. A run of the same job whose process still lives is left alone,
    and so is another job's."""
    import subprocess
    import sys

    import mlflow

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "exp")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    exp = tracking.init_store(uri, "exp")
    client = mlflow.MlflowClient(uri)

    def running(stage: str, pid: int) -> str:
        tags = {"ropeext.stage": stage, **tracking.process_tags(), "ropeext.pid": str(pid)}
        return client.create_run(exp, tags=tags).info.run_id

    gone, other_job = running("finetune", dead.pid), running("pretrain", dead.pid)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # a ropeext job"])
    try:
        alive = running("finetune", live.pid)
        with tracking.stage_run("finetune"):
            pass
    finally:
        live.kill()
    status = {r: client.get_run(r).info.status for r in (gone, other_job, alive)}
    assert status == {gone: "KILLED", other_job: "RUNNING", alive: "RUNNING"}
    assert "its process died" in client.get_run(gone).data.tags["ropeext.ended"]


def test_the_experiment_opens_on_its_runs_and_the_parent_run_carries_the_config(parent_run, tmp_path, monkeypatch):
    """A model-training experiment with a description; the parent run holds the resolved config, the
    settings as params and, at the end, the summary; each job's run has stage/variant/method/layout/
    target_length as params."""
    from ropeext.config import validate_config

    uri, parent = parent_run
    config = validate_config({"experiment": "demo", "results_dir": str(tmp_path / "results")})
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    summary = tmp_path / "summary.md"
    tracking.describe_invocation(uri, parent, config, str(tmp_path / "config.yaml"), str(summary))
    monkeypatch.setenv("ROPEEXT_WILDCARDS", "method=dprope,target=1024,layout=anchor")
    with tracking.stage_run("eval_ppl", variant="demo-dprope-1024-anchor", params={"stride": 64}) as run:
        for length, ppl in ((256, 9.0), (1024, 12.0)):
            run.log_metrics({"ppl": ppl}, step=length)
    summary.write_text("# summary\n")
    (tmp_path / "headline.csv").write_text(
        "evaluation,at,length,best,value,lo,hi,n,not_told_apart\n"
        "perplexity,L,512,demo-pi-1024-noft,9.5,,,,\n"
        "perplexity,L',1024,demo-dprope-1024-anchor,12.0,11.5,12.6,40,demo-pi-1024-noft\n"
        "RULER average,L',1024,demo-pi-1024-noft,,,,,\n"
    )
    tracking.attach_summary(uri, parent, str(summary))

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "`demo`" in exp.tags["mlflow.note.content"] and str(summary) in exp.tags["mlflow.note.content"]
    top = client.get_run(parent)
    assert top.data.params["experiment"] == "demo" and top.data.params["config_hash"]
    assert tracking.run_artifacts(uri, parent) == {"config/config.yaml", "summary.md", "headline.csv"}
    # the headline table: the best variant per evaluation within L and at L', as metrics and tags of the parent
    assert top.data.metrics == {"headline.perplexity.within_512": 9.5, "headline.perplexity.at_1024": 12.0}
    assert top.data.tags["headline.perplexity.at_1024.best"] == "demo-dprope-1024-anchor"
    assert top.data.tags["headline.perplexity.at_1024.tied"] == "demo-pi-1024-noft"
    assert top.data.tags["headline.ruler_average.at_1024.best"] == "demo-pi-1024-noft"
    assert "headline.perplexity.within_512.tied" not in top.data.tags
    job = client.get_run(run.run_id).data.params
    assert {k: job[k] for k in ("stage", "variant", "method", "layout", "target_length", "stride")} == {
        "stage": "eval_ppl",
        "variant": "demo-dprope-1024-anchor",
        "method": "dprope",
        "layout": "anchor",
        "target_length": "1024",
        "stride": "64",
    }
    curve = client.get_metric_history(run.run_id, "ppl")
    assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == [(256, 9.0), (1024, 12.0)]
