"""Evaluation forward passes in bf16 against fp32 (``eval.dtype``), on a model of SmolLM2-135M's layer shape.

The model is random, built with ``ropeext.modeling.build_tiny_llama``: SmolLM2-135M's hidden size 576, 9
heads of 64, MLP 1536 and 49k tied vocabulary, but 4 layers instead of 30 (and 9 KV heads instead of 3)
so that the run stays under a minute on 2 cores; the per-layer cost ratio is what carries over. Each
length runs the perplexity evaluation's forward (``ropeext.eval.ppl.perplexity_by_length``: one window,
the last 256 positions' logits) in fp32 and in bf16, after one warm-up pass of each, best of
``--repeats`` (default 1); the baseline is fp32 in the same run. The table gives seconds, the bf16 /
fp32 time ratio (below 1: bf16 is faster) and the relative gap between the two perplexities. The first
line says what ``eval.dtype: auto`` picks on this machine: bf16 pays off only where the CPU has AMX-BF16
/ AVX512-BF16 (or on a CUDA GPU); an AVX2-only CPU emulates it and runs slower than fp32.

    .venv/bin/python benchmarks/bench_eval_dtype.py [--quick] [--layers 4] [--lengths 512,1024,2048]
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ropeext.eval.ppl import perplexity_by_length  # noqa: E402
from ropeext.modeling import build_tiny_llama  # noqa: E402
from ropeext.runtime import eval_precision  # noqa: E402


def _best(model, doc: np.ndarray, length: int, stride: int, repeats: int) -> tuple[float, float]:
    """Best seconds of ``repeats`` perplexity evaluations of one window, and its perplexity."""
    times, ppl = [], math.nan
    for _ in range(repeats):
        start = time.perf_counter()
        out = perplexity_by_length(model, [doc], [length], stride, max_tokens=stride, progress=False)
        times.append(time.perf_counter() - start)
        ppl = out["ppl"][str(length)]
    return min(times), ppl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lengths 512 and 1024")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (SmolLM2-135M has 30; default 4)")
    parser.add_argument("--lengths", default=None, help="comma-separated window lengths (default 512,1024,2048)")
    parser.add_argument("--stride", type=int, default=256, help="scored positions per window (default 256)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs (default 1)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lengths = (
        [int(x) for x in args.lengths.split(",")]
        if args.lengths
        else ([512, 1024] if args.quick else [512, 1024, 2048])
    )
    auto = eval_precision("auto", "cpu")
    print(f"eval.dtype auto on this CPU: {auto['dtype']} ({auto['reason']}); {args.threads} threads")
    model = build_tiny_llama(
        49152,
        max(lengths),
        hidden_size=576,
        num_hidden_layers=args.layers,
        num_attention_heads=9,
        intermediate_size=1536,
    ).eval()
    half = copy.deepcopy(model).to(torch.bfloat16)
    print(f"SmolLM2-135M layer shape, {args.layers} layers, random weights; one window, last {args.stride} logits")
    print(f"{'tokens':>7} {'fp32 s':>8} {'bf16 s':>8} {'bf16/fp32':>10} {'ppl gap':>9}")
    warm = np.random.default_rng(0).integers(3, 49152, size=129)
    for m in (model, half):  # warm-up: first-call allocations and kernel selection
        _best(m, warm, 128, 64, 1)
    for length in lengths:
        doc = np.random.default_rng(length).integers(3, 49152, size=length + 1)
        full_s, full_ppl = _best(model, doc, length, args.stride, args.repeats)
        half_s, half_ppl = _best(half, doc, length, args.stride, args.repeats)
        gap = abs(half_ppl / full_ppl - 1)
        print(f"{length:>7} {full_s:>8.2f} {half_s:>8.2f} {half_s / full_s:>10.2f} {gap:>9.1e}")


if __name__ == "__main__":
    main()
