"""The paper configs validate and build the right DAG here (dry run: nothing runs, nothing downloads)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ropeext.config import load_config
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _dry_run(tmp_path: Path, config: str, *extra: str) -> tuple[dict[str, int], str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "workflow" / "Snakefile"), "--configfile",
                           str(REPO / "config" / config), "-n", "-p", "--cores", "8", *extra],
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
    assert ("python -m ropeext.gpu_slots --gpus 8 -- accelerate launch --config_file config/accelerate/fsdp.yaml "
            "--num_processes 8 -m ropeext.cli finetune") in out


def test_anchor_paper_dag(tmp_path):
    counts, out = _dry_run(tmp_path, "llama2-anchor.yaml")
    assert counts["finetune"] == 4 and counts["pack"] == 4  # full, intra_doc, intra_doc_reset, anchor at 64k
    assert counts["analyze_bf16"] == 5 and counts["eval_ruler"] == 5  # the base model + 4 fine-tuned
    assert "eval_passkey" not in counts and "pretrain" not in counts
    assert "--method base_change" in out and "--new-rope-theta 5000000.0" in out
    for layout in ("full", "intra_doc", "intra_doc_reset", "anchor"):
        assert f"results/llama2-anchor/packed/{layout}-w65536/train.parquet" in out
    assert "--no-mask-boundary-labels" in out


def _jobs(out: str) -> list[dict]:
    """(rule, resources, shell command) of every job a dry run with -p lists."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", out)[1:]:
        rule = re.match(r"rule (\w+):", block).group(1)
        res = re.search(r"resources: (.*)", block)
        shell = re.search(r"Shell command: (.*)", block)
        resources = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs.append({"rule": rule, "resources": resources, "shell": shell.group(1) if shell else ""})
    return jobs


@pytest.mark.parametrize("config", ["llama2-dprope.yaml", "llama2-anchor.yaml"])
def test_node_profile_gives_finetunes_the_whole_node_and_evaluations_one_gpu(tmp_path, config):
    """On one 8-GPU node (workflow/profiles/node: --resources gpu=8) a fine-tune asks for all 8 GPUs, so
    Snakemake never runs two at once, nor a fine-tune beside an evaluation; evaluations ask for one GPU
    each and share the node, each on a device of its own (ropeext.gpu_slots)."""
    counts, out = _dry_run(tmp_path, config, "--workflow-profile", str(REPO / "workflow" / "profiles" / "node"))
    profile_gpus = yaml.safe_load((REPO / "workflow" / "profiles" / "node" / "config.yaml").read_text())["resources"]["gpu"]
    assert profile_gpus == 8
    jobs = _jobs(out)
    assert sum(1 for j in jobs if j["rule"] == "finetune") == counts["finetune"] >= 4
    for job in jobs:
        gpus = int(job["resources"].get("gpu", 0))
        if job["rule"] == "finetune":
            assert gpus == profile_gpus and 2 * gpus > profile_gpus  # two never fit side by side
            assert f"python -m ropeext.gpu_slots --gpus {gpus} -- accelerate launch" in job["shell"]
            assert f"--num_processes {gpus}" in job["shell"]
        elif job["rule"].startswith("eval_") or job["rule"] == "analyze_bf16":
            assert gpus == 1 and "python -m ropeext.gpu_slots --gpus 1 -- python -m ropeext.cli" in job["shell"]
        elif job["rule"] != "all":
            assert gpus == 0 and "gpu_slots" not in job["shell"], job["rule"]
