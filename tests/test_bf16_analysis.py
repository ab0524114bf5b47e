"""BF16 relative-position analysis: the math against dense references, capture, settings, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ropeext.analysis.bf16 import Spec, analyze, analyze_model, fit_lengths, jsonable, load_setting, summary_row
from ropeext.analysis.capture import capture_qk, exact_rope_angles
from ropeext.analysis.deviation import attention_logits, key_logits, layer_deviation
from ropeext.analysis.sequences import build_sequences
from ropeext.errors import RopeextError

# ---------------------------------------------------------------- dense references (independent)


def dense_probs(q, k, scale, path):
    """Full causal softmax attention, one head at a time, all T x T at once, in float64 where possible."""
    t = q.shape[0]
    if path == "eager-bf16":
        logits = torch.matmul(q.float(), k.float().T).to(q.dtype)
        logits = (logits * scale).float()
    else:
        logits = torch.matmul(q.double(), k.double().T) * scale
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    logits = logits.double().masked_fill(~mask, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if path == "eager-bf16":
        probs = probs.to(q.dtype).double()
    return probs


def dense_deviation(q1, k1, q2, k2, scale, path):
    """Brute force: column means over i >= j and row means over j <= i, per head."""
    heads, t, _ = q1.shape
    group = heads // k1.shape[0]
    cols, rows = [], []
    for h in range(heads):
        diff = (dense_probs(q1[h], k1[h // group], scale, path) - dense_probs(q2[h], k2[h // group], scale, path)).abs()
        cols.append(torch.stack([diff[j:, j].mean() for j in range(t)]))
        rows.append(torch.stack([diff[i, : i + 1].mean() for i in range(t)]))
    return torch.stack(cols), torch.stack(rows)


def _rand_qk(heads=4, kv_heads=2, t=37, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda h: (torch.randn(h, t, d, generator=g) * 2).to(dtype)  # noqa: E731
    return make(heads), make(kv_heads), make(heads), make(kv_heads)


# ---------------------------------------------------------------- deviation math


@pytest.mark.parametrize("chunk", [1, 5, 16, 100])
def test_layer_deviation_matches_dense_fp32_any_chunk(chunk):
    q1, k1, q2, k2 = _rand_qk()
    scale = 16**-0.5
    dev = layer_deviation(q1, k1, q2, k2, scale=scale, path="fa2-like", chunk_size=chunk)
    col, row = dense_deviation(q1, k1, q2, k2, scale, "fa2-like")
    torch.testing.assert_close(dev.column.double(), col, atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(dev.row.double(), row, atol=2e-6, rtol=1e-4)
    assert dev.column_total == pytest.approx(float(col.sum()), rel=1e-4)


@pytest.mark.parametrize("path", ["fa2-like", "eager-bf16"])
def test_layer_deviation_matches_dense_bf16_paths(path):
    q1, k1, q2, k2 = _rand_qk(dtype=torch.bfloat16, seed=1)
    scale = 16**-0.5
    dev = layer_deviation(q1, k1, q2, k2, scale=scale, path=path, chunk_size=8)
    col, row = dense_deviation(q1, k1, q2, k2, scale, path)
    # the dense reference accumulates in float64, the chunked one in fp32; eager rounds the same way
    torch.testing.assert_close(dev.column.double(), col, atol=1e-2 if path == "eager-bf16" else 1e-4, rtol=2e-2)
    assert dev.column_total == pytest.approx(float(col.sum()), rel=2e-2)


def test_identical_inputs_give_zero_and_paths_differ():
    q1, k1, q2, k2 = _rand_qk(dtype=torch.bfloat16, seed=2)
    assert layer_deviation(q1, k1, q1, k1, scale=0.25, chunk_size=7).column_total == 0.0
    a = attention_logits(q1[0], k1[0], 0.25, "eager-bf16")
    b = attention_logits(q1[0], k1[0], 0.25, "fa2-like")
    assert torch.equal(a, a.to(torch.bfloat16).float())  # eager logits are bf16 values
    assert not torch.equal(b, b.to(torch.bfloat16).float())  # fa2-like keeps fp32 precision
    torch.testing.assert_close(a, b, atol=0.1, rtol=1e-2)


def test_key_logits_brute_force():
    q, k, _, _ = _rand_qk(heads=4, kv_heads=2, t=20)
    out = key_logits(q, k, 7, scale=0.5, path="fa2-like")
    assert out.shape == (4, 13)
    for h in range(4):
        ref = torch.stack([q[h, i] @ k[h // 2, 7] * 0.5 for i in range(7, 20)])
        torch.testing.assert_close(out[h], ref, atol=1e-5, rtol=1e-5)


def test_bad_path_and_chunk_raise():
    q1, k1, q2, k2 = _rand_qk()
    with pytest.raises(RopeextError, match="numeric path"):
        layer_deviation(q1, k1, q2, k2, scale=1.0, path="fast")
    with pytest.raises(RopeextError, match="chunk"):
        layer_deviation(q1, k1, q2, k2, scale=1.0, chunk_size=0)


# ---------------------------------------------------------------- capture


def _model(tiny_model_dir, dtype=torch.float32):
    return load_setting(str(tiny_model_dir), "fp32", seed=0, device="cpu", attn_implementation="sdpa").to(dtype).eval()


def _ids(tiny_model_dir, t=48, seed=0):
    rng = np.random.default_rng(seed)
    ids = torch.as_tensor(rng.integers(3, 300, size=(1, t)))
    ids[0, 0] = 1
    return ids


def test_capture_matches_transformers_rotary_and_keeps_outputs(tiny_model_dir):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = _model(tiny_model_dir)
    ids = _ids(tiny_model_dir)
    pos = torch.arange(ids.shape[1])[None] + 5
    captured = {}
    with torch.no_grad():
        plain = model(input_ids=ids, position_ids=pos).logits
        with capture_qk(model, lambda layer, q, k, s: captured.setdefault(layer, (q.clone(), k.clone(), s))):
            assert model.config._attn_implementation.startswith("ropeext_capture_")
            hooked = model(input_ids=ids, position_ids=pos).logits
        # reference: layer 0 by hand with transformers' own functions
        attn = model.model.layers[0].self_attn
        h = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
        shape = (1, ids.shape[1], -1, attn.head_dim)
        q = attn.q_proj(h).view(shape).transpose(1, 2)
        k = attn.k_proj(h).view(shape).transpose(1, 2)
        cos, sin = model.model.rotary_emb(h, pos)
        q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    assert model.config._attn_implementation == "sdpa"
    assert sorted(captured) == [0, 1]
    torch.testing.assert_close(captured[0][0], q_ref)
    torch.testing.assert_close(captured[0][1], k_ref)
    assert captured[0][2] == pytest.approx(attn.head_dim**-0.5)
    assert torch.equal(plain, hooked)


def test_float64_shift_leaves_logits_unchanged(tiny_model_dir):
    """In float64 with exact angles, shifting every position changes nothing (attention and LM logits)."""
    model = _model(tiny_model_dir, torch.float64)
    ids = _ids(tiny_model_dir)
    t = ids.shape[1]

    def run(delta):
        got = {}

        def sink(layer, q, k, scale):
            got[layer] = attention_logits(q[0], k[0], scale, "fa2-like")

        with torch.no_grad(), capture_qk(model, sink):
            logits = model(input_ids=ids, position_ids=torch.arange(t)[None] + delta).logits
        return got, logits

    with exact_rope_angles(model):
        (a0, l0), (a16, l16) = run(0), run(16)
    for layer in a0:
        assert a0[layer].dtype == torch.float64
        assert (a0[layer] - a16[layer]).abs().max() < 1e-10
    assert (l0 - l16).abs().max() < 1e-10
    # transformers computes the angles in fp32: without exact angles the same float64 model drifts
    (_, m0), (_, m16) = run(0), run(16)
    assert (m0 - m16).abs().max() > 1e-10
    assert type(model.model.rotary_emb).__name__ == "LlamaRotaryEmbedding"  # restored


# ---------------------------------------------------------------- settings on the tiny model


@pytest.fixture(scope="module")
def tiny_result(tiny_model_dir):
    rng = np.random.default_rng(3)
    seqs = rng.integers(3, 300, size=(2, 64))
    seqs[:, 0] = 1
    spec = Spec(length=64, deltas=[0, 8, 16, 200], delta_ref=16, logit_lengths=[32, 64], chunk_size=24)
    return analyze(
        str(tiny_model_dir),
        seqs,
        spec,
        settings=["bf16", "fp32", "random-bf16", "fp64-exact"],
        seed=5,
        device="cpu",
        log=lambda m: None,
    )


def test_fp32_deviation_small_bf16_large(tiny_result):
    s = tiny_result["settings"]
    i0 = s["fp32"]["shift"]["delta1"].index(0)
    fp32 = s["fp32"]["shift"]["column"]["mean"][i0]
    bf16 = s["bf16"]["shift"]["column"]["mean"][i0]
    assert fp32 < 1e-5
    assert bf16 > 1e-5
    assert s["random-bf16"]["shift"]["column"]["mean"][i0] > 1e-5
    assert s["fp64-exact"]["shift"]["column"]["mean"].max() < 1e-12
    assert s["fp64-exact"]["logits"]["first"].max() < 1e-10
    # delta1 == delta2 is the same computation twice
    i16 = s["bf16"]["shift"]["delta1"].index(16)
    assert s["bf16"]["shift"]["column"]["mean"][i16] == 0.0
    assert s["bf16"]["logits"]["first"].min() > s["fp32"]["logits"]["first"].max()


def test_key_columns_add_up_to_D(tiny_result):
    for out in tiny_result["settings"].values():
        cols = out["key_columns"]
        i0 = out["shift"]["delta1"].index(cols["delta1"])
        assert len(cols["contribution"]) == 64
        assert cols["total"] == pytest.approx(out["shift"]["column"]["mean"][i0], rel=1e-6)
        assert cols["first_share"] == pytest.approx(cols["contribution"][0] / cols["total"])
        per_layer = out["shift"]["per_layer_column"][i0]
        assert per_layer.sum() == pytest.approx(cols["total"], rel=1e-6)


def test_random_copy_differs_from_weights(tiny_result):
    s = tiny_result["settings"]
    assert s["random-bf16"]["weights"] == "random"
    assert s["random-bf16"]["shift"]["column"]["mean"][0] != s["bf16"]["shift"]["column"]["mean"][0]


def test_summary_row_and_json(tiny_result):
    row = summary_row(tiny_result)
    for name in ("bf16", "fp32", "random-bf16"):
        for key in ("D_0_16", "D_row_0_16", "D_max", "first_key_share", "D_logit_first", "D_logit_mid"):
            assert isinstance(row[f"{name}.{key}"], float)
    assert row["bf16.D_0_16"] == tiny_result["settings"]["bf16"]["shift"]["column"]["mean"][0]
    assert row["bf16_over_fp32"] == pytest.approx(row["bf16.D_0_16"] / row["fp32.D_0_16"])
    text = json.dumps(jsonable(tiny_result), allow_nan=False)
    assert "NaN" not in text


def test_report_cells_carry_the_sequence_count(tiny_result):
    from ropeext.report.measures import bf16_cells

    data = json.loads(json.dumps(jsonable(tiny_result)))  # as the report reads it
    cells = bf16_cells(data)
    row = summary_row(tiny_result)
    for name in ("bf16", "fp32", "random-bf16"):
        cell = cells[f"{name}.D_0_16"]
        assert cell.value == pytest.approx(row[f"{name}.D_0_16"]) and cell.n == 2 and cell.unit == "sequences"
        assert not cell.known  # two sequences are too few for a bootstrap


def test_eager_path_runs_eager_forward(tiny_model_dir):
    model = load_setting(str(tiny_model_dir), "bf16", seed=0, device="cpu", attn_implementation="eager")
    seqs = torch.as_tensor(_ids(tiny_model_dir, t=32))
    spec = Spec(length=32, deltas=[0], path="eager-bf16", chunk_size=10)
    assert spec.forward_attention == "eager"
    out = analyze_model(model, seqs, spec)
    assert out["shift"]["column"]["mean"][0] > 0
    assert model.config._attn_implementation == "eager"


# ---------------------------------------------------------------- inputs


def test_build_sequences_whole_then_concatenated():
    docs = [
        np.arange(10, 30),
        np.array([1, 50, 51]),
        np.arange(100, 104),
        np.arange(200, 230),
        np.arange(300, 305),
        np.arange(400, 405),
    ]
    seqs, info = build_sequences(docs, length=8, count=4, bos_id=1, seed=0)
    assert seqs.shape == (4, 8)
    assert (seqs[:, 0] == 1).all()
    assert info == {"document_starts": 2, "concatenated": 2}
    whole = {tuple(r) for r in seqs[:2, 1:]}
    assert whole == {tuple(range(10, 17)), tuple(range(200, 207))}
    body = seqs[:, 1:].ravel().tolist()
    content = [t for t in body if t != 1]
    assert len(content) == len(set(content))  # no token is used twice
    assert set(content) <= set(np.concatenate(docs).tolist())
    # the stream starts with the tails of the documents used whole
    assert seqs[2, 1] in (17, 207)
    with pytest.raises(RopeextError, match="sequences of 8 tokens, 40 requested"):
        build_sequences(docs, length=8, count=40, bos_id=1, source="x.parquet")


def test_fit_lengths():
    assert fit_lengths(4096, 256) == (
        256,
        [64, 128, 256],
        ["requested T=4096 exceeds the model's window 256; T=256 is used"],
    )
    assert fit_lengths(100, 300)[:2] == (100, [64, 128, 256, 300])
    length, lengths, notes = fit_lengths(64, 128, [32, 1000])
    assert lengths == [32] and "1000" in notes[0]
    with pytest.raises(RopeextError, match="--length"):
        fit_lengths(1, 128)


# ---------------------------------------------------------------- CLI


def _write_tokens(path, docs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"input_ids": pa.array(docs, type=pa.list_(pa.int32()))}), path)


def test_cli_end_to_end_with_mlflow(tiny_model_dir, tmp_path, monkeypatch):
    from ropeext.cli import main

    rng = np.random.default_rng(0)
    tokens = tmp_path / "test.parquet"
    _write_tokens(tokens, [rng.integers(3, 300, size=n).tolist() for n in (80, 90, 20, 30, 100)])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "out"
    code = main(
        [
            "analyze",
            "bf16",
            "--model",
            str(tiny_model_dir),
            "--tokens",
            str(tokens),
            "--output",
            str(out),
            "--length",
            "4096",
            "--num-sequences",
            "2",
            "--deltas",
            "0,4,16",
            "--chunk-size",
            "16",
            "--variant",
            "tiny",
        ]
    )
    assert code == 0
    result = json.loads((out / "bf16_deviation.json").read_text())
    assert result["spec"]["length"] == 64 and result["window"] == 64
    assert "exceeds the model's window 64" in result["notes"][0]
    assert result["numeric_path"] == "fa2-like" and result["forward_attention"] == "sdpa"
    assert result["spec"]["logit_lengths"] == [64]
    assert set(result["settings"]) == {"bf16", "fp32", "random-bf16"}
    assert result["sequences"]["document_starts"] == 2
    for name in ("deviation_vs_delta.png", "key_columns.png", "logit_deviation.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["ropeext.variant"] == "tiny"
    assert run.data.metrics["bf16.D_0_16"] == pytest.approx(result["summary"]["bf16.D_0_16"])
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "fp32.D_vs_delta")
    assert sorted(m.step for m in history) == [0, 4, 16]


def test_cli_text_file_and_bad_inputs(tiny_model_dir, tmp_path, capsys):
    from ropeext.cli import main

    text = tmp_path / "doc.txt"
    text.write_text("The grass is green. The sky is blue. def add(a, b): return a + b\n" * 20)
    out = tmp_path / "out"
    args = [
        "analyze",
        "bf16",
        "--model",
        str(tiny_model_dir),
        "--output",
        str(out),
        "--no-mlflow",
        "--length",
        "32",
        "--num-sequences",
        "2",
        "--deltas",
        "0",
        "--logit-lengths",
        "32",
        "--settings",
        "fp32",
    ]
    assert main(args + ["--text-file", str(text)]) == 0
    result = json.loads((out / "bf16_deviation.json").read_text())
    assert result["sequences"] == {"document_starts": 1, "concatenated": 1} and list(result["settings"]) == ["fp32"]

    assert main(args + ["--tokens", str(tmp_path / "missing.parquet")]) == 2
    assert "missing.parquet" in capsys.readouterr().err
    bad = tmp_path / "bad.parquet"
    _write_tokens(bad, [[5, 6, 99999] * 30])
    assert main(args + ["--tokens", str(bad)]) == 2
    assert "vocabulary" in capsys.readouterr().err
    assert main(args[:-1] + ["bf17", "--text-file", str(text)]) == 2
    assert "bf17" in capsys.readouterr().err


def test_options_resolve_cli_then_config_then_default():
    import argparse

    from ropeext.commands.analyze_bf16 import add_arguments, resolve_settings
    from ropeext.config import resolve_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--model",
            "m",
            "--tokens",
            "t.parquet",
            "--output",
            "o",
            "--length",
            "128",
            "--deltas",
            "0,4",
            "--settings",
            "fp32, bf16",
        ]
    )
    config = resolve_config({"analysis": {"bf16": {"length": 512, "num_sequences": 7, "numeric_path": "eager-bf16"}}})
    opts = resolve_settings(args, config)
    assert opts["length"] == 128 and opts["deltas"] == [0, 4]  # the command line wins
    assert opts["settings"] == ["fp32", "bf16"]
    assert opts["num_sequences"] == 7 and opts["numeric_path"] == "eager-bf16"  # then the config
    assert opts["chunk_size"] == 512 and opts["delta_ref"] == 16  # then the schema's defaults
    assert config["analysis"]["bf16"]["length"] == 512  # the config itself is left as it was
