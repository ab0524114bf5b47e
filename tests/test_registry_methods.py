"""A RoPE method is one entry of ropeext/rope/registry.py: a copy of the checkout with a toy method added
there, and nowhere else, solves it from the command line, accepts a config that lists it, plans its
jobs, and counts it in the report's method checks. The checkout itself rejects the same config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ropeext.config import load_config
from ropeext.errors import RopeextError
from ropeext.rope.registry import METHODS
from tests.conftest import REPO

BIN = Path(sys.executable).parent
TOY = '''

def _toy(ws):
    """Every pair divided by the square root of the scale."""
    return methods.per_pair(ws.geometry, [float(ws.geometry.scale) ** 0.5] * ws.geometry.pairs)


METHODS["toy"] = Method(_toy, "every pair divided by the square root of the scale")
'''
GEOM = ["--rope-theta", "10000", "--head-dim", "32", "--train-length", "256", "--target-length", "1024"]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The checkout's files (links kept as links) with the toy method added to the registry."""
    root = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        src, dst = REPO / name, root / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    registry = root / "ropeext" / "rope" / "registry.py"
    registry.write_text(registry.read_text() + TOY)
    changed = [
        p
        for p in files
        if (root / p).is_file() and not (root / p).is_symlink() and (root / p).read_bytes() != (REPO / p).read_bytes()
    ]
    assert changed == ["ropeext/rope/registry.py"]
    return root


def _run(checkout: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(checkout), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_checkout_does_not_know_the_toy():
    assert "toy" not in METHODS
    with pytest.raises(RopeextError, match="toy"):
        load_config(overrides={"extension": {"methods": ["none", "toy"]}})


def test_the_cli_solves_and_compares_the_toy(checkout, tmp_path):
    help_ = _run(checkout, sys.executable, "-m", "ropeext.cli", "solve", "--help", cwd=tmp_path)
    assert "toy" in help_.stdout
    solve = _run(
        checkout,
        sys.executable,
        "-m",
        "ropeext.cli",
        "solve",
        *GEOM,
        "--method",
        "toy",
        "--output",
        "toy.json",
        "--no-mlflow",
        cwd=tmp_path,
    )
    assert solve.returncode == 0, solve.stderr
    scaling = json.loads((tmp_path / "toy.json").read_text())
    assert scaling["method"] == "toy" and scaling["factors"] == [2.0] * 16  # s = 4
    assert scaling["rope_parameters"]["rope_type"] == "longrope"
    compare = _run(
        checkout,
        sys.executable,
        "-m",
        "ropeext.cli",
        "compare",
        *GEOM,
        "--methods",
        "none,pi,toy",
        "--output",
        "cmp/table.csv",
        "--no-mlflow",
        cwd=tmp_path,
    )
    assert compare.returncode == 0, compare.stderr
    assert (tmp_path / "cmp" / "table.csv").read_text().splitlines()[3].startswith("toy,")


def test_a_config_listing_the_toy_validates_and_plans_its_jobs(checkout, tmp_path):
    overlay = tmp_path / "toy.yaml"
    overlay.write_text(
        yaml.safe_dump({"extension": {"methods": ["none", "toy"]}, "rope": {"compare_methods": ["pi", "toy"]}})
    )
    dry = _run(
        checkout,
        str(BIN / "snakemake"),
        "-s",
        str(checkout / "Snakefile"),
        "--configfile",
        str(checkout / ".test" / "config.yaml"),
        str(overlay),
        "-n",
        "--cores",
        "1",
        cwd=tmp_path,
    )
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    assert "results/rope/scaling/toy-64.json" in dry.stdout
    for job in (
        "results/models/micro-toy-64-noft",
        "results/models/micro-toy-64-full",
        "results/eval/ppl/micro-toy-64-full/metrics.json",
    ):
        assert job in dry.stdout, job


def test_the_report_counts_the_toy(checkout, tmp_path):
    script = (
        "from ropeext.report.findings import dprope_rank_check\n"
        "from ropeext.report.tables import parse_variant\n"
        "assert parse_variant('micro-toy-64-full')['method'] == 'toy'\n"
        "[check] = dprope_rank_check({'pi': 3.0, 'toy': 1.5, 'dprope': 2.0}, 'ppl', 'perplexity', 'at 64')\n"
        "print(check.text)\n"
    )
    proc = _run(checkout, sys.executable, "-c", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ranks 2 of 3" in proc.stdout and "`toy`" in proc.stdout  # the toy is among the methods DPRoPE meets
