"""ropeext finetune / pretrain end to end on tiny stand-ins: outputs, MLflow metrics, observed numeric
path, recipes, and clear errors for bad input before the first step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ropeext import tracking
from ropeext.cli import main

CONFIG = """
seed: 0
model: {train_length: 32}
extension: {target_lengths: [64]}
attention: {backend: %s}
finetune: {steps: 4, batch_size: 4, lr: 1.0e-3, warmup_steps: 1, precision: fp32}
pretrain: {steps: 4, batch_size: 4, lr: 1.0e-3, warmup_steps: 1, precision: fp32}
"""


def _packed(path: Path, tok_dir: Path, window: int, layout: str, n_docs: int = 60, seed: int = 0) -> Path:
    from transformers import AutoTokenizer

    from ropeext.commands.pack import write_packed
    from ropeext.data.packing import pack_documents

    tok = AutoTokenizer.from_pretrained(tok_dir)
    rng = np.random.default_rng(seed)
    docs = [list(rng.integers(3, len(tok), size=int(rng.integers(8, 40)))) for _ in range(n_docs)]
    write_packed(path, pack_documents(docs, window, layout, tok.bos_token_id, seed), layout)
    return path


def _scaling(path: Path, head_dim: int = 32, target: int = 64, method: str = "pi") -> Path:
    assert (
        main(
            [
                "solve",
                "--rope-theta",
                "10000",
                "--head-dim",
                str(head_dim),
                "--train-length",
                "32",
                "--target-length",
                str(target),
                "--method",
                method,
                "--output",
                str(path),
                "--no-mlflow",
            ]
        )
        == 0
    )
    return path


@pytest.fixture(scope="module")
def finetune_inputs(tmp_path_factory, tiny_model_dir, tiny_tokenizer_dir):
    d = tmp_path_factory.mktemp("ft_inputs")
    (d / "config.yaml").write_text(CONFIG % "blockwise")
    return {
        "config": d / "config.yaml",
        "base": tiny_model_dir,
        "scaling": _scaling(d / "scaling.json"),
        "train": _packed(d / "train.parquet", tiny_tokenizer_dir, 64, "anchor"),
        "dir": d,
        "tokenizer": tiny_tokenizer_dir,
    }


def _args(inp, output, *extra, **over):
    base = {
        "config": inp["config"],
        "base": inp["base"],
        "scaling": inp["scaling"],
        "train": inp["train"],
        "layout": "anchor",
        "output": output,
    }
    base.update(over)
    out = ["finetune"]
    for k, v in base.items():
        out += [f"--{k}", str(v)]
    return out + list(extra)


def test_finetune_writes_model_and_logs_per_step_metrics(finetune_inputs, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "model"
    assert (
        main(
            _args(
                finetune_inputs,
                out,
                "--set",
                "precision=bf16-mixed",
                "--set",
                "checkpoint_every=2",
                "--variant",
                "tiny-pi-64-anchor",
            )
        )
        == 0
    )
    summary = json.loads((out / "training_summary.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["max_position_embeddings"] == 64 and cfg["rope_parameters"]["rope_type"] == "linear"
    assert summary["steps"] == 4 and summary["resumed_from_step"] is None and summary["processes"] == 1
    seen = summary["numeric_path"]["observed"]
    # bf16 autocast: projections in bf16, cos/sin in fp32, so the rotation promotes q/k back to fp32
    assert seen["q_proj"] == "bfloat16" and seen["rope_cos"] == "float32" and seen["query_after_rope"] == "float32"
    assert seen["attention_implementation"] == "ropeext_blockwise" and seen["packed_plan"] is True
    assert not (tmp_path / "model.checkpoints").exists() and not (tmp_path / "model.partial").exists()

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`ropeext.stage` = 'finetune'"
    )[0]
    for key in ("train.loss", "train.lr", "train.grad_norm", "train.tokens_per_s", "train.peak_rss_gb"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3, 4], key
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "train.lr")]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[1]  # warm-up 1 step, then cosine decay
    assert run.data.tags["ropeext.numeric_path.attention"] == "float32"
    assert run.data.params["finetune.grad_accum"] == "1" and run.data.params["finetune.recipe"] == "none"
    assert "training_summary.json" in tracking.run_artifacts(f"sqlite:///{tmp_path}/mlflow.db", run.info.run_id)


def test_recipe_values_and_key_by_key_override(finetune_inputs, tmp_path):
    out = tmp_path / "model"
    assert (
        main(
            _args(
                finetune_inputs,
                out,
                "--recipe",
                "anchor",
                "--set",
                "steps=2",
                "--set",
                "batch_size=4",
                "--set",
                "precision=fp32",
                "--no-mlflow",
            )
        )
        == 0
    )
    s = json.loads((out / "training_summary.json").read_text())["settings"]
    assert s["betas"] == [0.9, 0.95] and s["weight_decay"] == 0.1 and s["lr"] == 2e-5
    assert s["schedule"] == "constant" and s["warmup_steps"] == 0
    assert s["steps"] == 2 and s["batch_size"] == 4  # overridden key by key


def _fails(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for f in fragments:
        assert f in err, err
    return err


def test_bad_input_fails_before_training(finetune_inputs, tmp_path, capsys, tiny_tokenizer_dir):
    inp, out = finetune_inputs, tmp_path / "model"
    _fails(
        capsys, _args(inp, out, base=tmp_path / "no" / "such-model"), "base model directory not found", "no/such-model"
    )
    _fails(capsys, _args(inp, out, scaling=_scaling(tmp_path / "hd16.json", head_dim=16)), "head_dim 16", "head_dim 32")
    wide = _packed(tmp_path / "w128.parquet", tiny_tokenizer_dir, 128, "anchor")
    _fails(capsys, _args(inp, out, train=wide), "packed at window 128, longer than the 64 positions")
    _fails(
        capsys,
        _args(inp, out, "--set", "grad_accum=3"),
        "finetune.batch_size: 4 sequences do not split into finetune.grad_accum 3",
    )
    _fails(capsys, _args(inp, out, "--set", "warmup=3"), "unknown key 'warmup'")
    _fails(capsys, _args(inp, out, "--set", "precision=fp8"), "finetune.precision: 'fp8' is not one of")
    assert not out.exists() and not (tmp_path / "model.checkpoints").exists()


def test_settings_change_refuses_to_resume(finetune_inputs, tmp_path, capsys):
    out = tmp_path / "model"
    ck = tmp_path / "model.checkpoints"
    assert (
        main(
            _args(
                finetune_inputs, out, "--set", "checkpoint_every=2", "--set", "cleanup_checkpoints=false", "--no-mlflow"
            )
        )
        == 0
    )
    assert sorted(p.name for p in ck.iterdir()) == ["step-0000002"]
    _fails(
        capsys,
        _args(finetune_inputs, out, "--set", "checkpoint_every=2", "--set", "lr=0.5", "--no-mlflow"),
        "other settings",
        "lr: 0.001 -> 0.5",
    )
    assert main(_args(finetune_inputs, out, "--set", "checkpoint_every=2", "--no-mlflow", "--no-resume")) == 0
    assert json.loads((out / "training_summary.json").read_text())["resumed_from_step"] is None


def test_pretrain_runs_and_resumes(finetune_inputs, tmp_path, tiny_tokenizer_dir):
    train = _packed(tmp_path / "p32.parquet", tiny_tokenizer_dir, 32, "full")
    out = tmp_path / "base"
    argv = [
        "pretrain",
        "--config",
        str(finetune_inputs["config"]),
        "--tokenizer",
        str(tiny_tokenizer_dir),
        "--train",
        str(train),
        "--output",
        str(out),
        "--no-mlflow",
        "--set",
        "checkpoint_every=2",
        "--set",
        "cleanup_checkpoints=false",
    ]
    assert main(argv) == 0
    first = json.loads((out / "training_summary.json").read_text())
    assert first["parameters"] > 0 and first["resumed_from_step"] is None
    assert main(argv) == 0  # a rerun continues from the newest checkpoint (step 2 of 4)
    again = json.loads((out / "training_summary.json").read_text())
    assert again["resumed_from_step"] == 2 and again["final_loss"] == first["final_loss"]
