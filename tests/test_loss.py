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

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      tie_word_embeddings=tied, use_cache=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).double()


def _batch(b=2, w=37, vocab=97, seed=0):
    """A packed batch as ropeext.data.packing lays it out: labels are the next token, -100 where ignored."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(b, w + 1))
    labels = ids[:, 1:].copy()
    labels[rng.random(labels.shape) < 0.2] = -100
    inputs = {"input_ids": torch.from_numpy(ids[:, :-1]), "position_ids": torch.arange(w).repeat(b, 1),
              "use_cache": False}
    return inputs, torch.from_numpy(labels)


def _reference(model, inputs, labels):
    """The training loop's loss: summed cross-entropy over the full logits (here fp64), -100 ignored."""
    logits = model(**inputs).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100, reduction="sum")


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
    ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                          reduction="sum")
    assert logits.dtype == torch.bfloat16 and got.dtype == torch.float32
    assert torch.allclose(got, ref, rtol=1e-5)


def test_softcapped_head_and_module_wrapper():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 50, bias=True).double()
    hidden = torch.randn(3, 11, 8, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (3, 11))
    labels[0, :4] = -100
    ref = F.cross_entropy((torch.tanh(head(hidden) / 5.0) * 5.0).reshape(-1, 50), labels.reshape(-1),
                          ignore_index=-100, reduction="sum")
    got, count = head_loss(hidden, head, labels, chunk_tokens=4, softcap=5.0)
    assert torch.allclose(got, ref, rtol=1e-12) and count == 29
    g_ref = torch.autograd.grad(ref, [hidden, head.weight, head.bias])
    g_got = torch.autograd.grad(head_loss(hidden, head, labels, chunk_tokens=4, softcap=5.0)[0],
                                [hidden, head.weight, head.bias])
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
        head_loss(torch.zeros(1, 3, 4), head, torch.zeros(1, 4, dtype=torch.long))
    model = _llama(True)
    model.config.logit_scale = 0.5
    inputs, labels = _batch()
    with pytest.raises(RopeextError, match="logit_scale"):
        chunked_causal_lm_loss(model, inputs, labels)
