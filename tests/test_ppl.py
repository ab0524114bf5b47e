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
        nll, n, windows = 0.0, 0, []
        for doc in docs:
            for e in range(max(lengths) - 1, len(doc) - 1, stride):
                x = torch.tensor(doc[e - C + 1 : e + 1]).unsqueeze(0)
                with torch.no_grad():
                    logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
                window = 0.0
                for i in range(C - stride, C):
                    window -= float(logp[i, doc[e - C + 2 + i]])
                    n += 1
                windows.append(window)
                nll += window
        assert got["ppl"][str(C)] == pytest.approx(math.exp(nll / n), rel=1e-4)
        assert got["window_nll"][str(C)] == pytest.approx(windows, rel=1e-4)  # each window's own sum
    assert got["tokens_scored"] == n
    assert got["window_tokens"] == [stride] * len(windows) and sum(got["window_tokens"]) == n
    assert got["window_documents"] == [0] * len(range(31, 89, 8)) + [1] * len(range(31, 69, 8))


def test_the_metrics_file_holds_each_window_and_its_interval_holds_the_perplexity(tiny_model_dir, tmp_path):
    """`ropeext eval ppl` on the tiny model: metrics.json keeps the per-window sums a bootstrap over windows needs."""
    import json

    from ropeext.cli import main
    from ropeext.data.tokens import write_tokens
    from ropeext.report.intervals import ppl_bootstrap
    from ropeext.report.measures import ppl_cells

    rng = np.random.default_rng(1)
    write_tokens(tmp_path / "test.parquet", [rng.integers(3, 300, size=n).tolist() for n in (120, 100, 90)])
    out = tmp_path / "eval"
    args = ["eval", "ppl", "--model", str(tiny_model_dir), "--tokens", str(tmp_path / "test.parquet")]
    args += ["--lengths", "16,32", "--stride", "8", "--max-tokens", "1000", "--output-dir", str(out), "--no-mlflow"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["windows"] == len(m["window_tokens"]) == len(m["window_documents"]) >= 20
    for C in ("16", "32"):
        assert len(m["window_nll"][C]) == m["windows"]
        assert math.exp(sum(m["window_nll"][C]) / sum(m["window_tokens"])) == pytest.approx(m["ppl"][C], rel=1e-9)
        cell = ppl_cells(m)[int(C)]
        assert cell.n == m["windows"] and cell.unit == "windows" and cell.method == "bootstrap"
        assert cell.lo < m["ppl"][C] < cell.hi
        assert (cell.lo, cell.hi) == ppl_bootstrap(m["window_nll"][C], m["window_tokens"])


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
