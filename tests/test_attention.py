"""Attention backends against the dense-mask reference: outputs, gradients, leakage, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ropeext.attention import BACKENDS, model_inputs, set_backend
from ropeext.attention.blockwise import blockwise_attention
from ropeext.attention.flash import sdpa_varlen_kernel, varlen_attention
from ropeext.attention.masks import attention_mask, attention_mask_torch, mask_predicate
from ropeext.attention.plan import build_plan
from ropeext.data.packing import INTERLEAVED, LAYOUTS, TAGGED, pack_documents
from ropeext.errors import RopeextError

VOCAB = 120
ANCHOR = 1
# short documents are cut too, so that the small test windows hold documents split by gaps
INTERLEAVE = {"min_tokens": 6, "max_tokens": 60, "chunks": [2, 3], "cut_range": [0.2, 0.8]}
TAG_TABLE = [[5, 6], [7], [8, 9, 10]]


def _layout_kwargs(layout, n, rng):
    if layout in INTERLEAVED:
        return {"interleave": INTERLEAVE}
    if layout in TAGGED:
        return {"tags": [TAG_TABLE[i] for i in rng.integers(0, len(TAG_TABLE), n)]}
    return {}


def _packed(seed, W=48, n=40, hi=30, layout="anchor", pad_last=True):
    rng = np.random.default_rng(seed)
    docs = [list(rng.integers(3, VOCAB, rng.integers(1, hi))) for _ in range(n)]
    out = pack_documents(docs, W, layout, ANCHOR, seed=seed, pad_last=pad_last, **_layout_kwargs(layout, n, rng))
    return {k: torch.as_tensor(v) for k, v in out.items()}


def _gapped(doc_ids):
    """(row, doc id) of the documents whose tokens in a window are not contiguous."""
    out = []
    for r, row in enumerate(np.asarray(doc_ids)):
        for d in np.unique(row[row > 0]):
            cols = np.flatnonzero(row == d)
            if cols[-1] - cols[0] + 1 != len(cols):
                out.append((r, int(d)))
    return out


def _qkv(B, W, H=4, Hkv=2, D=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, W, D, generator=g, dtype=dtype).requires_grad_(True) for h in (H, Hkv, Hkv)]


def _reference(q, k, v, doc_ids, layout):
    mask = attention_mask_torch(doc_ids.long(), layout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_blockwise_and_varlen_equal_dense_reference(layout, seed):
    batch = _packed(seed, layout=layout)
    doc = batch["doc_ids"]
    B, W = doc.shape
    q, k, v = _qkv(B, W, seed=seed)
    ref = _reference(q, k, v, doc, layout)
    plan = build_plan(doc, layout)
    # the interleaved batches do hold documents split by gaps, and the plan groups them
    assert (len(_gapped(doc)) >= 3) == (layout in INTERLEAVED) == (plan.order is not None)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * grad_out).sum(), [q, k, v])
    for out in (blockwise_attention(q, k, v, plan), varlen_attention(q, k, v, plan, kernel=sdpa_varlen_kernel)):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
        grads = torch.autograd.grad((out * grad_out).sum(), [q, k, v])
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_buckets_pad_little_and_cover_every_segment_once():
    batch = _packed(5, W=512, n=60, hi=300)
    plan = build_plan(batch["doc_ids"], "anchor")
    ext = plan.ext_length
    seen = []
    for width, idx, sel, dest in plan.buckets():
        assert idx.shape[1] == width and len(sel) == len(dest)
        seen.append(dest)
    seen = np.sort(np.concatenate(seen))
    # every token's output comes from exactly one bucket row
    assert np.array_equal(seen, np.arange(plan.batch * plan.window))
    widths = {}
    for width, idx, _, _ in plan.buckets():
        for row in idx:
            widths.setdefault(width, 0)
            widths[width] += 1
    padded = sum(w * n for w, n in widths.items())
    assert padded >= ext.sum() and padded <= ext.sum() * (1 + 1 / 64)
    short = ext[ext < 128]
    assert set(short.tolist()) <= set(widths)  # short segments are never padded
    assert any(e >= 128 for e in ext)  # the batch does exercise the padded range


@pytest.mark.parametrize("layout", ["anchor", "intra_doc"])
def test_blockwise_long_padded_segments_equal_reference(layout):
    batch = _packed(7, W=320, n=30, hi=260, layout=layout)
    doc = batch["doc_ids"]
    B, W = doc.shape
    plan = build_plan(doc, layout)
    # some bucket really carries right padding (kept outputs fewer than its real rows)
    front = 1 if layout == "anchor" else 0
    assert any(len(sel) < idx.size - front * idx.shape[0] for w, idx, sel, _ in plan.buckets() if w > 1)
    q, k, v = _qkv(B, W, H=4, Hkv=1, seed=7)
    ref = _reference(q, k, v, doc, layout)
    out = blockwise_attention(q, k, v, plan)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    grad_out = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad((out * grad_out).sum(), [q, k, v]), torch.autograd.grad((ref * grad_out).sum(), [q, k, v])
    ):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("layout", ["anchor", "full"])
@pytest.mark.parametrize("all_whole", [False, True])
def test_blockwise_whole_row_segments_equal_reference(layout, all_whole):
    # a document longer than the window fills whole rows (behind the anchor), which run without a
    # token gather; mixed rows beside them still go through the gathered buckets
    W = 40
    rng = np.random.default_rng(11)
    docs = [list(rng.integers(3, VOCAB, 4 * W))]
    if not all_whole:
        docs += [list(rng.integers(3, VOCAB, rng.integers(3, 15))) for _ in range(12)]
    cols = pack_documents(docs, W, layout, ANCHOR, seed=0, pad_last=not all_whole)
    doc = torch.as_tensor(cols["doc_ids"])
    if all_whole:
        doc = doc[:3]
    B = doc.shape[0]
    plan = build_plan(doc, layout)
    whole = int((plan.ext_length == W).sum())
    assert whole >= 2 and (whole == B) == all_whole == plan.whole_rows
    q, k, v = _qkv(B, W, seed=11)
    ref = _reference(q, k, v, doc, layout)
    out = blockwise_attention(q, k, v, plan)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    grad_out = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad((out * grad_out).sum(), [q, k, v]), torch.autograd.grad((ref * grad_out).sum(), [q, k, v])
    ):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_plan_groups_a_document_across_gaps():
    doc = np.array([[0, 1, 1, 2, 2, 1, 3, 2, 1, -1, -1], [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]])
    W = doc.shape[1]
    for layout, front in (("intra_doc_interleaved", 0), ("anchor_interleaved", 1)):
        plan = build_plan(doc, layout)
        assert plan.order is not None
        segs = {}
        for s_, n, pre in zip(plan.start, plan.length, plan.prefix):
            own = plan.order[s_ : s_ + n]
            segs.setdefault(int(own[0]) // W, []).append((own % W).tolist())
            assert pre == (front if doc.reshape(-1)[own[0]] > 0 else 0)
        assert sorted(segs[0]) == sorted([[0], [1, 2, 5, 8], [3, 4, 7], [6], [9], [10]])
        assert sorted(segs[1]) == sorted([[0], [1, 2, 3], list(range(4, 11))])
        # the gathered rows (bucket form) and the unpadded stream (varlen form) hold the same tokens
        idx, _, _, sel, dest = plan.varlen()
        assert sorted(dest.tolist()) == list(range(doc.size))
        assert len(idx) == doc.size + int(plan.prefix.sum())  # own tokens + one anchor key per document
    assert build_plan(doc[1:], "anchor_interleaved").order is None  # contiguous: plain runs


@pytest.mark.parametrize("layout", ["intra_doc", "intra_doc_interleaved"])
def test_plan_cost_is_sum_of_squares(layout):
    batch = _packed(3, W=64, layout=layout)
    doc = batch["doc_ids"].numpy()
    plan = build_plan(doc, layout)
    expect = 0
    for row in doc:
        _, counts = np.unique(row[row >= 0], return_counts=True)
        expect += int((counts**2).sum()) + int((row < 0).sum())
    assert plan.sum_sq() == expect
    # anchor: every document segment grows by one (the anchor key), the anchor segment does not
    aplan = build_plan(doc, "anchor" if layout == "intra_doc" else "anchor_interleaved")
    docs_per_row = sum(int(r.max()) for r in doc)
    assert aplan.sum_sq() == expect + sum(
        2 * int(c) + 1 for r in doc for c in np.unique(r[r > 0], return_counts=True)[1]
    )
    assert len(aplan.start) == len(plan.start) and docs_per_row == int(aplan.prefix.sum())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_flex_mask_predicate_matches_mask(layout):
    doc = _packed(4, W=32, layout=layout)["doc_ids"].long()
    idx = torch.arange(32)
    mod = mask_predicate(doc, layout)
    for b in range(doc.shape[0]):
        got = mod(torch.tensor(b), torch.tensor(0), idx[:, None], idx[None, :])
        assert (got.numpy() == attention_mask(doc[b].numpy(), layout)).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_flex_forward_equals_dense_reference_on_cpu(layout):
    """FlexAttention's forward pass runs (unfused) on CPU: its BlockMask from doc_ids gives the
    dense reference's output in float64. (Its backward pass needs a GPU: test_gpu_flex_*.)"""
    import warnings

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    batch = _packed(8, W=48, layout=layout)
    doc = batch["doc_ids"].long()
    B, W = doc.shape
    q, k, v = (t.detach() for t in _qkv(B, W, H=2, Hkv=2, seed=8))
    block = create_block_mask(mask_predicate(doc, layout), B, None, W, W, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "called without torch.compile": the unfused path is the point
        out = flex_attention(q, k, v, block_mask=block).transpose(1, 2)
    torch.testing.assert_close(out, _reference(q, k, v, doc, layout), atol=1e-12, rtol=1e-12)


# --- through a transformers model -----------------------------------------------------------------


def _model(dtype=torch.float32, kv_heads=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        intermediate_size=96,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        use_cache=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(dtype)


def _logits_and_grads(model, batch, layout, backend):
    set_backend(model, backend)
    model.zero_grad()
    out = model(**model_inputs(batch, layout, backend)).logits
    labels = batch["labels"].long()
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_model_blockwise_equals_sdpa_mask(layout):
    model = _model()
    model.train()
    batch = _packed(11, layout=layout)
    ref, ref_g = _logits_and_grads(model, batch, layout, "sdpa_mask")
    out, g = _logits_and_grads(model, batch, layout, "blockwise")
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    for name in ref_g:
        torch.testing.assert_close(g[name], ref_g[name], atol=2e-5, rtol=1e-3, msg=name)
    assert model.config._attn_implementation == "ropeext_blockwise"


def test_sdpa_mask_full_uses_causal_fast_path():
    batch = _packed(12, layout="full", pad_last=False)
    kw = model_inputs(batch, "full", "sdpa_mask")
    assert kw["attention_mask"] is None and kw["use_cache"] is False
    model = _model()
    set_backend(model, "sdpa_mask")
    fast = model(**kw).logits
    dense = model(**{**kw, "attention_mask": attention_mask_torch(batch["doc_ids"].long(), "full")}).logits
    torch.testing.assert_close(fast, dense, atol=1e-5, rtol=1e-5)
    padded = _packed(12, layout="full", pad_last=True, n=41)
    assert (padded["doc_ids"] == -1).any()
    mask = model_inputs(padded, "full", "sdpa_mask")["attention_mask"]  # padding needs the dense mask
    assert mask.dtype == torch.bool and mask.shape == (len(padded["doc_ids"]), 1, 48, 48)


def test_intra_doc_reset_matches_transformers_packed_mask():
    """transformers builds its own per-sequence mask from restarting position ids (attention_mask=None)."""
    model = _model()
    set_backend(model, "sdpa_mask")
    batch = _packed(13, layout="intra_doc_reset", pad_last=True)
    ours = model(**model_inputs(batch, "intra_doc_reset", "sdpa_mask")).logits
    theirs = model(
        input_ids=batch["input_ids"].long(), position_ids=batch["position_ids"].long(), use_cache=False
    ).logits
    real = batch["doc_ids"] >= 0  # transformers lets padding see padding; real tokens must agree
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)
    set_backend(model, "blockwise")
    block = model(**model_inputs(batch, "intra_doc_reset", "blockwise")).logits
    torch.testing.assert_close(block[real], theirs[real], atol=1e-5, rtol=1e-5)


def test_rope_relative_property_intra_doc_vs_reset():
    """In float64, continuous and restarted positions give the same logits under per-document masks
    (up to transformers computing the rotary angles in float32), unlike full attention."""
    model = _model(torch.float64)
    set_backend(model, "blockwise")
    a = _packed(14, layout="intra_doc")
    b = _packed(14, layout="intra_doc_reset")
    assert (a["input_ids"] == b["input_ids"]).all() and not (a["position_ids"] == b["position_ids"]).all()
    la = model(**model_inputs(a, "intra_doc", "blockwise")).logits
    lb = model(**model_inputs(b, "intra_doc_reset", "blockwise")).logits
    torch.testing.assert_close(la, lb, atol=1e-6, rtol=1e-5)
    lf = model(**model_inputs(a, "full", "blockwise")).logits
    assert (lf - la).abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["sdpa_mask", "blockwise"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_leakage_between_documents(backend, layout):
    model = _model()
    set_backend(model, backend)
    batch = _packed(15, layout=layout, W=40)
    doc = batch["doc_ids"]
    if layout in INTERLEAVED:  # change a document that other documents' chunks interrupt
        row, k = _gapped(doc)[0]
        assert k < int(doc[row].max())
    else:
        row = int(torch.argmax((doc.max(dim=1).values >= 3).int()))
        k = 2
    changed = {**batch, "input_ids": batch["input_ids"].clone()}
    sel = doc[row] == k
    changed["input_ids"][row, sel] = (changed["input_ids"][row, sel] + 7) % (VOCAB - 3) + 3
    with torch.no_grad():
        before = model(**model_inputs(batch, layout, backend)).logits
        after = model(**model_inputs(changed, layout, backend)).logits
    diff = (before - after).abs().amax(-1)
    outside = torch.ones_like(doc, dtype=torch.bool)
    outside[row, sel] = False
    assert diff[row, sel].max() > 1e-3  # the changed document itself does change
    if layout == "full":  # full attention: later documents see document k
        later = doc[row] > k
        assert diff[row, later].max() > 1e-3
        assert diff[row, doc[row] < k].max() == 0
    else:
        assert diff[outside].max() == 0
        # the anchor's own state (column 0) is identical whatever the documents hold
        assert diff[:, 0].max() == 0


@pytest.mark.parametrize("backend", ["sdpa_mask", "blockwise"])
@pytest.mark.parametrize("layout", INTERLEAVED)
def test_interleaved_chunk_sees_its_earlier_chunk_across_the_gap(backend, layout):
    model = _model()
    set_backend(model, backend)
    batch = _packed(15, layout=layout, W=40)
    doc = batch["doc_ids"]
    row, k = _gapped(doc)[0]
    cols = torch.nonzero(doc[row] == k).flatten()
    gap = int(torch.nonzero(cols.diff() > 1).flatten()[0])
    first, later = cols[: gap + 1], cols[gap + 1 :]
    between = torch.arange(int(first[-1]) + 1, int(later[0]))
    changed = {**batch, "input_ids": batch["input_ids"].clone()}
    changed["input_ids"][row, first] = (changed["input_ids"][row, first] + 7) % (VOCAB - 3) + 3
    with torch.no_grad():
        before = model(**model_inputs(batch, layout, backend)).logits
        after = model(**model_inputs(changed, layout, backend)).logits
    diff = (before - after).abs().amax(-1)
    assert diff[row, later].min() > 1e-4  # every later token of the document sees the first chunk
    assert diff[row, between].max() == 0  # the documents in the gap do not
    assert (batch["position_ids"][row] == torch.arange(40)).all()  # positions stay the columns


def test_gqa_and_bf16_blockwise():
    model = _model(kv_heads=1)
    batch = _packed(16, layout="anchor")
    set_backend(model, "sdpa_mask")
    ref = model(**model_inputs(batch, "anchor", "sdpa_mask")).logits
    set_backend(model, "blockwise")
    out = model(**model_inputs(batch, "anchor", "blockwise")).logits
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    model = model.to(torch.bfloat16)
    out16 = model(**model_inputs(batch, "anchor", "blockwise")).logits
    assert torch.isfinite(out16).all() and (out16.float() - ref).abs().mean() < 0.05


def test_fallback_without_packing_info_is_plain_sdpa():
    model = _model()
    ids = torch.randint(3, VOCAB, (2, 24))
    set_backend(model, "sdpa_mask")
    ref = model(input_ids=ids).logits
    set_backend(model, "blockwise")
    torch.testing.assert_close(model(input_ids=ids).logits, ref, atol=1e-6, rtol=1e-6)


def test_use_cache_is_enforced():
    model = _model()
    set_backend(model, "blockwise")
    batch = _packed(17, layout="anchor")
    kw = model_inputs(batch, "anchor", "blockwise")
    assert kw["use_cache"] is False and model.config.use_cache is False
    with pytest.raises(RopeextError, match="use_cache=False"):
        model(**{**kw, "use_cache": True})


def test_bad_backend_and_batches():
    model = _model()
    batch = _packed(18)
    with pytest.raises(RopeextError, match="unknown attention backend 'magic'"):
        set_backend(model, "magic")
    with pytest.raises(RopeextError, match="unknown attention backend"):
        model_inputs(batch, "anchor", "magic")
    with pytest.raises(RopeextError, match="unknown packing layout"):
        model_inputs(batch, "diagonal", "blockwise")
    with pytest.raises(RopeextError, match="doc_ids"):
        model_inputs({"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}, "anchor", "blockwise")
    shifted = {**batch, "doc_ids": batch["doc_ids"] + 1}
    for layout in ("anchor", "anchor_tag", "anchor_interleaved"):
        with pytest.raises(RopeextError, match=f"the {layout} layout needs the anchor"):
            model_inputs(shifted, layout, "blockwise")
    assert set(BACKENDS) == {"sdpa_mask", "blockwise", "flex", "flash_varlen"}


def test_flex_refuses_cpu_training():
    model = _model()
    model.train()
    with pytest.raises(RopeextError, match="flex.*CPU"):
        set_backend(model, "flex")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_flash_varlen_needs_flash_attn_and_gpu():
    with pytest.raises(RopeextError, match="flash"):
        set_backend(_model(), "flash_varlen")


# --- GPU ------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (FlexAttention/flash-attn)")


def _flash_available():
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@needs_cuda
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gpu_flex_equals_reference(layout):
    model = _model().cuda().train()
    batch = {k: v.cuda() for k, v in _packed(21, W=256, n=60, hi=90, layout=layout).items()}
    ref, ref_g = _logits_and_grads(model, batch, layout, "sdpa_mask")
    for backend in ("flex", "blockwise"):
        out, g = _logits_and_grads(model, batch, layout, backend)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-3)
        for name in ref_g:
            torch.testing.assert_close(g[name], ref_g[name], atol=1e-4, rtol=1e-2, msg=name)


@pytest.mark.skipif(not _flash_available(), reason="needs flash-attn and a CUDA GPU")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gpu_flash_varlen_equals_reference(layout):
    model = _model(torch.bfloat16).cuda().train()
    batch = {k: v.cuda() for k, v in _packed(22, W=256, n=60, hi=90, layout=layout).items()}
    ref, _ = _logits_and_grads(model, batch, layout, "sdpa_mask")
    out, _ = _logits_and_grads(model, batch, layout, "flash_varlen")
    assert (out.float() - ref.float()).abs().mean() < 0.02


def test_doc_ids_without_a_plan_build_it_once_per_forward(monkeypatch):
    import ropeext.attention as attn

    calls = []
    real = attn.build_plan

    def counting(doc_ids, layout):
        calls.append(layout)
        return real(doc_ids, layout)

    monkeypatch.setattr(attn, "build_plan", counting)
    attn._PLAN_CACHE.clear()
    doc_ids = torch.tensor([[0, 1, 1, 2, 2, 2, 2, 2]])
    first = attn._cached_plan(doc_ids, "anchor")
    assert attn._cached_plan(doc_ids, "anchor") is first  # a second layer reuses it
    assert len(calls) == 1
    attn._cached_plan(torch.tensor([[0, 1, 1, 1, 2, 2, 2, 2]]), "anchor")  # another batch: rebuilt
    assert len(calls) == 2


def test_varlen_hands_the_kernel_one_dtype_under_bf16_autocast():
    """Under bf16-mixed the rotary embedding hands attention fp32 queries/keys beside a bf16 value; flash-attn
    has no fp32 kernel, so the varlen path casts all three to autocast's dtype before calling it."""
    ids = _packed(0, W=32, n=12, hi=10, layout="anchor")["doc_ids"]
    plan = build_plan(ids, "anchor")
    q, k, v = _qkv(ids.shape[0], ids.shape[1], dtype=torch.float32)
    seen = []

    def kernel(qf, kf, vf, *args, **kwargs):
        seen.append((qf.dtype, kf.dtype, vf.dtype))
        return sdpa_varlen_kernel(qf, kf, vf, *args, **kwargs)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = varlen_attention(q, k, v.to(torch.bfloat16), plan, kernel=kernel)
    assert seen == [(torch.bfloat16,) * 3] and out.dtype == torch.bfloat16
    ref = varlen_attention(q, k, v, plan, kernel=sdpa_varlen_kernel)
    assert torch.allclose(out.float(), ref, atol=3e-2)
    seen.clear()
    varlen_attention(q, k, v, plan, kernel=kernel)  # no autocast, one dtype: left alone
    assert seen == [(torch.float32,) * 3]
