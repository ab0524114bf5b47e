"""Time and peak memory of the BF16 shift-deviation computation: chunked vs all at once.

The chunked path (ropeext.analysis.deviation.layer_deviation) compares one layer at a time, one head
and one block of query rows at a time. The baseline builds every layer's and head's T x T
attention for both shifts at once and reduces it. Each measurement runs in a fresh process so that
its peak resident memory (ru_maxrss) is its own; the table gives the increase over the inputs.

    .venv/bin/python benchmarks/bench_bf16_analysis.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _inputs(layers, heads, length, dim):
    import torch

    g = torch.Generator().manual_seed(0)
    make = lambda: torch.randn(layers, heads, length, dim, generator=g).to(torch.bfloat16)  # noqa: E731
    return make(), make(), make(), make()


def _naive(q1, k1, q2, k2, scale):
    """All layers and heads, full T x T, at once (fa2-like numerics: fp32 logits and softmax)."""
    import torch

    length = q1.shape[2]
    mask = torch.ones(length, length, dtype=torch.bool).tril()
    p1 = torch.softmax((q1.float() @ k1.float().transpose(-1, -2) * scale).masked_fill(~mask, float("-inf")), -1)
    p2 = torch.softmax((q2.float() @ k2.float().transpose(-1, -2) * scale).masked_fill(~mask, float("-inf")), -1)
    diff = (p1 - p2).abs()
    positions = torch.arange(length, dtype=torch.float32)
    column = diff.sum(dim=-2) / (length - positions)
    row = diff.sum(dim=-1) / (positions + 1)
    return float(column.sum()), float(row.sum())


def _chunked(q1, k1, q2, k2, scale, chunk):
    from ropeext.analysis.deviation import layer_deviation

    col = row = 0.0
    for layer in range(q1.shape[0]):
        dev = layer_deviation(q1[layer], k1[layer], q2[layer], k2[layer], scale=scale, chunk_size=chunk)
        col += dev.column_total
        row += dev.row_total
    return col, row


def _child(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    q1, k1, q2, k2 = _inputs(spec["layers"], spec["heads"], spec["length"], spec["dim"])
    scale = spec["dim"] ** -0.5
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if spec["method"] == "naive":
        col, row = _naive(q1, k1, q2, k2, scale)
    else:
        col, row = _chunked(q1, k1, q2, k2, scale, spec["chunk"])
    seconds = time.perf_counter() - start
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib, "D_col": col, "D_row": row}))


def _measure(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute on 2 cores)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return

    layers, heads, dim = (4, 4, 64)
    lengths = [512, 1024] if args.quick else [1024, 2048]
    chunks = [128, 512]
    print(f"layers {layers}, heads {heads}, head dim {dim}, bf16 q/k, fa2-like numerics, {args.threads} threads")
    print(f"{'T':>6} {'method':>14} {'seconds':>9} {'peak MiB':>9} {'time x':>7} {'mem x':>7} {'D (columns)':>12}")
    for length in lengths:
        common = {"layers": layers, "heads": heads, "dim": dim, "length": length, "threads": args.threads}
        base = _measure({**common, "method": "naive"})
        rows = [("naive", base)] + [
            (f"chunked {c}", _measure({**common, "method": "chunked", "chunk": c})) for c in chunks
        ]
        for name, r in rows:
            mem_ratio = r["peak_mib"] / base["peak_mib"] if base["peak_mib"] > 0 else float("nan")
            print(
                f"{length:>6} {name:>14} {r['seconds']:>9.3f} {r['peak_mib']:>9.1f} "
                f"{r['seconds'] / base['seconds']:>7.2f} {mem_ratio:>7.3f} {r['D_col']:>12.6g}"
            )
            rel = abs(r["D_col"] - base["D_col"]) / max(abs(base["D_col"]), 1e-30)
            if rel > 1e-3:
                print(f"       warning: D differs from the baseline by {rel:.2e} (relative)")


if __name__ == "__main__":
    main()
