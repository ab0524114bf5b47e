import math

import numpy as np
import pytest
import torch

from ropeext.errors import RopeextError
from ropeext.eval.ppl import perplexity_by_length, select_windows, window_ends


def test_windows_score_the_same_tokens_at_every_length():
    docs = [np.arange(100), np.arange(30)]
    picked = select_windows(docs, [8, 16, 32], stride=8, max_tokens=10_000)
    assert all(d == 0 for d, _ in picked)  # the 30-token doc is too short for 32 + 1
    assert [e for _, e in picked] == window_ends(100, 32, 8) == list(range(31, 99, 8))


def test_no_long_document_is_a_clear_error():
    with pytest.raises(RopeextError, match="longer than the largest context length 64"):
        select_windows([np.arange(20)], [16, 64], 16, 100)


def test_perplexity_matches_a_per_window_loop(tiny_model_dir):
    from ropeext.modeling import load_causal_lm

    model = load_causal_lm(tiny_model_dir)
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 300, size=n) for n in (90, 70)]
    lengths, stride = [16, 32], 8
    got = perplexity_by_length(model, docs, lengths, stride, max_tokens=10_000, tokens_per_batch=64, progress=False)
    # brute force: one window at a time, score the last `stride` next-token predictions
    for C in lengths:
        nll, n = 0.0, 0
        for doc in docs:
            for e in range(max(lengths) - 1, len(doc) - 1, stride):
                x = torch.tensor(doc[e - C + 1 : e + 1]).unsqueeze(0)
                with torch.no_grad():
                    logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
                for i in range(C - stride, C):
                    nll -= float(logp[i, doc[e - C + 2 + i]])
                    n += 1
        assert got["ppl"][str(C)] == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert got["tokens_scored"] == n


def test_windows_per_document_spreads_the_budget_over_documents():
    docs = [np.arange(200), np.arange(100), np.arange(90)]
    uncapped = select_windows(docs, [16, 32], stride=16, max_tokens=48)
    assert {d for d, _ in uncapped} == {0}  # the first long document takes the whole budget
    capped = select_windows(docs, [16, 32], stride=16, max_tokens=48, per_document=1)
    assert capped == [(0, 31), (1, 31), (2, 31)]
    assert select_windows(docs, [16, 32], stride=16, max_tokens=10_000, per_document=2) == [
        (0, 31),
        (0, 47),
        (1, 31),
        (1, 47),
        (2, 31),
        (2, 47),
    ]
