"""Training throughput and model-FLOPs utilisation of the fine-tuning loop: ``full`` vs ``anchor``.

Model: the embedded default's tiny Llama (hidden 128, 4 layers, 4 heads of 32, vocab 2048, tied
embeddings), window 1024, fp32 and bf16-mixed, through ``ropeext.train.loop.train`` itself (data
order, loss, clipping, AdamW included).

Document-length mix: the standard-library corpus (whole files plus top-level definitions as
documents of their own), tokenized with a 2048-token byte-level BPE trained on it
(``ropeext.data.tokenizer.train_bpe``, via bench_packing.stdlib_documents), packed at 1024 tokens
with each layout. ``--quick`` uses the first 150 files.

FLOPs per step (benchmarks/flops.py, shared with gpu_check.py): 6 x parameters x tokens for the dense
part (embedding lookups excluded, tied output projection included) plus attention 12 x layers x hidden x
(attended query-key pairs), where the pairs are those the layout allows (causal W(W+1)/2 per window for
``full``; per-document causal blocks plus the anchor column for ``anchor``). MFU divides achieved FLOP/s by the peak
measured in the same run with a large fp32 matrix product on the same threads.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--steps N] [--threads T]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_packing import stdlib_documents  # noqa: E402
from flops import attended_pairs, count_params, step_flops  # noqa: E402

from ropeext.data.packing import pack_flat  # noqa: E402
from ropeext.modeling import build_tiny_llama  # noqa: E402
from ropeext.train.data import PackedData  # noqa: E402
from ropeext.train.loop import TrainSettings, train  # noqa: E402

W = 1024


def peak_flops(reps: int = 5) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * 2048**3 * reps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (3 if args.quick else 8)

    flat, offsets, desc, _, _ = stdlib_documents(2048, max_files=150 if args.quick else None)
    print(
        f"corpus: {desc['documents']} documents, {desc['tokens']} tokens (median {desc['median']}, "
        f"p90 {desc['p90']}, max {desc['max']}); window {W}, batch {args.batch}, {steps} timed steps"
    )
    packed = {}
    for layout in ("full", "anchor"):
        cols, _ = pack_flat(flat, offsets, W, layout, anchor_id=1, seed=0)
        packed[layout] = PackedData({k: np.asarray(v, dtype=np.int64) for k, v in cols.items()})
    peak = peak_flops()

    rows = []
    for precision in ("fp32", "bf16-mixed"):
        for backend in ("sdpa_mask", "blockwise"):
            for layout in ("full", "anchor"):
                data = packed[layout]
                model = build_tiny_llama(2048, W)
                n_params = count_params(model)
                s = TrainSettings(
                    steps=steps + 1,
                    batch_size=args.batch,
                    lr=1e-4,
                    warmup_steps=0,
                    precision=precision,
                    layout=layout,
                    backend=backend,
                    seed=0,
                )
                times = []
                t = [time.perf_counter()]

                def tick(done):
                    now = time.perf_counter()
                    times.append(now - t[0])
                    t[0] = now

                train(model, data, s, progress=False, on_step=tick)
                sec = float(np.mean(times[1:]))  # first step is warm-up
                idx = np.arange(min(len(data.arrays["doc_ids"]), 256))
                pairs = float(attended_pairs(data.arrays["doc_ids"][idx], layout).mean())
                cfg = model.config
                flops, attn = step_flops(
                    n_params, cfg.num_hidden_layers, cfg.hidden_size, args.batch * W, args.batch * pairs
                )
                rows.append(
                    {
                        "precision": precision,
                        "backend": backend,
                        "layout": layout,
                        "tok_s": args.batch * W / sec,
                        "mfu": flops / sec / peak,
                        "attn_share": attn / flops,
                        "pairs": pairs,
                        "flops": flops,
                    }
                )

    print(f"peak fp32 GEMM on {args.threads} threads: {peak / 1e9:.1f} GFLOP/s")
    print(
        f"{'precision':<11} {'backend':<10} {'layout':<7} {'tokens/s':>9} {'MFU':>6} {'attn FLOP share':>15} "
        f"{'speed vs full':>13} {'FLOP ratio vs full':>18}"
    )
    for r in rows:
        ref = next(
            x
            for x in rows
            if x["precision"] == r["precision"] and x["backend"] == r["backend"] and x["layout"] == "full"
        )
        print(
            f"{r['precision']:<11} {r['backend']:<10} {r['layout']:<7} {r['tok_s']:>9.0f} {r['mfu']:>6.1%} "
            f"{r['attn_share']:>15.1%} {r['tok_s'] / ref['tok_s']:>12.2f}x {r['flops'] / ref['flops']:>18.2f}"
        )
    print("speed vs full > 1 means faster; the ideal speed-up is 1 / (FLOP ratio vs full).")


if __name__ == "__main__":
    main()
