"""The top level a user meets first: the schema's defaults agree with each other, so the empty config and a
config holding only what the user must say (a corpus and a results folder) resolve with no problem, and a
plain `snakemake` in the repository root finds the Snakefile there and loads the profile profiles/default."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ropeext.checks import problems
from ropeext.config import resolve_config
from tests.conftest import REPO

BIN = Path(sys.executable).parent
MINIMAL = {"corpus": {"source": "stdlib"}, "results_dir": "minimal-results"}


@pytest.mark.parametrize("raw", [{}, MINIMAL], ids=["empty", "minimal"])
def test_the_empty_and_the_minimal_config_resolve_without_problems(raw):
    config = resolve_config(copy.deepcopy(raw), source="test")
    assert problems(config) == []
    # the RULER lengths the user did not write follow the model and targets they did not write either
    ruler, train = config["eval"]["ruler"], config["model"]["train_length"]
    assert ruler["lengths"] == [train, 2 * train, max(config["extension"]["target_lengths"])]
    assert resolve_config(copy.deepcopy(config)) == config  # resolving the resolved config changes nothing


def test_derived_ruler_lengths_stay_within_every_evaluated_window():
    config = resolve_config({"model": {"train_length": 1024}, "extension": {"target_lengths": [3000, 8192]}})
    assert config["eval"]["ruler"]["lengths"] == [1024, 2048, 3000]
    assert problems(config) == []
    config = resolve_config({"eval": {"ruler": {"max_length": 4096}}})
    assert config["eval"]["ruler"]["lengths"] == [256, 512, 1024, 2048, 4096]
    written = resolve_config({"eval": {"ruler": {"lengths": [512]}}})
    assert written["eval"]["ruler"]["lengths"] == [512]


def _plain_snakemake(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`.venv/bin/snakemake` in the repository root without -s or --workflow-profile, as the README runs it."""
    config = tmp_path / "minimal.yaml"
    config.write_text(yaml.safe_dump(MINIMAL))
    cmd = [str(BIN / "snakemake"), "-n", "--configfile", str(config), "--directory", str(tmp_path), *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_a_plain_snakemake_plans_the_minimal_config_with_the_default_profile(tmp_path):
    plain = _plain_snakemake(tmp_path)
    for rule in ("corpus", "tokenizer", "pretrain", "finetune", "eval_ruler", "report"):
        assert f"rule {rule}:" in plain.stdout, rule
    assert "workflow specific profile profiles/default" in plain.stderr
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert profile["printshellcmds"] is True
    # printshellcmds comes from the profile alone: without it the dry run shows no shell command
    assert "Shell command:" in plain.stdout
    bare = _plain_snakemake(tmp_path, "--workflow-profile", "none")
    assert "Shell command:" not in bare.stdout and "profiles/default" not in bare.stderr
    assert not (REPO / MINIMAL["results_dir"]).exists()
