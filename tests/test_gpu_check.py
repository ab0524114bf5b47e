"""benchmarks/gpu_check.py: its counting helpers against independent references, that its checks can
fail, the clean skip without a GPU, and the CPU smoke pass (every path except the CUDA-only ones)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import flops
from benchmarks.gpu import correctness
from benchmarks.gpu import plan as plans
from ropeext.attention.masks import attention_mask
from ropeext.data.packing import INTERLEAVED, LAYOUTS, TAGGED, pack_documents

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
INTERLEAVE = {"min_tokens": 6, "max_tokens": 60, "chunks": [2, 3], "cut_range": [0.2, 0.8]}


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gc = _load()


def _packed(layout, seed=0, W=64, n=40):
    rng = np.random.default_rng(seed)
    docs = [list(rng.integers(3, 100, rng.integers(1, 40))) for _ in range(n)]
    kw = {}
    if layout in INTERLEAVED:
        kw["interleave"] = INTERLEAVE
    if layout in TAGGED:
        kw["tags"] = [[5, 6] if i % 2 else [7] for i in range(n)]
    return pack_documents(docs, W, layout, 1, seed=seed, pad_last=True, **kw)


def _run(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_attended_pairs_equal_the_dense_mask_count(layout):
    doc = _packed(layout)["doc_ids"]
    assert (doc == -1).any()  # the last window is padded: padding queries are counted too
    expect = [attention_mask(row, layout).sum() for row in doc]
    assert np.array_equal(flops.attended_pairs(doc, layout), expect)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wrong_variant_is_a_different_mask(layout):
    doc = _packed(layout, seed=3)["doc_ids"]
    wdoc, wlayout, bug = correctness.wrong_variant(doc, layout)
    changed = [not np.array_equal(attention_mask(a, layout), attention_mask(b, wlayout)) for a, b in zip(doc, wdoc)]
    assert sum(changed) >= len(doc) // 2, bug
    if layout in INTERLEAVED:  # every contiguous run became a document of its own; anchor and padding kept
        assert bug == "chunks not joined"
        for row, new in zip(doc, wdoc):
            assert new[0] == 0 and np.array_equal(new == -1, row == -1)
            runs = 1 + int((np.diff(row[row != -1]) != 0).sum())
            assert len(np.unique(new[new != -1])) == runs


def test_datasheet_peaks():
    assert flops.datasheet_peak("NVIDIA H100 80GB HBM3") == ("H100 SXM", 989e12)
    assert flops.datasheet_peak("NVIDIA H100 PCIe")[1] == 756e12
    assert flops.datasheet_peak("NVIDIA H200")[1] == 989e12
    assert flops.datasheet_peak("NVIDIA A100-SXM4-80GB")[1] == 312e12
    assert flops.datasheet_peak("NVIDIA L40S")[1] == 362e12
    assert flops.datasheet_peak("NVIDIA L4")[1] == 121e12
    assert flops.datasheet_peak("NVIDIA A10G") is None and flops.datasheet_peak("Tesla V100-SXM2-16GB") is None


def test_doc_lengths_and_flops():
    L = gc.doc_lengths(200_000, 1000, 1.5, seed=0)
    assert L.min() >= 3 and L.sum() >= 200_000 and L[:-1].sum() < 200_000
    assert 800 < np.median(L) < 1250
    spec = plans.ModelSpec(hidden=8, layers=2, heads=2, kv_heads=1, intermediate=16, vocab=32)
    total, attn = flops.step_flops(100, spec.layers, spec.hidden, 10, 55)
    assert (total, attn) == (6 * 100 * 10 + 12 * 2 * 8 * 55, 12 * 2 * 8 * 55)


def test_compare_names_the_worst_tensor():
    g = {"a": torch.ones(4), "b": torch.full((3,), 2.0)}
    same = correctness.compare(1.0, g, 1.0, g)
    assert same["loss_rel"] == same["grad_rel"] == same["grad_worst"] == 0 and same["cos_min"] == pytest.approx(1)
    off = correctness.compare(1.01, {"a": torch.ones(4), "b": torch.tensor([2.0, 2.0, 2.2])}, 1.0, g)
    assert off["worst_tensor"] == "b" and off["grad_worst"] == pytest.approx(0.2 / np.sqrt(12))
    assert off["loss_rel"] == pytest.approx(0.01)


def test_snapshot_restores_the_rope_buffers_a_bf16_cast_rounds():
    model = gc.build_llama(plans.ModelSpec(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=48, vocab=64), 64)
    before = {k: v.clone() for k, v in [*model.state_dict().items(), *model.named_buffers()]}
    snap = gc.Snapshot(model)
    model.to(torch.bfloat16).to(torch.float32)
    assert not torch.equal(model.model.rotary_emb.inv_freq, before["model.rotary_emb.inv_freq"])
    snap.restore(model, torch.bfloat16)
    assert model.model.rotary_emb.inv_freq.dtype == torch.bfloat16
    snap.restore(model, torch.float32)
    after = dict([*model.state_dict().items(), *model.named_buffers()])
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny sizes: more threads only wait on each other
    yield
    torch.set_num_threads(before)


def test_fp32_check_fails_a_wrong_backend(monkeypatch, one_thread):
    """A blockwise backend with a 1% error in its softmax scale must be reported as FAIL."""
    import ropeext.attention as attention

    args, plan = gc.parse_args(["--cpu-smoke", "--backends", "sdpa_mask,blockwise", "--layouts", "anchor"])
    rt = gc.Runtime(torch.device("cpu"), args, plan)
    corpus = gc.Corpus(gc.doc_lengths(2048, plan.small_doc_median, 1.0, seed=1), plan.small.vocab, plan.interleave)
    results = {"fp32_check": []}
    gc.fp32_check(rt, corpus, ("anchor",), results)
    assert [r["status"] for r in results["fp32_check"]] == ["ok"]
    real = attention.blockwise_attention  # the name the backend calls

    def skewed(q, k, v, plan, *, scale=None, dropout=0.0):
        return real(q, k, v, plan, scale=(scale or q.shape[-1] ** -0.5) * 1.01, dropout=dropout)

    monkeypatch.setattr(attention, "blockwise_attention", skewed)
    results = {"fp32_check": [], "bf16_check": [], "throughput": []}
    gc.fp32_check(rt, corpus, ("anchor",), results)
    (row,) = results["fp32_check"]
    assert row["status"] == "FAIL" and row["grad_worst"] > correctness.FP32_TOL["grad"]
    assert gc.failures(results) == ["fp32_check anchor blockwise: FAIL"]


def test_bad_arguments_are_named():
    for argv, key in (
        (["--windows", "1000"], "--windows"),
        (["--backends", "magic"], "--backends"),
        (["--layouts", "diagonal"], "--layouts"),
        (["--cpu-flex"], "--cpu-flex"),
        (["--json", str(REPO)], "--json"),
    ):
        with pytest.raises(SystemExit) as exc:
            gc.parse_args(argv)
        assert exc.value.code == 2, key


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the plain run is the full check")
def test_plain_run_without_gpu_skips(tmp_path):
    out = tmp_path / "r.json"
    res = _run("--json", str(out))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: skipped: no CUDA GPU")
    assert json.loads(out.read_text())["skipped"].startswith("no CUDA GPU")


def test_cpu_smoke_runs_every_cpu_path(tmp_path):
    out = tmp_path / "smoke.json"
    res = _run("--cpu-smoke", "--json", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    r = json.loads(out.read_text())
    assert r["mode"] == "smoke" and r["failures"] == []
    assert r["backends"]["sdpa_mask"] == r["backends"]["blockwise"] == "ok"
    assert r["backends"]["flash_varlen"] == "needs a CUDA GPU"
    layouts = ("full", "anchor", "anchor_interleaved")
    # fp32: blockwise equals the dense reference far inside the tolerance, and the tolerance is far
    # below what each masking bug does
    fp32 = {x["layout"]: x for x in r["fp32_check"]}
    assert set(fp32) == set(layouts) and all(x["backend"] == "blockwise" for x in fp32.values())
    for x in fp32.values():
        assert x["status"] == "ok" and x["grad_worst"] < 1e-5 and x["loss_rel"] < 1e-6
        assert x["wrong_grad_worst"] > 100 * correctness.FP32_TOL["grad"]
    # bf16: a reference (the bf16 noise) and a blockwise row per precision and layout
    rows = {(x["precision"], x["layout"], x["backend"]): x for x in r["bf16_check"]}
    for precision in ("bf16", "bf16-mixed"):
        for layout in layouts:
            ref, blk = rows[(precision, layout, "sdpa_mask")], rows[(precision, layout, "blockwise")]
            assert ref["status"] == "reference" and blk["status"] == "ok"
            assert 0 < ref["grad_worst"] < 0.1 and blk["grad_worst"] <= blk["tol_grad"]
            assert blk["tol_grad"] == pytest.approx(2 * ref["grad_worst"] + correctness.BF16_FLOOR["grad"])
            assert blk["wrong_grad_worst"] > blk["tol_grad"]
    # throughput: every CPU-trainable backend, both layouts, both windows, with a step time
    tp = {(x["window"], x["backend"], x["layout"]): x for x in r["throughput"]}
    assert set(tp) == {
        (W, b, lay) for W in (256, 512) for b in ("sdpa_mask", "blockwise") for lay in ("full", "anchor")
    }
    for (W, _, layout), x in tp.items():
        assert x["status"] == "ok" and x["step_s"] > 0 and len(x["steps_s"]) == 2
        assert x["batch"] * W == 512  # the smoke plan's tokens per step
        assert x["tok_s"] == pytest.approx(512 / x["step_s"])
        assert x["flop_s"] == pytest.approx(x["flops"] / x["step_s"]) and x["mfu"] > 0
        assert np.isfinite(x["loss_last"])
    ratios = {(x["window"], x["backend"]): x for x in r["anchor_vs_full"]}
    assert set(ratios) == {(W, b) for W in (256, 512) for b in ("sdpa_mask", "blockwise")}
    for (W, b), x in ratios.items():
        assert x["time_ratio"] == pytest.approx(tp[(W, b, "anchor")]["step_s"] / tp[(W, b, "full")]["step_s"])
        assert 0 < x["pair_ratio"] < x["flop_ratio"] < 1
    # the printed tables carry the same rows
    text = res.stdout
    for header in ("== fp32 check", "== bf16 check", "== throughput", "== anchor vs full"):
        assert header in text
    for (W, b, layout), x in tp.items():
        assert f"{x['tok_s']:>9.0f}" in next(
            line for line in text.splitlines() if line.split()[:4] == [str(W), str(x["batch"]), b, layout]
        )
    assert "all checks passed" in text
