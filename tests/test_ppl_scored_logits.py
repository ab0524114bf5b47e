"""Perplexity computes only the scored positions' logits and gets the same NLL as from full logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ropeext.eval.ppl import accepts_logits_to_keep, perplexity_by_length, scored_logits


def _logit_shapes(model) -> list:
    """Record the shape of every logits tensor the model returns."""
    seen = []
    model.register_forward_hook(lambda mod, args, out: seen.append(tuple(out.logits.shape)))
    return seen


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_scored_logits_only_same_nll_as_full_logits(which, request):
    from ropeext.modeling import load_causal_lm

    model_dir = request.getfixturevalue("tiny_model_dir" if which == "tiny" else "smollm2_2layer_dir")
    model = load_causal_lm(model_dir).eval()
    vocab = model.config.vocab_size
    assert accepts_logits_to_keep(model)
    rng = np.random.default_rng(1)
    # 5 windows over 2 documents: a full and a partial batch at length 32 (4 windows a batch), 3 batches at 64
    docs = [rng.integers(3, vocab, size=n) for n in (110, 90)]
    lengths, stride = [32, 64], 16
    seen = _logit_shapes(model)
    kept = perplexity_by_length(model, docs, lengths, stride, max_tokens=10_000, tokens_per_batch=128, progress=False)
    assert seen and all(shape[1] == stride and shape[2] == vocab for shape in seen)  # only scored positions
    seen.clear()
    full = perplexity_by_length(
        model, docs, lengths, stride, max_tokens=10_000, tokens_per_batch=128, progress=False, slice_only=False
    )
    assert {shape[1] for shape in seen} == set(lengths)  # the old path: every position's logits
    for C in lengths:
        assert kept["nll"][str(C)] == pytest.approx(full["nll"][str(C)], rel=1e-6, abs=1e-7)
    assert kept["tokens_scored"] == full["tokens_scored"] == 5 * stride


def test_scored_logits_equal_the_tail_of_full_logits(tiny_model_dir):
    from ropeext.modeling import load_causal_lm

    model = load_causal_lm(tiny_model_dir).eval()
    ids = torch.randint(3, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(40).unsqueeze(0).expand(2, -1)
    with torch.no_grad():
        tail = scored_logits(model, ids, pos, 7)
        ref = model(input_ids=ids, position_ids=pos).logits[:, -7:]
    assert tail.shape == (2, 7, model.config.vocab_size) and tail.dtype == torch.float32
    torch.testing.assert_close(tail, ref.float(), rtol=0, atol=1e-6)
