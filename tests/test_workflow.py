"""One real Snakemake run of the whole DAG on the micro config (.test/config.yaml)."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ropeext import tracking
from ropeext.suites import SUITES
from tests.conftest import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _unactivated_env() -> dict:
    """The environment of a shell where the virtualenv is NOT activated: its bin is not on PATH."""
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()]
    env = dict(os.environ, PATH=os.pathsep.join(path))
    for key in ("MLFLOW_TRACKING_URI", "ROPEEXT_PARENT_RUN_ID", "VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(key, None)
    if Path(os.environ.get("PYTHONPATH") or "/nonexistent").resolve() == REPO.resolve():
        env["PYTHONPATH"] = str(REPO)  # a second checkout tested with the venv of another: its jobs run its code
    return env


def _snakemake(workdir: Path, *args: str, check: bool = True, configs: tuple = ()) -> subprocess.CompletedProcess:
    """`.venv/bin/snakemake` by its path, as the README runs it, without activating the virtualenv."""
    cmd = [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        *map(str, configs),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=workdir, env=_unactivated_env(), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(workdir.glob("**/logs/*/*.log")))
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-4000:]}\n{logs}")
    return proc


# The micro run's results folder holds a space, both quote characters and non-ASCII letters (paths are data,
# never shell words); `results` beside it links to it, so the tests below read it as the README names it.
ODD_NAME = 'rés ul\'ts "q"'
WRITTEN_OUTSIDE: dict[Path, set] = {}  # workdir -> files the run wrote outside its results folder


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _micro(workdir: Path, *args: str, check: bool = True, configs: tuple = ()) -> subprocess.CompletedProcess:
    """`_snakemake` on the micro run's folder, with its odd results folder."""
    return _snakemake(workdir, *args, check=check, configs=(workdir / "odd.yaml", *configs))


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("micro")
    results = workdir / ODD_NAME
    (workdir / "odd.yaml").write_text(yaml.safe_dump({"results_dir": str(results)}, allow_unicode=True))
    before = _files(workdir)
    _micro(workdir)
    WRITTEN_OUTSIDE[workdir] = {
        p for p in _files(workdir) - before if results not in p.parents and ".snakemake" not in p.parts
    }
    (workdir / "results").symlink_to(ODD_NAME)
    return workdir


def test_a_results_folder_with_odd_characters_holds_everything(micro_run):
    """The whole DAG ran under a results folder named with a space, quotes and non-ASCII letters: nothing was
    written outside it but Snakemake's own .snakemake folder, and no output lock is left."""
    assert not WRITTEN_OUTSIDE[micro_run], sorted(WRITTEN_OUTSIDE[micro_run])
    assert not list((micro_run / ODD_NAME).rglob("*.lock"))


def _runs(workdir: Path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir}/results/mlflow.db")
    exps = [e for e in client.search_experiments() if e.name != "Default"]
    assert [e.name for e in exps] == ["ropeext-micro"]
    return client, client.search_runs([exps[0].experiment_id], max_results=1000)


def test_report_has_every_variant(micro_run):
    import pandas as pd

    summary = (micro_run / "results" / "report" / "summary.md").read_text()
    table = pd.read_csv(micro_run / "results" / "report" / "ppl.csv", index_col=0)
    variants = {f"micro-{m}-64-{lay}" for m in ("none", "dprope") for lay in ("noft", "full", "anchor")}
    assert set(table.index) == variants
    assert list(table.columns[-3:]) == ["32", "64", "128"]
    assert (table[["32", "64", "128"]] > 1).all().all()
    for v in variants:
        assert v in summary
    # every evaluation recorded its precision (eval.dtype auto: this machine's decision) and the report names it
    assert "Evaluation precision: the forward passes ran in " in summary and "eval.dtype auto: " in summary
    assert "Documents scored: `" in summary  # the perplexity section names its held-out documents
    fine = summary[summary.index("## Fine-tuning") :]
    assert "held-out loss" in fine and "on 8 validation windows" in fine  # the same windows for every variant
    assert (micro_run / "results" / "report" / "ppl.png").stat().st_size > 1000
    for section in (
        "RoPE disturbance",
        "Angle histograms",
        "Passkey retrieval",
        "LongBench-E-style",
        "Open LLM tasks",
        "RULER-style suite",
        "BF16 relative-position deviation",
    ):
        assert section in summary, section
    for csv in ("passkey.csv", "longbench.csv", "openllm.csv", "ruler.csv", "bf16.csv", "disturbance-compare-64.csv"):
        assert len(pd.read_csv(micro_run / "results" / "report" / csv)) >= 1, csv
    ruler = pd.read_csv(micro_run / "results" / "report" / "ruler.csv", index_col=0)
    assert ruler["512"].notna().all()  # every task fits at 512 tokens: an average exists


def test_a_benchmark_file_measures_the_job_itself(micro_run):
    """Every job is a plain process Snakemake starts: its benchmark file counts the memory of the job (an
    evaluation holds torch and a model: hundreds of MB), not that of a launcher."""
    import pandas as pd

    for tsv in sorted(micro_run.glob("results/benchmarks/eval_ppl/*.tsv")):
        row = pd.read_csv(tsv, sep="\t").iloc[0]
        assert row["max_rss"] > 150 and row["s"] > 0, (tsv.name, row.to_dict())


def test_one_mlflow_run_per_job_with_params_metrics_artifacts(micro_run):
    client, runs = _runs(micro_run)
    uri = f"sqlite:///{micro_run}/results/mlflow.db"
    jobs = sorted(micro_run.glob("results/benchmarks/*/*.tsv"))
    parents = [r for r in runs if r.data.tags.get("ropeext.stage") == "workflow"]
    stages = [r for r in runs if r.data.tags.get("ropeext.stage") != "workflow"]
    assert len(parents) == 1 and len(jobs) > 15
    # named for what ran under it, in the order the runs started (the corpus first)
    assert parents[0].info.run_name.startswith(f"workflow: {len(stages)} runs (corpus, ")
    top = parents[0].data  # the headline: the best variant per evaluation at L'
    assert top.metrics["headline.perplexity.at_64"] > 1
    assert top.tags["headline.perplexity.at_64.best"].startswith("micro-")
    for r in stages:
        assert r.info.status == "FINISHED", r.info.run_name
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.params, r.info.run_name
        assert "git.sha" in r.data.tags and r.data.tags["version.torch"].startswith("2.13")
        assert r.data.tags["ropeext.rule"] == r.data.tags["mlflow.source.name"]
        assert r.data.tags["mlflow.source.type"] == "JOB" and r.data.tags["mlflow.user"] == getpass.getuser()
    by_stage = {}
    for r in stages:
        by_stage.setdefault(r.data.tags["ropeext.stage"], []).append(r)
    # a run per job, and (eval.jobs per_suite) one job per suite with a run per variant
    suites = {s.rule for s in SUITES}
    jobs_of = Counter(tsv.parent.name for tsv in jobs)
    runs_of = Counter(r.data.tags["ropeext.rule"] for r in stages)
    assert {k: n for k, n in runs_of.items() if k not in suites} == {
        k: n for k, n in jobs_of.items() if k not in suites
    }
    assert {jobs_of[rule] for rule in suites} == {1}
    assert len(by_stage["finetune"]) == 4 and len(by_stage["eval_ppl"]) == 6 and len(by_stage["extend"]) == 1
    for stage in ("eval_passkey", "eval_longbench", "eval_openllm", "eval_ruler"):
        assert len(by_stage[stage]) == 2, stage  # the anchor variants only (.test/config.yaml)
    assert len(by_stage["analyze_bf16"]) == 1
    assert {r.data.tags.get("ropeext.variant") for r in by_stage["eval_ppl"]} == {
        f"micro-{m}-64-{lay}" for m in ("none", "dprope") for lay in ("noft", "full", "anchor")
    }
    ppl = by_stage["eval_ppl"][0]
    assert {"ppl_at_32", "ppl_at_64", "ppl_at_128"} <= set(ppl.data.metrics)
    assert tracking.run_artifacts(uri, ppl.info.run_id) >= {"metrics.json", "ppl.png"}
    assert ppl.data.params["eval.dtype"] == "auto" and ppl.data.params["eval.dtype_resolved"] in {"float32", "bfloat16"}
    ft = by_stage["finetune"][0]
    assert ft.data.tags["ropeext.rule"] == "finetune" and ft.data.tags["ropeext.wildcards.target"] == "64"
    assert ft.data.tags["ropeext.wildcards.layout"] in {"full", "anchor"}
    assert len(ft.data.tags["data.corpus_fingerprint"]) == 16
    assert "train.loss" in ft.data.metrics and len(client.get_metric_history(ft.info.run_id, "train.loss")) >= 1
    held = client.get_metric_history(ft.info.run_id, "val.loss")
    assert [m.step for m in held] == [0, 3] and ft.data.metrics["final_val_loss"] == held[-1].value
    report = by_stage["report"][0]
    assert "summary.md" in tracking.run_artifacts(uri, report.info.run_id)


# config/README.md: groups joined by ".", words by "_", a length in a name as "_at_<L>"; "-" only inside a name
# taken from the data (a LongBench-E bucket, a BF16 setting); MLflow's own system metrics keep "system/"
METRIC_KEY = re.compile(r"system/[a-z_]+|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def test_metric_keys_follow_one_scheme(micro_run):
    _, runs = _runs(micro_run)
    keys = {k for r in runs for k in r.data.metrics}
    assert {"train.loss", "val.loss", "ppl", "ppl_at_128", "passkey.accuracy_at_256", "ruler.avg_at_512"} <= keys
    bad = sorted(k for k in keys if not METRIC_KEY.fullmatch(k) or re.search(r"(^|\.)L\d+$", k))
    assert not bad


def test_rerun_does_nothing_and_adds_no_run(micro_run):
    _, before = _runs(micro_run)
    dry = _micro(micro_run, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    _micro(micro_run)
    _, after = _runs(micro_run)
    assert len(after) == len(before)


def test_snakemake_html_report_has_the_tables_summary_and_figures(micro_run):
    """The HTML report holds the summary, a page per table and each suite's figures across variants; no
    per-variant figure (those stay files of the evaluation folders)."""
    _micro(micro_run, "--report", "report.zip")
    import zipfile

    with zipfile.ZipFile(micro_run / "report.zip") as zf:
        names = zf.namelist()
        page = zf.read(next(n for n in names if n.endswith("report.html"))).decode()
    files = Counter(n.rsplit("/", 1)[-1] for n in names if "/data/raw/" in n)
    figures = {"per_pair_disturbance.png", "angle_histograms.png", "heatmap.png"}  # RoPE, one L' here
    tables = {f"{s.name}.html" for s in SUITES} | {"disturbance-compare-64.html", "finetuning.html"}
    figures |= {f.file for s in SUITES for f in s.figures.values() if f.file.endswith(".png")}
    assert {"ppl.png", "passkey_by_length.png", "ruler_tasks.png", "bf16_deviation.png"} <= figures
    assert set(files) == figures | tables | {"summary.html", "published.html", "headline.html"}
    assert set(files.values()) == {1}  # one ppl.png: the report's, no variant's
    for caption in ("whole report", "Perplexity (log scale) against context length", "one panel per variant"):
        assert caption in page, caption
    summary = (micro_run / "results" / "report" / "summary.html").read_text()
    assert "<table>" in summary and 'src="data:image/png;base64,' in summary
    assert "micro-dprope-64-anchor" in (micro_run / "results" / "report" / "passkey.html").read_text()
    headline = (micro_run / "results" / "report" / "headline.csv").read_text()
    assert "perplexity,L',64," in headline and "perplexity,L,32," in headline


def _dry_run_jobs(workdir: Path, *configs) -> dict[str, int]:
    out = _micro(workdir, "-n", configs=configs).stdout
    if "Nothing to be done" in out:
        return {}
    stats = out[out.index("Job stats") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def test_a_change_to_one_suite_reruns_that_suite_only(micro_run, tmp_path):
    """Rules carry only the config keys their command reads: more RULER samples re-run RULER and the report."""
    overlay = tmp_path / "ruler.yaml"
    overlay.write_text(yaml.safe_dump({"eval": {"ruler": {"samples": 2}}}))
    assert _dry_run_jobs(micro_run, overlay) == {"eval_ruler": 1, "report": 1, "all": 1}
    overlay.write_text(yaml.safe_dump({"eval": {"ppl": {"stride": 8}}}))
    assert _dry_run_jobs(micro_run, overlay) == {"eval_ppl": 1, "report": 1, "all": 1}
    overlay.write_text(yaml.safe_dump({"mlflow": {"experiment": "elsewhere"}}))
    assert _dry_run_jobs(micro_run, overlay) == {}


def test_per_variant_jobs_evaluate_one_variant_each(micro_run, tmp_path):
    """eval.jobs per_variant (the default, for clusters): one job per suite and variant (13 here instead of
    6); forced, the passkey rule runs once per variant, each job with its own log and benchmark file, and
    rewrites that variant's metrics. (Last in this file: it changes the shared run's passkey results.)"""
    overlay = tmp_path / "per_variant.yaml"
    overlay.write_text(yaml.safe_dump({"eval": {"jobs": "per_variant"}}))
    out = _micro(micro_run, "-n", "--forceall", configs=(overlay,)).stdout
    stats = out[out.index("Job stats") :]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    assert counts["eval_ppl"] == 6 and counts["analyze_bf16"] == 1, counts
    assert all(counts[s] == 2 for s in ("eval_passkey", "eval_longbench", "eval_openllm", "eval_ruler")), counts
    # where jobs are ready at once: data first, then the noft models, the fine-tunes, the longest evaluations
    priority = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule:
            found = re.search(r"^\s+priority: (\d+)$", block, re.M)
            priority.setdefault(rule.group(1), int(found.group(1)) if found else 0)
    evals = [priority[s.rule] for s in sorted(SUITES, key=lambda s: -s.priority)]
    assert evals == sorted(evals, reverse=True) and evals[0] > evals[-1], priority
    assert priority["pack"] > priority["extend"] > priority["finetune"] > max(evals), priority
    metrics = sorted((micro_run / "results" / "eval" / "passkey").glob("*/metrics.json"))
    assert len(metrics) == 2  # dprope and none, anchor layout
    before = {p: p.stat().st_mtime_ns for p in metrics}
    _micro(micro_run, "--rerun-triggers", "mtime", "--forcerun", "eval_passkey", configs=(overlay,))
    for method in ("none", "dprope"):
        log = (micro_run / "results" / "logs" / "eval_passkey" / f"{method}-64-anchor.log").read_text()
        assert "Traceback" not in log
        assert (micro_run / "results" / "benchmarks" / "eval_passkey" / f"{method}-64-anchor.tsv").is_file()
    assert all(p.stat().st_mtime_ns > before[p] for p in metrics)
