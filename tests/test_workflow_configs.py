"""Snakemake runs of parts of the DAG on variants of the micro config (.test/config.yaml): lint and the dry
run, a bad config, two configs in one checkout, a sharded corpus. (A file apart from test_workflow.py, whose
tests share one whole-DAG run, so that the two run side by side.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.test_workflow import _snakemake

pytestmark = pytest.mark.slow


def test_lint_is_clean_and_dry_run_lists_every_stage(tmp_path):
    lint = _snakemake(tmp_path, "--lint")
    assert "Congratulations" in lint.stdout + lint.stderr
    dry = _snakemake(tmp_path, "-n")
    for rule in ("corpus", "tokenizer", "rope", "pack", "pretrain", "finetune", "eval_ppl", "report"):
        assert f"rule {rule}:" in dry.stdout, rule
    assert not (tmp_path / "results" / "mlflow.db").exists()  # a dry run opens no store


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  lr: fast\n")
    proc = _snakemake(tmp_path, configs=(bad,), check=False)
    assert proc.returncode != 0
    assert "lr" in proc.stderr and "fast" in proc.stderr
    assert not (tmp_path / "results" / "corpus").exists()


def test_two_configs_in_one_checkout_share_no_file(tmp_path):
    """Everything a run writes (outputs, logs, benchmarks, the MLflow store) lives under its results_dir.
    Each run is one job, the cheapest with no input: the corpus of a few documents."""
    written = {}
    for name in ("a", "b"):
        overlay = tmp_path / f"{name}.yaml"
        values = {"results_dir": f"out/{name}", "experiment": f"exp_{name}", "corpus": {"max_documents": 4}}
        overlay.write_text(yaml.safe_dump(values))
        before = {p for p in tmp_path.rglob("*") if p.is_file()}
        _snakemake(tmp_path, f"out/{name}/corpus/manifest.json", configs=(overlay,))
        written[name] = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()} - {
            p.relative_to(tmp_path) for p in before
        }
    for name, files in written.items():
        mine = {f for f in files if f.parts[0] != ".snakemake"}
        assert mine and all(f.parts[:2] == ("out", name) or f.name == f"{name}.yaml" for f in mine), mine
        for kind in ("logs", "benchmarks"):
            assert any(f.parts[2] == kind for f in mine), (name, kind)
        assert Path("out", name, "mlflow.db") in mine
    assert not (written["a"] & written["b"])


def test_sharded_corpus_is_tokenized_in_parallel_jobs_and_gathers_to_the_same_tokens(tmp_path, monkeypatch):
    """corpus.shards > 1 scatters tokenization over one job per (split, shard) and gathers the shards: the
    gathered tokens equal what one job writes for the same corpus.

    Eleven jobs, each a Python start-up: on 20 documents a split (10 a shard, interleaved) and without the
    jobs' MLflow runs (ROPEEXT_MLFLOW=0), which would double what each job costs: this test checks the DAG and
    the tokens, test_workflow.py's whole-DAG run the jobs' runs."""
    import pyarrow.parquet as pq

    monkeypatch.setenv("ROPEEXT_MLFLOW", "0")
    runs = {}
    for shards in (1, 2):
        overlay = tmp_path / f"shards{shards}.yaml"
        corpus = {"shards": shards, "max_documents": 20}
        overlay.write_text(yaml.safe_dump({"results_dir": f"out/s{shards}", "corpus": corpus}))
        _snakemake(
            tmp_path, f"out/s{shards}/tokens/train.parquet", f"out/s{shards}/tokens/test.parquet", configs=(overlay,)
        )
        runs[shards] = {
            split: pq.read_table(tmp_path / f"out/s{shards}/tokens/{split}.parquet").to_pydict()
            for split in ("train", "test")
        }
    jobs = {p.name for p in (tmp_path / "out/s2/benchmarks/tokenizer").glob("*.tsv")}
    assert {"train.tsv", "gather.tsv", "train-00000.tsv", "train-00001.tsv", "test-00001.tsv"} <= jobs
    assert not list((tmp_path / "out/s2/tokens").glob("*-of-*"))  # the shard files are temporary
    for split in ("train", "test"):
        assert len(runs[1][split]["id"]) == 20
        assert runs[2][split]["id"] == runs[1][split]["id"]
        assert runs[2][split]["input_ids"] == runs[1][split]["input_ids"]
