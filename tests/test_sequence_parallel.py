"""Sequence parallelism (DeepSpeed Ulysses): 2 CPU processes x half a window against 1 process x the whole.

Two processes over gloo run every packing layout with the window's columns split between them; the
sum of their local token losses and of their gradients must equal the single-process loss and
gradients, computed here in the test process with ``ropeext.attention.model_inputs`` and the same
backend (no DeepSpeed). One spawn of 2 processes serves every case (imports dominate its time).
"""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from ropeext.attention import model_inputs, set_backend
from ropeext.data.packing import INTERLEAVED, LAYOUTS, TAGGED, pack_documents
from ropeext.errors import RopeextError
from ropeext.train import sequence_parallel as sp_mod
from ropeext.train.sequence_parallel import (
    SequenceParallel,
    check_sequence_parallel,
    model_inputs_sp,
    setup,
    shard_columns,
)

VOCAB, ANCHOR, W, ROWS = 96, 1, 32, 2
INTERLEAVE = {"min_tokens": 6, "max_tokens": 40, "chunks": [2, 3], "cut_range": [0.2, 0.8]}
TAG_TABLE = [[5, 6], [7], [8, 9, 10]]
# (dtype, backend, with gradients)
CASES = [(torch.float64, "blockwise", True), (torch.float32, "blockwise", True), (torch.float64, "sdpa_mask", True)]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2}


def _model(dtype):
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        max_position_embeddings=W,
        tie_word_embeddings=True,
        use_cache=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(dtype)


def _batch(layout, seed=3):
    """The last ROWS windows of a packing (the last one padded), as numpy columns."""
    rng = np.random.default_rng(seed)
    n = 30
    docs = [list(rng.integers(3, VOCAB, rng.integers(1, 26))) for _ in range(n)]
    kwargs = {}
    if layout in INTERLEAVED:
        kwargs["interleave"] = INTERLEAVE
    if layout in TAGGED:
        kwargs["tags"] = [TAG_TABLE[i] for i in rng.integers(0, len(TAG_TABLE), n)]
    out = pack_documents(docs, W, layout, ANCHOR, seed=seed, pad_last=True, **kwargs)
    return {k: v[-ROWS:] for k, v in out.items()}


def _loss_and_grads(model, inputs, labels, grads: bool):
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(grads):
        logits = model(**inputs).logits
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).to(torch.promote_types(logits.dtype, torch.float32)),
            labels.long().reshape(-1),
            reduction="sum",
        )
    if not grads:
        return loss.detach(), {}
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _worker(rank, world, tmp, cases, device_type):
    """One process of the group: its half of every case's windows; rank 0 saves the group's sums."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    device = torch.device(device_type, rank if device_type == "cuda" else None)
    if device_type == "cuda":
        torch.cuda.set_device(device)
    comm = "nccl" if device_type == "cuda" else "gloo"
    # a timeout, so that a collective one process never reaches fails the test instead of hanging it
    dist.init_process_group(
        comm, init_method=f"file://{tmp}/store", rank=rank, world_size=world, timeout=timedelta(seconds=120)
    )
    try:
        results = {}
        for dtype, backend, grads in cases:
            model = _model(dtype).to(device).train(grads)
            sp = setup(model, world, backend=backend, window=W)
            assert model.config._attn_implementation == sp_mod.implementation(backend)
            for layout in LAYOUTS:
                batch = {k: torch.as_tensor(v, device=device) for k, v in _batch(layout).items()}
                mine = shard_columns(batch, sp)
                loss, g = _loss_and_grads(model, model_inputs_sp(batch, sp, layout, backend), mine["labels"], grads)
                for t in [loss, *g.values()]:
                    dist.all_reduce(t, group=sp.group)  # SUM: the columns' shares add up
                results[(str(dtype), backend, layout)] = (loss.cpu(), {n: t.cpu() for n, t in g.items()})
        if rank == 0:
            torch.save(results, os.path.join(tmp, "results.pt"))
    finally:
        dist.destroy_process_group()


def _spawn(tmp, cases, device_type):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(tmp), cases, device_type), nprocs=2, join=True)
    return torch.load(os.path.join(tmp, "results.pt"))


def _compare(results, dtype, backend, grads, device):
    """Max abs differences (loss, gradients) per layout of the 2-process sums against one process;
    asserts TOL[dtype] relative to max(1, the largest reference value) of the loss and of each gradient."""
    model = _model(dtype).to(device).train(grads)
    set_backend(model, backend, training=grads)
    measured = {}
    for layout in LAYOUTS:
        batch = _batch(layout)
        # the split cuts through documents (and, interleaved, through gapped ones): the halves must talk
        assert layout == "full" or any(set(r[: W // 2]) & set(r[W // 2 :]) - {0, -1} for r in batch["doc_ids"])
        tensors = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
        ref = _loss_and_grads(model, model_inputs(tensors, layout, backend), tensors["labels"], grads)
        got = results[(str(dtype), backend, layout)]
        assert set(got[1]) == set(ref[1])
        loss_diff = abs(float(got[0].double() - ref[0].double()))
        assert loss_diff <= TOL[dtype] * max(1.0, abs(float(ref[0]))), (layout, loss_diff)
        grad_diff = 0.0
        for n in ref[1]:
            a, b = got[1][n].double(), ref[1][n].double().cpu()
            diff = float((a - b).abs().max())
            assert diff <= TOL[dtype] * max(1.0, float(b.abs().max())), (layout, n, diff)
            grad_diff = max(grad_diff, diff)
        measured[layout] = (loss_diff, grad_diff)
        print(
            f"{dtype} {backend:12s} {layout:22s} loss {float(ref[0]):.4f} diff {loss_diff:.1e}, grads {grad_diff:.1e}"
        )
    return measured


@pytest.fixture(scope="module")
def cpu_results(tmp_path_factory):
    return _spawn(tmp_path_factory.mktemp("sp"), CASES, "cpu")


@pytest.mark.parametrize("dtype, backend, grads", CASES, ids=lambda c: str(c).replace("torch.", ""))
def test_two_processes_equal_one_for_every_layout(cpu_results, dtype, backend, grads):
    _compare(cpu_results, dtype, backend, grads, "cpu")


def _flash_attn():
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


# One GPU per process (NCCL refuses two processes on one GPU): flex trains on CUDA only, flash_varlen
# needs flash-attn. Run with ``pytest -m gpu tests/test_sequence_parallel.py`` on a 2-GPU machine.
CUDA_CASES = [(torch.float32, "flex", True), (torch.bfloat16, "flash_varlen", True)]


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (one per process)")
@pytest.mark.parametrize("dtype, backend, grads", CUDA_CASES, ids=lambda c: str(c).replace("torch.", ""))
def test_gpu_two_processes_equal_one_for_every_layout(tmp_path, dtype, backend, grads):
    if backend == "flash_varlen" and not _flash_attn():
        pytest.skip("needs flash-attn")
    _compare(_spawn(tmp_path, [(dtype, backend, grads)], "cuda"), dtype, backend, grads, "cuda:0")


def test_shard_columns_and_inputs_hold_this_rank_columns_and_the_full_plan():
    batch = _batch("anchor_interleaved")
    for rank in (0, 1):
        sp = SequenceParallel(size=2, rank=rank, group=None, data_rank=0, data_size=1)
        cols = slice(rank * W // 2, (rank + 1) * W // 2)
        mine = shard_columns(batch, sp)
        assert set(mine) == set(batch) and all((mine[k] == batch[k][:, cols]).all() for k in batch)
        for backend in ("blockwise", "sdpa_mask"):
            kw = model_inputs_sp(batch, sp, "anchor_interleaved", backend)
            assert (kw["input_ids"].numpy() == batch["input_ids"][:, cols]).all()
            assert (kw["position_ids"].numpy() == batch["position_ids"][:, cols]).all()
            if backend == "blockwise":
                assert kw["packed_plan"].window == W and kw["attention_mask"].shape == (ROWS, W // 2)
            else:
                assert kw["attention_mask"].shape == (ROWS, 1, W, W)
    # the full layout's causal fast path is spelled out as a full-window mask
    sp = SequenceParallel(size=2, rank=1, group=None, data_rank=0, data_size=1)
    full = _batch("full")
    full["doc_ids"] = np.where(full["doc_ids"] < 0, 1, full["doc_ids"])  # no padding
    assert model_inputs_sp(full, sp, "full", "sdpa_mask")["attention_mask"].shape == (ROWS, 1, W, W)
    assert shard_columns(batch, None) is batch
    with pytest.raises(RopeextError, match="finetune.sequence_parallel = 2 must divide the window"):
        shard_columns({k: v[:, :-1] for k, v in batch.items()}, sp)


def test_size_one_is_off():
    model = _model(torch.float32)
    assert setup(model, 1, backend="blockwise", window=W) is None
    assert model.config._attn_implementation != sp_mod.implementation("blockwise")


def test_setup_needs_a_launch():
    with pytest.raises(RopeextError, match="torch.distributed is not initialised"):
        setup(_model(torch.float32), 2, backend="blockwise", window=W)


GOOD = dict(world=4, window=64, heads=4, kv_heads=2, backend="blockwise")


@pytest.mark.parametrize(
    "size, changes, message",
    [
        (0, {}, r"finetune.sequence_parallel must be an integer >= 1 \(1 = off\), got 0"),
        (1.5, {}, "must be an integer >= 1"),
        (2, {"kv_heads": 1}, r"must divide the model's attention heads \(4\) and key/value heads \(1\)"),
        (2, {"world": 3}, "finetune.sequence_parallel = 2: it must divide the 3 processes of the launch"),
        (2, {"window": 63}, "must divide the window of 63 tokens"),
        (2, {"heads": 3, "kv_heads": 3}, r"must divide the model's attention heads \(3\) and key/value heads \(3\)"),
        (4, {"kv_heads": 2}, r"key/value heads \(2\)"),
        (4, {"world": 6, "window": 30}, "6 processes of the launch; it must divide the window of 30"),
        (2, {"backend": "eager"}, "attention.backend 'eager' cannot run under it: use one of blockwise .any device.,"),
        (3, {"world": 4, "backend": "sdpa"}, "4 processes.*; attention.backend 'sdpa' cannot run under it"),
    ],
)
def test_check_sequence_parallel_errors(size, changes, message):
    with pytest.raises(RopeextError, match=message):
        check_sequence_parallel(size, **{**GOOD, **changes})


@pytest.mark.parametrize("backend", sp_mod.SUPPORTED)
def test_check_sequence_parallel_accepts(backend):
    check_sequence_parallel(2, **{**GOOD, "backend": backend})
    check_sequence_parallel(1, **{**GOOD, "world": 3, "window": 7, "heads": 3, "kv_heads": 1, "backend": backend})
    check_sequence_parallel(4, **{**GOOD, "kv_heads": 4, "window": None, "backend": backend})
