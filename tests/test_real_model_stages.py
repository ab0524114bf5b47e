"""A real pretrained model through ropeext's stages, at a few hundred tokens: SmolLM2-135M-Instruct cut
to 2 layers (GQA 9/3, head_dim 64, rope_theta 1e5, 8192 positions, tied embeddings, its own
tokenizer) -> solve -> extend -> eval ppl -> eval passkey -> pack (anchor) -> fine-tune with gradient
checkpointing -> resume from a checkpoint."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ropeext.cli import main

CONFIG = """
seed: 0
model: {train_length: 8192}
extension: {target_lengths: [16384]}
attention: {backend: %s}
finetune: {steps: 2, batch_size: 2, lr: 1.0e-4, warmup_steps: 0, precision: fp32, gradient_checkpointing: true,
           checkpoint_every: 1, cleanup_checkpoints: false, system_metrics: false}
"""


def _texts() -> list[str]:
    """Source files of the running interpreter's standard library: real text, nothing downloaded."""
    lib = Path(json.__file__).resolve().parents[1]
    names = [
        "textwrap.py",
        "shlex.py",
        "fnmatch.py",
        "glob.py",
        "json/encoder.py",
        "json/decoder.py",
        "colorsys.py",
        "bisect.py",
        "heapq.py",
        "keyword.py",
        "this.py",
        "getopt.py",
    ]
    return [(lib / n).read_text(encoding="utf-8") for n in names if (lib / n).is_file()]


@pytest.fixture(scope="module")
def stages(tmp_path_factory, smollm2_2layer_dir):
    from ropeext.data.tokenizer import load_tokenizer
    from ropeext.data.tokens import tokenize_documents, write_tokens

    d = tmp_path_factory.mktemp("real_stages")
    tok = load_tokenizer(smollm2_2layer_dir)
    texts = _texts()
    ids = tokenize_documents(tok, texts)
    assert min(len(x) for x in ids) > 60 and sum(len(x) > 300 for x in ids) >= 4
    write_tokens(d / "test.parquet", ids, [f"doc{i}" for i in range(len(ids))], ["file"] * len(ids))
    write_tokens(d / "train.parquet", ids, [f"doc{i}" for i in range(len(ids))], ["file"] * len(ids))
    scaling = d / "dprope-16384.json"
    assert (
        main(
            [
                "solve",
                "--rope-theta",
                "100000",
                "--head-dim",
                "64",
                "--train-length",
                "8192",
                "--target-length",
                "16384",
                "--method",
                "dprope",
                "--output",
                str(scaling),
                "--no-mlflow",
            ]
        )
        == 0
    )
    nopad = load_tokenizer(smollm2_2layer_dir)  # as hub copies of many tokenizers come: no pad token
    nopad.pad_token = None
    nopad.save_pretrained(d / "tokenizer-nopad")
    return {"dir": d, "base": smollm2_2layer_dir, "scaling": scaling, "tokenizer": tok, "nopad": d / "tokenizer-nopad"}


def test_extend_then_ppl_and_passkey(stages):
    import torch

    from ropeext.data.tokens import read_tokens
    from ropeext.eval.ppl import perplexity_by_length
    from ropeext.modeling import load_causal_lm

    d, base = stages["dir"], stages["base"]
    variant = d / "smollm2-dprope-16384-noft"
    assert (
        main(
            [
                "extend",
                "--base",
                str(base),
                "--scaling",
                str(stages["scaling"]),
                "--output",
                str(variant),
                "--no-mlflow",
            ]
        )
        == 0
    )
    config = json.loads((variant / "config.json").read_text())
    scaling = json.loads(stages["scaling"].read_text())
    assert config["rope_parameters"]["rope_type"] == "longrope" and config["max_position_embeddings"] == 16384
    assert config["num_key_value_heads"] == 3 and config["tie_word_embeddings"]
    assert json.loads((variant / "variant_manifest.json").read_text())["weights"] == {"model.safetensors": "hardlink"}

    out = d / "ppl"
    assert (
        main(
            [
                "eval",
                "ppl",
                "--model",
                str(variant),
                "--tokens",
                str(d / "test.parquet"),
                "--lengths",
                "128,256",
                "--stride",
                "64",
                "--max-tokens",
                "256",
                "--output-dir",
                str(out),
                "--no-mlflow",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokens_scored"] == 256 and metrics["rope_parameters"]["rope_type"] == "longrope"
    # the variant on disk reads as the base with the scaling applied on the fly
    with torch.no_grad():
        ref = perplexity_by_length(
            load_causal_lm(base, scaling=scaling), read_tokens(d / "test.parquet"), [128, 256], 64, 256, progress=False
        )
    for c in ("128", "256"):
        assert np.isfinite(metrics["ppl"][c]) and metrics["ppl"][c] == pytest.approx(ref["ppl"][c], rel=1e-5)

    pk = d / "passkey"
    assert (
        main(
            [
                "eval",
                "passkey",
                "--model",
                str(variant),
                "--tokenizer",
                str(stages["nopad"]),
                "--output-dir",
                str(pk),
                "--lengths",
                "200",
                "--depths",
                "0.5",
                "--samples",
                "1",
                "--max-new-tokens",
                "4",
                "--no-progress",
                "--no-mlflow",
            ]
        )
        == 0
    )
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(stages["nopad"]).pad_token_id is None
    rec = json.loads((pk / "predictions.jsonl").read_text().splitlines()[0])
    assert 150 < rec["prompt_tokens"] <= 200 and isinstance(rec["generation"], str)
    assert json.loads((pk / "metrics.json").read_text())["max_position_embeddings"] == 16384


@pytest.mark.parametrize("backend", ["blockwise"])
def test_anchor_finetune_and_resume(stages, backend, tmp_path):
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    d, base = stages["dir"], stages["base"]
    packed = d / "anchor-w256.parquet"
    if not packed.exists():
        assert (
            main(
                [
                    "pack",
                    "--tokens",
                    str(d / "train.parquet"),
                    "--tokenizer",
                    str(stages["nopad"]),
                    "--window",
                    "256",
                    "--layout",
                    "anchor",
                    "--output",
                    str(packed),
                    "--no-mlflow",
                ]
            )
            == 0
        )
    rows = pq.read_table(packed).column("input_ids").to_pylist()
    assert len(rows) >= 4 and all(r[0] == stages["tokenizer"].bos_token_id == 1 for r in rows)  # SmolLM2's BOS anchors
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG % backend)
    out = tmp_path / "smollm2-dprope-16384-anchor"
    args = [
        "finetune",
        "--config",
        str(config),
        "--base",
        str(base),
        "--scaling",
        str(stages["scaling"]),
        "--train",
        str(packed),
        "--layout",
        "anchor",
        "--output",
        str(out),
        "--no-mlflow",
    ]
    assert main(args) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["resumed_from_step"] is None
    assert summary["settings"]["gradient_checkpointing"] and np.isfinite(summary["final_loss"])
    assert summary["numeric_path"]["observed"]["packed_plan"] is True
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_type"] == "longrope" and cfg["tie_word_embeddings"]
    first = load_file(str(out / "model.safetensors"))
    before = load_file(str(base / "model.safetensors"))
    assert "lm_head.weight" not in first  # tied embeddings stay tied
    assert any(not np.array_equal(first[k].numpy(), before[k].numpy()) for k in before)  # it trained

    checkpoints = out.with_name(out.name + ".checkpoints")
    assert [p.name for p in checkpoints.iterdir()] == ["step-0000001"]
    shutil.rmtree(out)  # as if the job had died after its step-1 checkpoint
    assert main(args) == 0
    resumed = json.loads((out / "training_summary.json").read_text())
    assert resumed["resumed_from_step"] == 1
    again = load_file(str(out / "model.safetensors"))
    assert again.keys() == first.keys()
    for k in first:  # the resumed run ends exactly where the uninterrupted one did
        np.testing.assert_array_equal(again[k].numpy(), first[k].numpy(), err_msg=k)
    print(f"fine-tune: loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}", file=sys.stderr)
