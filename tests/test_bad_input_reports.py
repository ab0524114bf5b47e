"""Beside tests/test_bad_input.py: faults that reach the report rather than stop a job.

- ``WALL``: two runs whose inputs differ only in their wall times (as two identical runs do) give
  byte-identical ``summary.md``; the training-time check is inconclusive below
  ``report.min_wall_seconds`` or near the paper's ratio, and decides only away from both;
- ``WARNED``: a job's warnings about its inputs (a non-integer scale, corpus files that are not UTF-8)
  reach its MLflow run, its record under ROPEEXT_WARNINGS_DIR, the report's Warnings section and the
  end of the workflow; library notices do not.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import mlflow
import pytest
import yaml

from ropeext import job_warnings, tracking
from ropeext.cli import main
from ropeext.report import findings as F
from ropeext.report.summary import build_report
from ropeext.workflow import export_warnings_env, print_warnings
from tests.conftest import REPO
from tests.test_report_findings import _config, _training_summary, _write

VARIANTS = {  # variant -> perplexity at 8192 and 16384
    "smollm2-none-16384-noft": (3.0, 40.0),
    "smollm2-dprope-16384-noft": (3.0, 3.6),
    "smollm2-dprope-16384-full": (3.0, 3.3),
    "smollm2-dprope-16384-anchor": (3.0, 3.25),
}


def _inputs(root: Path, seconds: dict[str, float], warned: Path | None = None) -> dict:
    """Report inputs as the stages write them; ``seconds``: layout -> the fine-tune's wall time."""
    inputs = {"ppl": [], "references": REPO / "config" / "reference_values.yaml", "warnings": warned}
    for v, (within, at) in VARIANTS.items():
        metrics = {"variant": v, "lengths": [8192, 16384], "ppl": {"8192": within, "16384": at}, "tokens_scored": 64}
        inputs["ppl"].append(_write(root / "eval/ppl" / v / "metrics.json", metrics))
    inputs["training"] = [
        _write(root / f"models/smollm2-dprope-16384-{lay}/training_summary.json", _training_summary(lay, secs))
        for lay, secs in seconds.items()
    ]
    return inputs


# (id, wall times of run A, of run B (full, anchor), the check's verdict, words of its sentence)
WALL = [
    ("short_runs", (0.3, 0.07), (0.12, 0.25), None, "a run took less than 60 s of training"),
    ("long_runs_far_from_the_claim", (120.0, 95.0), (118.0, 97.5), False, "anchor took at least 0.55x"),
    ("long_runs_twice_as_fast", (300.0, 90.0), (310.0, 120.0), True, "anchor took at most 0.45x"),
    ("long_runs_at_the_claim", (200.0, 104.0), (210.0, 97.0), None, "anchor took between 0.45x and 0.55x"),
]


@pytest.mark.parametrize("case, run_a, run_b, agrees, says", WALL, ids=[w[0] for w in WALL])
def test_identical_runs_give_byte_identical_reports(case, run_a, run_b, agrees, says, tmp_path):
    config = _config()
    assert config["report"]["min_wall_seconds"] == 60  # the schema's default
    warned = _write(
        tmp_path / "warnings/corpus.json",
        {"stage": "corpus", "warnings": [{"category": "warning", "message": "corpus: skipped 1 file"}]},
    ).parent
    md = []
    for name, (full, anchor) in (("a", run_a), ("b", run_b)):
        inputs = _inputs(tmp_path / name, {"full": full, "anchor": anchor}, warned)
        build_report(config, inputs, tmp_path / name / "report")
        md.append((tmp_path / name / "report" / "summary.md").read_bytes())
        (check,) = F.anchor_time_checks({"dprope": {"full": full, "anchor": anchor}}, 60)
        assert check.agrees is agrees and says in check.text
    assert md[0] == md[1]
    text = md[0].decode()
    section = text[text.index("## Where our numbers disagree") :]
    heading = {None: "**Inconclusive**", True: "**Supported**", False: "**Contradicted**"}[agrees]
    assert says in section[section.index(heading) :]
    assert "- 1 warning from the jobs (see Warnings)." in text and "  - warning: corpus: skipped 1 file" in text


def test_a_lower_minimum_lets_the_same_runs_decide(tmp_path):
    config = _config()
    config["report"]["min_wall_seconds"] = 0.01
    build_report(config, _inputs(tmp_path, {"full": 0.3, "anchor": 0.07}), tmp_path / "report")
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "anchor took at most 0.45x the wall time of full attention" in text
    assert "## Warnings" not in text  # no warnings folder was given


# ----------------------------------------------------------------------------- warnings
def _non_integer_scale(tmp: Path) -> list[str]:
    return ["solve", "--rope-theta", "10000", "--head-dim", "16", "--train-length", "32", "--target-length", "80"] + [
        "--method",
        "pi",
        "--output",
        str(tmp / "scaling.json"),
    ]


def _non_utf8_corpus(tmp: Path) -> list[str]:
    folder = tmp / "txt"
    folder.mkdir()
    for i in range(12):
        (folder / f"ok{i}.txt").write_text(f"document {i} " * 20)
    (folder / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 40)
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["corpus"] = {"source": "text", "path": str(folder), "min_chars": 10}
    (tmp / "c.yaml").write_text(yaml.safe_dump(config))
    return ["corpus", "--config", str(tmp / "c.yaml"), "--output-dir", str(tmp / "corpus")]


# (id, command line, rule and wildcards of its workflow job, words of the warning)
WARNED = [
    ("non_integer_scale", _non_integer_scale, ("solve", "target=80"), ("NonIntegerScaleWarning", "80/32 = 2.5")),
    ("non_utf8_corpus", _non_utf8_corpus, ("corpus", ""), ("not UTF-8: 1", "latin1.txt")),
]


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    """A workflow job's environment: its rule, the warnings folder and the invocation."""
    for key in ("ROPEEXT_RULE", "ROPEEXT_WILDCARDS", job_warnings.DIR_ENV, job_warnings.INVOCATION_ENV, "RANK"):
        monkeypatch.delenv(key, raising=False)
    export_warnings_env(str(tmp_path / "results"))
    job_warnings.take()  # nothing left over from an earlier test of this process
    return tmp_path / "results" / "warnings"


@pytest.mark.parametrize("case, argv, job, says", WARNED, ids=[w[0] for w in WARNED])
def test_a_jobs_warning_reaches_its_record_the_report_and_the_end_of_the_workflow(
    case, argv, job, says, job_env, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("ROPEEXT_RULE", job[0])
    monkeypatch.setenv("ROPEEXT_WILDCARDS", job[1])
    assert main(argv(tmp_path) + ["--no-mlflow"]) == 0
    capsys.readouterr()
    (record,) = job_warnings.read_records(job_env)
    text = "\n".join(f"{w['category']}: {w['message']}" for w in record["warnings"])
    assert all(s in text for s in says), text
    assert (record["rule"], record["wildcards"]) == job

    build_report(_config(), {"warnings": job_env}, tmp_path / "report")
    md = (tmp_path / "report" / "summary.md").read_text()
    section = md[md.index("## Warnings") :]
    assert f"- `{job_warnings.label(record)}`:" in section and all(s in section for s in says)

    assert print_warnings() == 1  # what the Snakefile's onsuccess / onerror call
    err = capsys.readouterr().err
    assert "ropeext: 1 warning from 1 job of this run" in err and all(s in err for s in says)


def test_the_warning_is_a_tag_of_the_jobs_mlflow_run(job_env, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "exp")
    assert main(_non_integer_scale(tmp_path)) == 0
    (run,) = mlflow.MlflowClient(uri).search_runs([mlflow.get_experiment_by_name("exp").experiment_id])
    assert run.data.tags[job_warnings.TAG].startswith("NonIntegerScaleWarning: the scale s = 80/32 = 2.5")


def test_library_notices_are_left_to_the_log_and_a_clean_rerun_drops_the_record(job_env, monkeypatch, capsys):
    monkeypatch.setenv("ROPEEXT_RULE", "pack")
    shown = []
    job_warnings.install(lambda message, *rest: shown.append(str(message)))  # the log's printer
    with tracking.stage_run("pack", enabled=False):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn_explicit("old API", DeprecationWarning, "/env/site-packages/lib/mod.py", 1)
            warnings.warn_explicit("a library notice", UserWarning, "/env/site-packages/lib/mod.py", 2)
        job_warnings.note("packed data: something about your input")
    assert shown == ["old API", "a library notice"]  # in the log, not in the record
    (record,) = job_warnings.read_records(job_env)
    assert record["warnings"] == [{"category": "warning", "message": "packed data: something about your input"}]
    assert "warning: packed data" in capsys.readouterr().err  # still printed to the job's log
    with tracking.stage_run("pack", enabled=False):
        pass
    assert job_warnings.read_records(job_env) == []
    assert print_warnings() == 0 and capsys.readouterr().err == ""


def test_only_the_first_process_of_a_job_and_only_this_invocation(job_env, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    with tracking.stage_run("finetune", variant="v", enabled=False):
        job_warnings.note("seen by every process")
    assert not job_env.exists()
    monkeypatch.setenv("RANK", "0")
    with tracking.stage_run("finetune", variant="v", enabled=False):
        job_warnings.note("this run")
    earlier = json.loads(next(job_env.glob("*.json")).read_text()) | {"invocation": "earlier", "stage": "corpus"}
    (job_env / "corpus.json").write_text(json.dumps(earlier))
    assert print_warnings() == 1 and "finetune v" in capsys.readouterr().err
    assert len(job_warnings.read_records(job_env)) == 2  # the report lists both
    shutil.rmtree(job_env)
