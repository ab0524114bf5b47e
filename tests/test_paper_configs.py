"""The paper configs validate and build the right DAG here (dry run: nothing runs, nothing downloads)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ropeext.commands._rope import config_settings
from ropeext.config import load_config
from ropeext.rope.solve import rope_options
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _dry_run(tmp_path: Path, config: str, *extra: str, overlay: str | None = None) -> tuple[dict[str, int], str]:
    """Job counts and output of `snakemake -n -p` on a config (plus an overlay config file, as a user
    gives the RoPE base the 128k configs leave open). The models and data they name are not here:
    `check_paths=False` checks the values alone, as on a machine that only lists the jobs."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    configs = [str(REPO / "config" / config)] + ([overlay] if overlay else [])
    proc = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            *configs,
            "--config",
            "check_paths=False",
            "-n",
            "-p",
            "--cores",
            "8",
            *extra,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout[proc.stdout.index("Job stats") :]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    return counts, proc.stdout


def _rope_job(tmp_path: Path, out: str, results: str, target: int) -> dict:
    """The RoPE setting the dry run's `ropeext rope` job at ``target`` reads from the resolved config."""
    resolved = tmp_path / "results" / results / ".config" / "config.yaml"
    assert f"rope --config {resolved.relative_to(tmp_path)} --target-length {target} " in out
    s = config_settings(json.loads(resolved.read_text()), target)
    return rope_options(s, target)


ANCHOR_128K = ["llama2-anchor-128k.yaml", "llama2-anchor-upmix128k.yaml"]
CROSS_MODEL = {  # Table 6 of the AnchorAttention paper: hub id, pre-training window, rope_theta, head dim
    "llama3-anchor.yaml": ("meta-llama/Meta-Llama-3-8B", 8192, 500000.0, 128),
    "mistral-anchor.yaml": ("mistralai/Mistral-7B-v0.3", 32768, 1000000.0, 128),
    "qwen15-anchor.yaml": ("Qwen/Qwen1.5-1.8B", 32768, 1000000.0, 128),
}


@pytest.mark.parametrize("config", ["llama2-dprope.yaml", "llama2-anchor.yaml", *ANCHOR_128K])
def test_paper_configs_validate(config):
    cfg = load_config(REPO / "config" / config)
    assert cfg["model"]["path"] == "meta-llama/Llama-2-7b-hf" and cfg["model"]["train_length"] == 4096


@pytest.mark.parametrize("config", [*ANCHOR_128K, *CROSS_MODEL])
def test_128k_configs_state_no_base_of_their_own(config):
    """The published tables give no RoPE base for the 128k runs: the configs leave it to the user
    (a second config file), and ask the scheduler for a whole node per fine-tune."""
    cfg = load_config(REPO / "config" / config)
    assert cfg["rope"]["new_rope_theta"] is None and cfg["extension"]["methods"] == ["base_change"]
    assert cfg["extension"]["target_lengths"] == [131072] and cfg["eval"]["ruler"]["max_length"] == 131072
    assert "rope: {new_rope_theta: <base>}" in (REPO / "config" / config).read_text()
    assert cfg["resources"]["finetune"]["gpu"] == 8 and cfg["resources"]["eval"]["gpu"] == 1


def _base_file(tmp_path: Path, base: float = 2.5e7) -> str:
    path = tmp_path / "my-base.yaml"
    path.write_text(yaml.safe_dump({"rope": {"new_rope_theta": base}}))
    return str(path)


def test_dprope_paper_dag(tmp_path):
    counts, out = _dry_run(tmp_path, "llama2-dprope.yaml")
    # 2 targets x 3 methods, layout full; every method also evaluated without fine-tuning
    assert counts["finetune"] == 6 and counts["rope"] == 2 and counts["extend"] == 2
    assert counts["eval_ppl"] == 12 and counts["eval_longbench"] == 6 and counts["eval_openllm"] == 6
    assert counts["pack"] == 2 and "pretrain" not in counts and "analyze_bf16" not in counts
    for target, dims in ((8192, 80), (16384, 64)):
        rope = _rope_job(tmp_path, out, "llama2-dprope", target)
        assert rope["interpolated_dims"] == dims and rope["angle_dtype"] == "float32"
        assert f"results/llama2-dprope/rope/scaling/dprope-{target}.json" in out
    assert (
        "python -m ropeext.gpu_slots --gpus 8 -- python -m ropeext.launch --config_file config/accelerate/fsdp.yaml "
        "--num_processes 8 --  finetune"
    ) in out
    # the recipe is laid over the raw config before the defaults: the jobs read the recipe's values
    # where the file is silent and the file's own values where it is not
    resolved = json.loads((tmp_path / "results" / "llama2-dprope" / ".config" / "config.yaml").read_text())
    ft = resolved["finetune"]
    assert (ft["lr"], ft["betas"], ft["batch_size"], ft["warmup_steps"]) == (2e-5, [0.9, 0.999], 64, 0)
    assert ft["steps"] == {"8192": 1000, "null": 500} and ft["schedule"] == "constant"
    assert (ft["grad_accum"], ft["precision"], ft["checkpoint_every"]) == (8, "bf16", 100)


TABLE5 = ["full", "intra_doc", "intra_doc_reset", "intra_doc_interleaved", "anchor", "anchor_tag", "anchor_interleaved"]


def test_anchor_paper_dag(tmp_path):
    counts, out = _dry_run(tmp_path, "llama2-anchor.yaml")
    assert counts["finetune"] == 7 and counts["pack"] == 7  # the seven layouts of Table 5 at 64k
    assert counts["analyze_bf16"] == 8 and counts["eval_ruler"] == 8  # the base model + 7 fine-tuned
    assert counts["eval_longbench"] == 7 and counts["eval_openllm"] == 7 and counts["eval_ppl"] == 8
    assert "eval_passkey" not in counts and "pretrain" not in counts
    rope = _rope_job(tmp_path, out, "llama2-anchor", 65536)
    assert (rope["rope_theta"], rope["new_rope_theta"]) == (10000.0, 5e6)
    assert "results/llama2-anchor/rope/scaling/base_change-65536.json" in out
    for layout in TABLE5:
        assert f"results/llama2-anchor/packed/{layout}-w65536/train.parquet" in out
        assert f"--variant llama2-base_change-65536-{layout} " in out
    assert "--no-mask-boundary-labels" in out


@pytest.mark.parametrize(
    "config,name,layouts",
    [
        ("llama2-anchor-128k.yaml", "llama2-anchor-128k", TABLE5[:6]),  # SlimPajama-128K: all but anchor_interleaved
        (
            "llama2-anchor-upmix128k.yaml",
            "llama2-anchor-upmix128k",
            ["full", "intra_doc", "intra_doc_reset", "anchor", "anchor_tag"],
        ),
    ],
)
def test_anchor_128k_dags(tmp_path, config, name, layouts):
    counts, out = _dry_run(tmp_path, config, overlay=_base_file(tmp_path))
    n = len(layouts)
    assert counts["finetune"] == n and counts["pack"] == n
    assert counts["eval_ruler"] == n + 1 and counts["analyze_bf16"] == n + 1  # the base model too
    assert counts["eval_longbench"] == n and counts["eval_openllm"] == n and "eval_passkey" not in counts
    rope = _rope_job(tmp_path, out, name, 131072)
    assert (rope["rope_theta"], rope["head_dim"], rope["train_length"], rope["new_rope_theta"]) == (
        10000.0,
        128,
        4096,
        2.5e7,
    )
    assert f"results/{name}/rope/scaling/base_change-131072.json" in out
    for layout in layouts:
        assert f"results/{name}/packed/{layout}-w131072/train.parquet" in out
        assert f"--variant llama2-base_change-131072-{layout} " in out
    assert "anchor_interleaved" not in out and ("intra_doc_interleaved" in out) == ("intra_doc_interleaved" in layouts)
    assert counts["import_model"] == 1 and "--base results/llama2-anchor" in out


@pytest.mark.parametrize("config", CROSS_MODEL)
def test_anchor_cross_model_dags(tmp_path, config):
    hub, window, theta, head = CROSS_MODEL[config]
    name = load_config(REPO / "config" / config)["model"]["name"]
    counts, out = _dry_run(tmp_path, config, overlay=_base_file(tmp_path))
    assert counts["finetune"] == 3 and counts["pack"] == 3 and counts["eval_ruler"] == 4  # base + 3 layouts
    assert counts["eval_ppl"] == 3
    for absent in ("eval_longbench", "eval_openllm", "eval_passkey", "analyze_bf16", "pretrain"):
        assert absent not in counts, absent
    rope = _rope_job(tmp_path, out, Path(config).stem, 131072)
    assert (rope["rope_theta"], rope["head_dim"], rope["train_length"], rope["new_rope_theta"]) == (
        theta,
        head,
        window,
        2.5e7,
    )
    for layout in ("full", "anchor", "anchor_tag"):
        assert f"--variant {name}-base_change-131072-{layout} " in out
    # the hub model is imported once (its weights linked, not copied) and every job reads the import
    assert counts["import_model"] == 1 and f"--base results/{Path(config).stem}/models/{name}-base " in out
    # every job is a plain process: GPU jobs under gpu_slots (fine-tunes under ropeext.launch), CPU jobs the CLI
    assert "--gpus 8 -- python -m ropeext.launch" in out and "--num_processes 8 --  finetune" in out
    assert re.search(r"OMP_NUM_THREADS=\d+ python -m ropeext.cli import-model", out)


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
    """On one 8-GPU node (profiles/node: --resources gpu=8) a fine-tune asks for all 8 GPUs, so
    Snakemake never runs two at once, nor a fine-tune beside an evaluation; evaluations ask for one GPU
    each and share the node, each on a device of its own (ropeext.gpu_slots)."""
    counts, out = _dry_run(tmp_path, config, "--workflow-profile", str(REPO / "profiles" / "node"))
    profile_gpus = yaml.safe_load((REPO / "profiles" / "node" / "config.yaml").read_text())["resources"]["gpu"]
    assert profile_gpus == 8
    jobs = _jobs(out)
    assert sum(1 for j in jobs if j["rule"] == "finetune") == counts["finetune"] >= 4
    for job in jobs:
        gpus = int(job["resources"].get("gpu", 0))
        if job["rule"] == "finetune":
            assert gpus == profile_gpus and 2 * gpus > profile_gpus  # two never fit side by side
            assert f"python -m ropeext.gpu_slots --gpus {gpus} -- python -m ropeext.launch" in job["shell"]
            assert f"--num_processes {gpus}" in job["shell"]
        elif job["rule"].startswith("eval_") or job["rule"] == "analyze_bf16":
            assert gpus == 1 and "python -m ropeext.gpu_slots --gpus 1 -- python -m ropeext.cli" in job["shell"]
        elif job["rule"] != "all":
            assert gpus == 0 and "gpu_slots" not in job["shell"], job["rule"]


def test_a_paper_config_run_from_the_repository_root_inherits_nothing_from_the_demo(tmp_path):
    """Run where config/config.yaml exists (the repository root), a --configfile is the whole config: keys it
    leaves out take the recipe's or the schema's values, never the embedded demo's."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    _dry_run(tmp_path, "llama2-dprope.yaml")
    resolved = json.loads((tmp_path / "results" / "llama2-dprope" / ".config" / "config.yaml").read_text())
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert resolved["finetune"]["batch_size"] == 64 != demo["finetune"]["batch_size"]  # the dprope recipe's
    assert resolved["finetune"]["lr"] == 2e-5 != demo["finetune"]["lr"]
    assert resolved["experiment"] == "llama2-dprope" and resolved["model"]["name"] == "llama2"


def test_smollm2_dag_imports_the_package_model_and_fine_tunes_the_chosen_method(tmp_path):
    counts, out = _dry_run(tmp_path, "smollm2.yaml")
    assert counts["import_model"] == 1 and "pretrain" not in counts
    assert counts["extend"] == 1 and counts["finetune"] == 2  # one job: every method without fine-tuning
    assert "--output results/smollm2/models/smollm2-none-16384-noft " in out  # dprope tuned twice
    assert counts["eval_ppl"] == 8  # 6 methods without fine-tuning + dprope with full and anchor
    for layout in ("full", "anchor"):
        assert f"--variant smollm2-dprope-16384-{layout} " in out
    assert "--variant smollm2-yarn-16384-full" not in out
    rope = _rope_job(tmp_path, out, "smollm2", 16384)
    assert (rope["rope_theta"], rope["head_dim"], rope["train_length"], rope["interpolated_dims"]) == (
        100000.0,
        64,
        8192,
        40,
    )
    assert "results/smollm2/rope/scaling/dprope_threshold-16384.json" in out
    # the tokenizer is the imported model's own (chat template included), not a trained BPE
    resolved = json.loads((tmp_path / "results" / "smollm2" / ".config" / "config.yaml").read_text())
    assert resolved["tokenizer"]["path"] == "results/smollm2/models/smollm2-base"
