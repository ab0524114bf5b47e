"""The chunked causal-LM loss equals the full-logits loss, value and gradients, and never computes
more than one chunk of logits at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ropeext.errors import RopeextError
from ropeext.train import loss as loss_mod
from ropeext.train.loss import ChunkedLossModule, chunked_causal_lm_loss, head_loss


def _llama(tied: bool, vocab=97):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        use_cache=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).double()


def _batch(b=2, w=37, vocab=97, seed=0):
    """A packed batch as ropeext.data.packing lays it out: labels are the next token, -100 where ignored."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(b, w + 1))
    labels = ids[:, 1:].copy()
    labels[rng.random(labels.shape) < 0.2] = -100
    inputs = {
        "input_ids": torch.from_numpy(ids[:, :-1]),
        "position_ids": torch.arange(w).repeat(b, 1),
        "use_cache": False,
    }
    return inputs, torch.from_numpy(labels)


def _reference(model, inputs, labels):
    """The training loop's loss: summed cross-entropy over the full logits (here fp64), -100 ignored."""
    logits = model(**inputs).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("chunk", [5, 30, 74, 1000])
def test_chunked_loss_and_gradients_equal_the_full_logits_loss(tied, chunk):
    model = _llama(tied)
    inputs, labels = _batch()
    ref = _reference(model, inputs, labels)
    ref.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    got, count = chunked_causal_lm_loss(model, inputs, labels, chunk_tokens=chunk)
    got.backward()
    have = _grads(model)
    assert count == int((labels != -100).sum())
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert have.keys() == want.keys()
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    for name in want:
        assert torch.allclose(have[name], want[name], rtol=1e-9, atol=1e-12), name


def test_logits_are_computed_one_chunk_at_a_time_and_recomputed_in_backward(monkeypatch):
    model = _llama(True)
    inputs, labels = _batch(b=2, w=37)
    shapes = []
    original = loss_mod._logits

    def spy(hidden, *args):
        shapes.append(tuple(hidden.shape))
        return original(hidden, *args)

    monkeypatch.setattr(loss_mod, "_logits", spy)
    loss, _ = chunked_causal_lm_loss(model, inputs, labels, chunk_tokens=16)
    chunks = -(-74 // 16)
    assert len(shapes) == chunks and max(s[0] for s in shapes) == 16  # forward: one chunk of logits at a time
    loss.backward()
    assert len(shapes) == 2 * chunks and max(s[0] for s in shapes) == 16  # backward recomputes chunk by chunk
    shapes.clear()
    with torch.no_grad():
        chunked_causal_lm_loss(model, inputs, labels, chunk_tokens=16)
    assert len(shapes) == chunks


def test_bf16_autocast_matches_the_loops_fp32_loss():
    """Under bf16 autocast, logits come out in bf16 and the loss is taken in fp32, as the loop takes it."""
    model = _llama(False).float()
    inputs, labels = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**inputs).logits
        got, _ = chunked_causal_lm_loss(model, inputs, labels, chunk_tokens=16)
    ref = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    assert logits.dtype == torch.bfloat16 and got.dtype == torch.float32
    assert torch.allclose(got, ref, rtol=1e-5)


def test_softcapped_head_and_module_wrapper():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 50, bias=True).double()
    hidden = torch.randn(3, 11, 8, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (3, 11))
    labels[0, :4] = -100
    ref = F.cross_entropy(
        (torch.tanh(head(hidden) / 5.0) * 5.0).reshape(-1, 50), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    got, count = head_loss(hidden, head, labels, chunk_tokens=4, softcap=5.0)
    assert torch.allclose(got, ref, rtol=1e-12) and count == 29
    g_ref = torch.autograd.grad(ref, [hidden, head.weight, head.bias])
    g_got = torch.autograd.grad(
        head_loss(hidden, head, labels, chunk_tokens=4, softcap=5.0)[0], [hidden, head.weight, head.bias]
    )
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)

    model = _llama(True)
    inputs, labels = _batch()
    wrapped = ChunkedLossModule(model, chunk_tokens=10)
    assert torch.allclose(wrapped(labels, **inputs), _reference(model, inputs, labels), rtol=1e-12)


def test_bad_inputs_are_named():
    head = torch.nn.Linear(4, 10)
    with pytest.raises(RopeextError, match="chunk_tokens"):
        head_loss(torch.zeros(1, 3, 4), head, torch.zeros(1, 3, dtype=torch.long), chunk_tokens=0)
    with pytest.raises(RopeextError, match="do not match"):
        head_loss(torch.zeros(1, 3, 4), head, torch.zeros(1, 4, dtype=torch.long), chunk_tokens=2)
    model = _llama(True)
    model.config.logit_scale = 0.5
    inputs, labels = _batch()
    with pytest.raises(RopeextError, match="logit_scale"):
        chunked_causal_lm_loss(model, inputs, labels, chunk_tokens=16)


# --- the chunked loss in the training loop (finetune.loss_chunk_tokens) ------------------------------


def _packed_data(n=8, w=24, vocab=97, seed=3):
    from ropeext.data.packing import pack_flat
    from ropeext.train.data import PackedData

    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, 40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    cols, _ = pack_flat(rng.integers(3, vocab, int(offsets[-1])), offsets, w, "anchor", 1, seed)
    return PackedData({k: v[:n] for k, v in cols.items()})


def _train(precision, chunk, steps=6, ckdir=None, stop_at=None, tied=True, **kw):
    from ropeext.train.loop import TrainSettings, train

    model = _llama(tied).float()
    s = TrainSettings(
        steps=steps,
        batch_size=4,
        grad_accum=2,
        lr=3e-3,
        warmup_steps=2,
        precision=precision,
        layout="anchor",
        loss_chunk_tokens=chunk,
        checkpoint_every=2 if ckdir else 0,
        **kw,
    )

    def stop(done):
        if done == stop_at:
            raise KeyboardInterrupt

    summary = train(model, _packed_data(), s, progress=False, checkpoint_dir=ckdir, on_step=stop)
    return model, summary


@pytest.mark.parametrize("precision,rtol", [("fp32", 1e-5), ("bf16-mixed", 1e-4)])
def test_training_with_the_chunked_loss_follows_the_full_logits_run(precision, rtol):
    """Same losses; in fp32 the same weights too. (Under bf16 autocast the output head's backward runs in
    bf16 per chunk rather than over the whole batch, and Adam turns those roundings of near-zero gradients
    into steps of about lr, so only the losses are compared there.)"""
    plain, ref = _train(precision, None)
    chunked, got = _train(precision, 7)  # 7 does not divide the 2 x 24 positions of a micro-batch
    assert got["settings"]["loss_chunk_tokens"] == 7 and ref["settings"]["loss_chunk_tokens"] is None
    assert got["first_loss"] == pytest.approx(ref["first_loss"], rel=rtol)
    assert got["final_loss"] == pytest.approx(ref["final_loss"], rel=rtol)
    assert got["final_loss"] < got["first_loss"]
    if precision == "fp32":
        initial = _llama(True).float()
        for (name, a), b in zip(plain.named_parameters(), chunked.parameters()):
            # atol: a weight whose gradient is near zero moves by Adam's normalised step, so summation-order
            # noise of the chunked head backward shows there as ~1e-6 (AVX2 kernels; 1e-7 with AVX-512)
            torch.testing.assert_close(b, a, rtol=rtol, atol=1e-5, msg=name)
            assert not torch.allclose(a, initial.get_parameter(name), atol=1e-4), name  # and they did train


def test_training_step_losses_match_step_by_step(monkeypatch):
    """Each step's loss (what the loop logs) agrees between the two losses, not only the summary's."""
    from ropeext.train import loop

    seen = {None: [], 5: []}
    real = loop._step

    def spy(st, data, s, step, observe, ckdir):
        out = real(st, data, s, step, observe, ckdir)
        seen[s.loss_chunk_tokens].append(out[0])
        return out

    monkeypatch.setattr(loop, "_step", spy)
    rows = []
    original = loss_mod._logits

    def logits_spy(hidden, *args):
        rows.append(hidden.shape[0])
        return original(hidden, *args)

    monkeypatch.setattr(loss_mod, "_logits", logits_spy)
    head_calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, a, o: head_calls.append(1) if isinstance(m, torch.nn.Linear) and m.out_features == 97 else None
    )
    try:
        _train("fp32", None, steps=5, tied=False)
        assert len(head_calls) == 10 and not rows  # full logits: the head's forward, once per micro-batch
        head_calls.clear()
        _train("fp32", 5, steps=5, tied=False)
    finally:
        hook.remove()
    assert not head_calls and max(rows) == 5  # chunked: never the head over the sequence, 5 positions at a time
    assert len(rows) == 5 * 2 * 2 * -(-48 // 5)  # steps x micro-batches x (forward + recompute) x chunks
    assert len(seen[5]) == 5
    np.testing.assert_allclose(seen[5], seen[None], rtol=1e-5)
    assert len(set(np.round(seen[None], 4))) == 5  # the loss moves: a real trajectory, not one value


def test_chunked_loss_resume_is_bit_identical(tmp_path):
    ref, ref_summary = _train("fp32", 6, ckdir=tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _train("fp32", 6, ckdir=tmp_path / "run", stop_at=3)  # stopped after step 3: checkpoint 2 on disk
    resumed, summary = _train("fp32", 6, ckdir=tmp_path / "run")
    assert summary["resumed_from_step"] == 2
    assert summary["final_loss"] == ref_summary["final_loss"]
    for (name, a), b in zip(ref.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(RopeextError, match="loss_chunk_tokens: 6 -> None"):  # a different loss is another run
        _train("fp32", None, ckdir=tmp_path / "run", stop_at=3)


def test_loss_chunk_tokens_setting_is_checked_and_read_from_the_config():
    from ropeext.config import validate_config
    from ropeext.train.loop import loss_module
    from ropeext.train.stage import settings_from

    for bad in (0, -3, True, 2.5):  # checked once, in the config: TrainSettings trusts it
        with pytest.raises(RopeextError, match="finetune.loss_chunk_tokens"):
            validate_config({"finetune": {"loss_chunk_tokens": bad}}, source="test")
    config = validate_config({"finetune": {"loss_chunk_tokens": 2048}}, source="test")
    assert config["finetune"]["loss_chunk_tokens"] == 2048 and config["pretrain"]["loss_chunk_tokens"] is None
    s = settings_from(config["finetune"], seed=0, layout="anchor", backend="sdpa_mask", name="finetune")
    assert s.loss_chunk_tokens == 2048
    model = _llama(True)
    wrapped = ChunkedLossModule(model, 16)
    assert loss_module(model, None) is None and loss_module(wrapped, 16) is wrapped
    assert isinstance(loss_module(model, 16), ChunkedLossModule)
    assert wrapped.config is model.config and wrapped._no_split_modules == model._no_split_modules

    class Wrapper(torch.nn.Module):  # as DDP holds a module
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert loss_module(Wrapper(wrapped), 16).module is wrapped
    with pytest.raises(RopeextError, match="ChunkedLossModule"):
        loss_module(Wrapper(model), 16)
