"""Forward+backward time of the packed attention backends against full causal SDPA.

Document-length mix: the embedded default corpus (standard library files plus top-level
definitions, tokenized with a 2048-token byte-level BPE trained on them; see bench_packing.py),
packed with the ``anchor`` layout at each window W. The measured op is one attention call with
the demo model's head layout (4 heads of 32) on a batch of windows of about 16k tokens (at least
4 windows).

Columns: ``flop ratio`` is the sum of squared document lengths over W^2 (per window, averaged);
``plan ratio`` is the cost the blockwise plan really runs (anchor key and bucket padding
included) over the causal W^2. The time ratio of ``blockwise`` over causal ``sdpa`` should
approach them as W grows. ``sdpa+mask`` is the dense-mask reference for the same anchor layout.

    .venv/bin/python benchmarks/bench_attention.py [--quick] [--windows 2048 4096 8192]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_packing import stdlib_documents  # noqa: E402

from ropeext.attention.blockwise import blockwise_attention  # noqa: E402
from ropeext.attention.masks import attention_mask_torch  # noqa: E402
from ropeext.attention.plan import build_plan  # noqa: E402
from ropeext.data.packing import pack_flat, packing_stats  # noqa: E402


def _time(fn, reps):
    fn()  # warm-up
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def fwd_bwd(attn, q, k, v, grad):
    def step():
        for t in (q, k, v):
            t.grad = None
        attn(q, k, v).backward(grad)

    return step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="W = 2048, 4096 only, fewer repeats")
    ap.add_argument("--windows", type=int, nargs="+", default=None)
    ap.add_argument("--tokens", type=int, default=16384, help="tokens per measured batch")
    ap.add_argument(
        "--min-windows",
        type=int,
        default=4,
        help="at least this many windows per batch (at large W a 2-window sample is often all "
        "single-document windows, which says nothing about the packed case)",
    )
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    windows = args.windows or ([2048, 4096] if args.quick else [2048, 4096, 8192])
    reps = 3 if args.quick else 5

    flat, offsets, desc, _, _ = stdlib_documents()
    print(
        f"mix: {desc['documents']} documents (stdlib files + top-level definitions, BPE 2048), "
        f"{desc['tokens']:,} tokens, median {desc['median']}, p90 {desc['p90']}, max {desc['max']}"
    )
    print(
        f"op: attention fwd+bwd, fp32, {args.heads} heads x {args.head_dim}, ~{args.tokens} tokens per batch, "
        f"median of {reps}, torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    head = (
        f"{'W':>6} {'B':>3} {'docs/win':>8} {'flop ratio':>10} {'plan ratio':>10} {'sdpa causal':>11} "
        f"{'sdpa+mask':>10} {'blockwise':>10} {'plan build':>10} {'time ratio':>10}"
    )
    print(head)
    print("-" * len(head))
    g = torch.Generator().manual_seed(0)
    for W in windows:
        cols, info = pack_flat(np.zeros_like(flat), offsets, W, "anchor", 1, seed=0)
        B = min(len(cols["doc_ids"]), max(args.min_windows, args.tokens // W))
        rng = np.random.default_rng(W)
        pick = rng.choice(len(cols["doc_ids"]), size=B, replace=False)
        doc = torch.as_tensor(cols["doc_ids"][pick]).long()
        stats = packing_stats({k: v[pick] for k, v in cols.items()}, per_window=False)["totals"]
        t0 = time.perf_counter()
        plan = build_plan(doc, "anchor")
        plan.buckets()
        t_plan = time.perf_counter() - t0
        H, D = args.heads, args.head_dim
        q, k, v = (torch.randn(B, H, W, D, generator=g).requires_grad_(True) for _ in range(3))
        grad = torch.randn(B, W, H, D, generator=g)
        mask = attention_mask_torch(doc, "anchor")

        def causal(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)

        def dense(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)

        def block(q, k, v):
            return blockwise_attention(q, k, v, plan)

        t_causal = _time(fwd_bwd(causal, q, k, v, grad), reps)
        t_dense = _time(fwd_bwd(dense, q, k, v, grad), reps)
        t_block = _time(fwd_bwd(block, q, k, v, grad), reps)
        widths = sum(len(idx) * w * w for w, idx, _, _ in plan.buckets())
        plan_ratio = widths / (B * W * W)
        print(
            f"{W:>6} {B:>3} {stats['mean_docs_per_window']:>8.1f} {stats['mean_sum_sq_doc_len_over_w2']:>10.3f} "
            f"{plan_ratio:>10.3f} {t_causal * 1e3:>9.1f}ms {t_dense * 1e3:>8.1f}ms {t_block * 1e3:>8.1f}ms "
            f"{t_plan * 1e3:>8.1f}ms {t_block / t_causal:>10.3f}"
        )
    print("\ntime ratio = blockwise / sdpa causal (both fwd+bwd); plan build is paid once per batch, not per layer")


if __name__ == "__main__":
    main()
