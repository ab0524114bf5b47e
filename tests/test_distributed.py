"""Multi-process fine-tunes executed here: 2 CPU processes over gloo, started exactly as a GPU node starts
them (``python -m ropeext.launch`` with the shipped accelerate configs, which the workflow rule runs),
for DDP and FSDP2. Each run is compared with the single-process run of the same config: same global
batch, same loss curve (fp32, 1e-5 per step), the same held-out loss curve (3 validation windows over 2
processes: one pads), one set of checkpoints and one final model that stock
transformers loads with no extra tensors; a run whose every process is killed after a checkpoint
resumes to bit-identical weights. The launches that would silently give something else than asked
stop before the first step with a clear message (a table of them at the end)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ropeext.cli import main
from ropeext.data.tokens import write_tokens
from tests.test_train_cli import _packed, _scaling

REPO = Path(__file__).resolve().parents[1]
DDP = REPO / "config/accelerate/ddp.yaml"
FSDP = REPO / "config/accelerate/fsdp.yaml"
STEPS = 6
CONFIG = f"""
seed: 0
model: {{train_length: 32}}
extension: {{target_lengths: [64]}}
attention: {{backend: blockwise}}
finetune: {{steps: {STEPS}, batch_size: 4, lr: 1.0e-3, warmup_steps: 1, precision: fp32,
            checkpoint_every: 2, cleanup_checkpoints: false, log_every: 1, val_windows: 3, eval_every: 3}}
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir, tiny_tokenizer_dir):
    d = tmp_path_factory.mktemp("dist")
    (d / "config.yaml").write_text(CONFIG)
    rng = np.random.default_rng(7)
    write_tokens(
        d / "validation.parquet", [rng.integers(3, 300, size=int(rng.integers(5, 40))).tolist() for _ in range(40)]
    )
    return {
        "val": d / "validation.parquet",
        "config": d / "config.yaml",
        "base": tiny_model_dir,
        "scaling": _scaling(d / "scaling.json"),
        "train": _packed(d / "train.parquet", tiny_tokenizer_dir, 64, "anchor"),
    }


def _finetune_args(inp, output, *extra) -> list[str]:
    args = ["finetune", "--config", str(inp["config"]), "--base", str(inp["base"]), "--scaling", str(inp["scaling"])]
    args += [
        "--train",
        str(inp["train"]),
        "--val",
        str(inp["val"]),
        "--layout",
        "anchor",
        "--output",
        str(output),
        "--no-mlflow",
        "--threads",
        "2",
    ]
    return args + list(extra)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "ROPEEXT_LAUNCH"))}
    env.update(OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _launch_cmd(accelerate_config: Path, inp, output, *extra) -> list[str]:
    # the command the workflow rule runs (workflow/rules/common.smk), with 2 processes
    return [sys.executable, "-m", "ropeext.launch", "--config_file", str(accelerate_config), "--num_processes", "2"] + [
        "--",
        *_finetune_args(inp, output, *extra),
    ]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, **kw)


def _summary(output: Path) -> dict:
    return json.loads((output / "training_summary.json").read_text())


def _weights_hash(output: Path) -> str:
    return hashlib.sha256((output / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def single(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "model"
    assert main(_finetune_args(inputs, out)) == 0
    return out


def _alive(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (the run's output folder)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _kill_after_checkpoint(cmd, output: Path, how: str, env: dict) -> int:
    """Start ``cmd`` in a process group of its own and, as soon as a complete checkpoint exists, either
    SIGKILL the group (``kill``: a scheduler's hard kill; torch starts the workers in sessions of their
    own, so only the kernel's parent-death SIGKILL reaches them) or SIGTERM the launcher alone (``term``:
    what Snakemake and scancel send). Returns how many of the run's processes are left after it."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    ckdir = output.with_name(output.name + ".checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any((p / "manifest.json").exists() and not p.name.endswith(".tmp") for p in ckdir.glob("step-*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be stopped:\n{proc.stderr.read()[-3000:]}"
    if how == "kill":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    for _ in range(100):
        if not _alive(str(output)):
            break
        time.sleep(0.1)
    return len(_alive(str(output)))


@pytest.mark.parametrize(("name", "accelerate_config", "stop"), [("ddp", DDP, "term"), ("fsdp", FSDP, "kill")])
def test_two_processes_train_the_single_process_run_and_resume_bit_identically(
    name, accelerate_config, stop, inputs, single, tmp_path
):
    out = tmp_path / "model"
    done = _run(_launch_cmd(accelerate_config, inputs, out))
    assert done.returncode == 0, done.stderr[-4000:]
    got, ref = _summary(out), _summary(single)

    # both processes ran, each on its own half of the same global batch
    assert got["processes"] == 2 and got["strategy"] == name and ref["processes"] == 1
    (first, second), (whole,) = got["first_step_windows"], ref["first_step_windows"]
    assert len(first) == len(second) == 2 and not set(first) & set(second)
    assert first + second == whole
    # the loss curve of one process, step by step
    assert len(got["loss_history"]) == STEPS
    assert got["loss_history"] == pytest.approx(ref["loss_history"], abs=1e-5)
    assert got["rope_dtype"] == "float32"
    # the held-out curve: each process scores its share of the windows, the sums are added
    assert [s for s, _ in got["val_loss_history"]] == [s for s, _ in ref["val_loss_history"]] == [0, 3, 6]
    assert [v for _, v in got["val_loss_history"]] == pytest.approx([v for _, v in ref["val_loss_history"]], abs=1e-5)

    # one checkpoint folder per checkpoint step, one final model, nothing half-written
    ckdir = out.with_name("model.checkpoints")
    assert sorted(p.name for p in ckdir.iterdir()) == ["step-0000002", "step-0000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.checkpoints"]
    # the final model loads in stock transformers with exactly the tensors of the single-process model
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with safe_open(out / "model.safetensors", "pt") as a, safe_open(single / "model.safetensors", "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())

    # stopped after a checkpoint (SIGTERM to the launcher, or SIGKILL of its process group): no worker
    # trains on, the MLflow run of a cancelled (SIGTERM) job ends KILLED, and the rerun resumes bit-identically
    killed = tmp_path / "killed" / "model"
    killed.parent.mkdir()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd, env = _launch_cmd(accelerate_config, inputs, killed), _env()
    if stop == "term":  # MLflow (a fresh sqlite store: seconds before the first step) only where it is checked
        cmd = [a for a in cmd if a != "--no-mlflow"]
        env = _env(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME="stop")
    assert _kill_after_checkpoint(cmd, killed, stop, env) == 0, "a worker trains on after its launcher stopped"
    assert not killed.exists()
    if stop == "term":
        import mlflow

        client = mlflow.MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("stop").experiment_id])
        assert run.info.status == "KILLED"
    resumed = _run(_launch_cmd(accelerate_config, inputs, killed))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert _summary(killed)["resumed_from_step"] in (2, 4)
    assert _weights_hash(killed) == _weights_hash(out)
    assert _summary(killed)["val_loss_history"] == got["val_loss_history"]
    print(f"{name}: weights sha256 {_weights_hash(out)[:16]}, resumed at step {_summary(killed)['resumed_from_step']}")


@pytest.mark.parametrize(("name", "accelerate_config"), [("fsdp", FSDP)])
def test_two_processes_sharing_each_window_train_the_single_process_run(
    name, accelerate_config, inputs, single, tmp_path
):
    """finetune.sequence_parallel 2: both processes take the same windows, each half of every window's
    columns (DeepSpeed Ulysses inside attention), and the loss curve is the single process's."""
    out = tmp_path / "model"
    done = _run(_launch_cmd(accelerate_config, inputs, out, "--set", "sequence_parallel=2"))
    assert done.returncode == 0, done.stderr[-4000:]
    got, ref = _summary(out), _summary(single)
    assert got["processes"] == 2 and got["sequence_parallel"] == 2 and got["strategy"] == name
    assert got["first_step_windows"] == [ref["first_step_windows"][0]] * 2  # one data-parallel group
    assert got["loss_history"] == pytest.approx(ref["loss_history"], abs=1e-5)
    assert [v for _, v in got["val_loss_history"]] == pytest.approx([v for _, v in ref["val_loss_history"]], abs=1e-5)
    print(f"{name} + sequence_parallel 2: losses {got['loss_history']} vs one process {ref['loss_history']}")


# ------------------------------------------------------------------ launches that must not run silently

CHECKS = [
    # (case, environment of a worker, processes that joined, accelerate's distributed type, expected message)
    (
        "accelerate launch --cpu --num_processes 2 (one process, no mpirun)",
        {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"},
        1,
        "NO",
        "started one process",
    ),
    (
        "ddp.yaml / fsdp.yaml with 2 processes on a host without GPUs (two independent runs)",
        {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"},
        1,
        "NO",
        "started 2 processes (WORLD_SIZE) but accelerate joined 1",
    ),
    (
        "an FSDP config under accelerate launch on CPU (quietly DDP)",
        {"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true", "ACCELERATE_USE_CPU": "true"},
        2,
        "MULTI_CPU",
        "asks for FSDP",
    ),
    (
        "a context-parallel size nothing applies",
        {"PARALLELISM_CONFIG_CP_SIZE": "2", "WORLD_SIZE": "2"},
        2,
        "MULTI_GPU",
        "PARALLELISM_CONFIG_CP_SIZE=2",
    ),
    (
        "ropeext.launch asked for 2 processes, 1 joined",
        {"ROPEEXT_LAUNCH": json.dumps({"strategy": "fsdp", "processes": 2, "device": "cpu"})},
        1,
        "NO",
        "asked for 2 processes (fsdp",
    ),
    (
        "ropeext.launch asked for DeepSpeed, accelerate set up DDP",
        {"ROPEEXT_LAUNCH": json.dumps({"strategy": "deepspeed", "processes": 2, "device": "cuda"})},
        2,
        "MULTI_GPU",
        "asks for DeepSpeed",
    ),
]


@pytest.mark.parametrize(("case", "env", "world", "kind", "message"), CHECKS, ids=[c[0] for c in CHECKS])
def test_a_launch_that_got_something_else_stops(case, env, world, kind, message):
    from ropeext.errors import RopeextError
    from ropeext.train.distributed import check_launch

    with pytest.raises(RopeextError, match=re.escape(message)) as err:
        check_launch(env, world=world, distributed_type=kind)
    assert "python -m ropeext.launch" in str(err.value) or "parallelism" in str(err.value) or "GPUs" in str(err.value)


def test_what_was_asked_and_joined_passes():
    from ropeext.train.distributed import check_launch

    asked = {"ROPEEXT_LAUNCH": json.dumps({"strategy": "fsdp", "processes": 2, "device": "cpu"}), "WORLD_SIZE": "2"}
    assert check_launch(asked, world=2, distributed_type="MULTI_CPU").strategy == "fsdp"
    assert check_launch({}, world=1, distributed_type="NO").strategy == "single"
    assert check_launch({"WORLD_SIZE": "2"}, world=2, distributed_type="MULTI_GPU").strategy == "ddp"


PLANS = [
    # (accelerate config, --num_processes, GPUs, expected message or the plan's strategy/device/processes)
    ({"distributed_type": "FSDP", "num_processes": 8}, 2, 0, ("fsdp", "cpu", 2)),
    ({"distributed_type": "MULTI_GPU", "num_processes": 8}, None, 8, ("ddp", "cuda", 8)),
    ({"distributed_type": "DEEPSPEED"}, 2, 0, "DeepSpeed ZeRO-3 runs on GPUs"),
    ({"distributed_type": "MULTI_GPU"}, 4, 2, "--num_processes 4: this machine shows 2 GPUs"),
    ({"distributed_type": "FSDP", "parallelism_config": {"cp_size": 2}}, 2, 2, "parallelism_config.cp_size: 2"),
    ({"distributed_type": "FSDP", "parallelism_config": {"sp_size": 2}}, 2, 2, "finetune.sequence_parallel"),
    ({"distributed_type": "FSDP", "mixed_precision": "bf16"}, 2, 2, "mixed_precision 'bf16': expected \"no\""),
    ({"distributed_type": "FSDP", "fsdp_config": {"fsdp_version": 1}}, 2, 2, "fsdp_version 1: expected 2"),
    ({"distributed_type": "TPU"}, 2, 0, "distributed_type 'TPU' is not supported"),
    ({"distributed_type": "MULTI_GPU", "num_machines": 2}, 2, 2, "num_machines 2"),
]


@pytest.mark.parametrize(("cfg", "procs", "gpus", "expected"), PLANS)
def test_launch_plans(cfg, procs, gpus, expected):
    from ropeext.errors import RopeextError
    from ropeext.launch import plan_launch
    from ropeext.train.distributed import ENV, Launch

    if isinstance(expected, str):
        with pytest.raises(RopeextError, match=re.escape(expected)) as err:
            plan_launch("acc.yaml", cfg, num_processes=procs, gpus=gpus, command=["finetune"])
        assert "acc.yaml" in str(err.value) or "--num_processes" in str(err.value)
        return
    plan = plan_launch("acc.yaml", cfg, num_processes=procs, gpus=gpus, command=["finetune"], threads=4)
    assert (plan.launch.strategy, plan.launch.device, plan.launch.processes) == expected
    assert Launch(**json.loads(plan.env[ENV])) == plan.launch
    assert plan.argv[-3:] == ["-m", "ropeext.cli", "finetune"]
    assert ("ACCELERATE_USE_CPU" in plan.env) == (gpus == 0)


@pytest.mark.parametrize(
    ("launcher", "message"),
    [
        (["accelerate", "launch", "--config_file", str(DDP), "--num_processes", "2"], "but accelerate joined 1"),
        (["accelerate", "launch", "--cpu", "--num_processes", "2"], "started one process"),
    ],
    ids=["ddp.yaml-without-gpus", "cpu-launcher"],
)
def test_bare_accelerate_launches_stop_before_training(launcher, message, inputs, tmp_path):
    out = tmp_path / "model"
    exe = str(Path(sys.executable).parent / launcher[0])
    done = _run([exe, *launcher[1:], "-m", "ropeext.cli", *_finetune_args(inputs, out)])
    assert done.returncode != 0
    assert message in done.stderr  # (accelerate's own launcher adds its traceback of the failed workers)
    assert "train[" not in done.stderr and not out.exists()
