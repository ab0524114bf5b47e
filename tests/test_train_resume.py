"""A fine-tune killed with SIGKILL, at an arbitrary step or while writing a checkpoint, and resumed by
running the same ``ropeext finetune`` again ends with weights bit-identical to an uninterrupted run.

The file doubles as the driver of the killed runs: ``python tests/test_train_resume.py FORWARD_N
CKPT_STEP -- <ropeext args>`` runs the real CLI and kills itself when the decoder starts its
FORWARD_N-th forward pass, or after writing part of checkpoint CKPT_STEP (0 disables either).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train_cli import finetune_inputs  # noqa: F401 - fixture

STEPS, EVERY, ACCUM = 10, 2, 2


def _driver() -> int:
    import torch

    forward_n, ckpt_step = int(sys.argv[1]), int(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    calls = {"n": 0}

    def count(module, args):
        if type(module).__name__ == "LlamaModel":
            calls["n"] += 1
            if calls["n"] == forward_n:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.nn.modules.module.register_module_forward_pre_hook(count)

    from ropeext.train import checkpoint

    original = checkpoint._save

    def save(obj, path):
        original(obj, path)
        if ckpt_step and path.name == "model.pt" and path.parent.name == checkpoint.checkpoint_name(ckpt_step) + ".tmp":
            with open(path.parent / "optimizer.pt", "wb") as fh:
                fh.write(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint._save = save
    from ropeext.cli import main as cli

    return cli(argv)


def _run(inputs, output: Path, precision: str, forward_n=0, ckpt_step=0) -> subprocess.CompletedProcess:
    args = [
        "finetune",
        "--config",
        str(inputs["config"]),
        "--base",
        str(inputs["base"]),
        "--scaling",
        str(inputs["scaling"]),
        "--train",
        str(inputs["train"]),
        "--layout",
        "anchor",
        "--output",
        str(output),
        "--threads",
        "1",
        "--no-mlflow",
        "--set",
        f"precision={precision}",
        "--set",
        f"steps={STEPS}",
        "--set",
        f"checkpoint_every={EVERY}",
        "--set",
        f"grad_accum={ACCUM}",
        "--set",
        "keep_checkpoints=2",
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), TQDM_DISABLE="1")
    return subprocess.run(
        [sys.executable, __file__, str(forward_n), str(ckpt_step), "--", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sigkill_and_resume_is_bit_identical(finetune_inputs, tmp_path, precision):
    ref = _run(finetune_inputs, tmp_path / "ref", precision)
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "killed"
    ckdir = tmp_path / "killed.checkpoints"
    rng = random.Random(precision)
    kill_step = rng.choice([s for s in range(4, STEPS) if s % EVERY])  # not on a checkpoint boundary
    first = _run(finetune_inputs, out, precision, forward_n=(kill_step - 1) * ACCUM + 2)  # mid-step, 2nd micro-batch
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert not out.exists()
    done = sorted(p.name for p in ckdir.iterdir())
    last = (kill_step - 1) // EVERY * EVERY
    assert done == [f"step-{s:07d}" for s in (last - EVERY, last)], done

    if precision == "bf16":  # a second crash, this time half-way through writing a checkpoint
        second = _run(finetune_inputs, out, precision, ckpt_step=last + EVERY)
        assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
        partial = ckdir / f"step-{last + EVERY:07d}.tmp"
        assert (partial / "model.pt").exists() and (partial / "optimizer.pt").read_bytes() == b"partial"

    resumed = _run(finetune_inputs, out, precision)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == last
    a, b = _weights(tmp_path / "ref"), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and bool((a[k] == b[k]).all()), k
    ref_summary = json.loads((tmp_path / "ref" / "training_summary.json").read_text())
    assert summary["final_loss"] == ref_summary["final_loss"]
    assert not ckdir.exists()  # cleaned once the model directory is in place


if __name__ == "__main__":
    sys.exit(_driver())
