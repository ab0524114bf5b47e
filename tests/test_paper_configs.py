"""The paper configs validate and build the right DAG here (dry run: nothing runs, nothing downloads)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ropeext.config import load_config
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _dry_run(tmp_path: Path, config: str) -> tuple[dict[str, int], str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile",
                           str(REPO / "config" / config), "-n", "-p", "--cores", "8"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout[proc.stdout.index("Job stats"):]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    return counts, proc.stdout


@pytest.mark.parametrize("config", ["llama2-dprope.yaml", "llama2-anchor.yaml"])
def test_paper_configs_validate(config):
    cfg = load_config(REPO / "config" / config)
    assert cfg["model"]["path"] == "meta-llama/Llama-2-7b-hf" and cfg["model"]["train_length"] == 4096


def test_dprope_paper_dag(tmp_path):
    counts, out = _dry_run(tmp_path, "llama2-dprope.yaml")
    # 2 targets x 3 methods, layout full; every method also evaluated without fine-tuning
    assert counts["finetune"] == 6 and counts["solve"] == 6 and counts["extend"] == 6
    assert counts["eval_ppl"] == 12 and counts["eval_longbench"] == 6 and counts["eval_openllm"] == 6
    assert counts["pack"] == 2 and "pretrain" not in counts and "analyze_bf16" not in counts
    assert "--method dprope --angle-dtype float32" in out
    assert re.search(r"--target-length 8192 .*--method dprope .*--interpolated-dims 80", out)
    assert re.search(r"--target-length 16384 .*--method dprope .*--interpolated-dims 64", out)
    assert "accelerate launch --config_file config/accelerate/fsdp.yaml -m ropeext.cli finetune" in out
    # the recipe is laid over the raw config before the defaults: the jobs read the recipe's values
    # where the file is silent and the file's own values where it is not
    resolved = json.loads((tmp_path / "results" / "llama2-dprope" / ".config" / "config.yaml").read_text())
    ft = resolved["finetune"]
    assert (ft["lr"], ft["betas"], ft["batch_size"], ft["warmup_steps"]) == (2e-5, [0.9, 0.999], 64, 0)
    assert ft["steps"] == {"8192": 1000, "null": 500} and ft["schedule"] == "constant"
    assert (ft["grad_accum"], ft["precision"], ft["checkpoint_every"]) == (8, "bf16", 100)


def test_anchor_paper_dag(tmp_path):
    counts, out = _dry_run(tmp_path, "llama2-anchor.yaml")
    assert counts["finetune"] == 4 and counts["pack"] == 4  # full, intra_doc, intra_doc_reset, anchor at 64k
    assert counts["analyze_bf16"] == 5 and counts["eval_ruler"] == 5  # the base model + 4 fine-tuned
    assert "eval_passkey" not in counts and "pretrain" not in counts
    assert "--method base_change" in out and "--new-rope-theta 5000000.0" in out
    for layout in ("full", "intra_doc", "intra_doc_reset", "anchor"):
        assert f"results/llama2-anchor/packed/{layout}-w65536/train.parquet" in out
    assert "--no-mask-boundary-labels" in out
