"""Peak memory of one training step's loss: full-sequence logits vs the chunked loss (ropeext.train.loss).

A one-layer Llama (hidden 64, tied embeddings) with a realistic 32k vocabulary, batch 1, fp32 on
CPU: the logits dominate, as they do at 64k tokens for a real model. Each (length, method) runs in
its own process; the number reported is the peak resident memory above the memory held before the
step (the model), from ``ru_maxrss``. Two tables:

- loss step: forward + backward of the loss alone;
- training step: one optimizer step of the training loop itself (``ropeext.train.loop.train``:
  data, loss, backward, clipping, AdamW; its state included), with ``loss_chunk_tokens`` null (the
  full-logits path) and set (the chunked path), as ``finetune.loss_chunk_tokens`` selects them.

Baseline (same run): the full-logits loss, ``cross_entropy(model(**inputs).logits.float(), labels,
reduction="sum")``, the training loop's path without ``loss_chunk_tokens``. Goal: the chunked
loss's peak stays about flat in sequence length (hidden states grow, logits do not) and its time
stays within a few percent of the baseline's (the recomputation of each chunk's logits).

    .venv/bin/python benchmarks/bench_loss.py [--quick] [--lengths 2048,8192,32768] [--chunk 4096]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VOCAB = 32000

# both measurements: a one-layer Llama with a VOCAB-sized tied head, arguments length, method, chunk, vocab
_PRELUDE = """
import json, resource, sys, time
import numpy as np, psutil, torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
length, method, chunk, vocab = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=128, max_position_embeddings=length, tie_word_embeddings=True, use_cache=False)
model = LlamaForCausalLM(cfg)
"""

_STEP = (
    _PRELUDE
    + """
from ropeext.train.loss import chunked_causal_lm_loss
ids = torch.randint(0, vocab, (1, length + 1))
inputs = {"input_ids": ids[:, :-1], "position_ids": torch.arange(length)[None], "use_cache": False}
labels = ids[:, 1:]
base = psutil.Process().memory_info().rss
t0 = time.perf_counter()
if method == "full":
    logits = model(**inputs).logits
    loss = F.cross_entropy(logits.reshape(-1, vocab).float(), labels.reshape(-1), ignore_index=-100, reduction="sum")
else:
    loss, _ = chunked_causal_lm_loss(model, inputs, labels, chunk_tokens=chunk)
loss.backward()
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak - base, "seconds": seconds, "loss": float(loss)}))
"""
)


_TRAIN_STEP = (
    _PRELUDE
    + """
from ropeext.train.data import PackedData
from ropeext.train.loop import TrainSettings, train
ids = np.random.default_rng(0).integers(0, vocab, (1, length + 1))
data = PackedData({"input_ids": ids[:, :-1], "labels": ids[:, 1:].copy(),
                   "position_ids": np.arange(length)[None], "doc_ids": np.ones((1, length), dtype=np.int64)})
settings = TrainSettings(steps=1, batch_size=1, lr=1e-4, precision="fp32", layout="full", system_metrics=False,
                         loss_chunk_tokens=chunk if method == "chunked" else None)
base = psutil.Process().memory_info().rss
summary = train(model, data, settings, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak - base, "seconds": summary["seconds"], "loss": summary["final_loss"]}))
"""
)


def measure(length: int, method: str, chunk: int, code: str = _STEP) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", code, str(length), method, str(chunk), str(VOCAB)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    if res.returncode != 0:
        raise RuntimeError(f"{method} at {length}: {res.stderr[-1500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lengths", default=None, help="comma-separated sequence lengths")
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument(
        "--full-limit-gb",
        type=float,
        default=6.0,
        help="skip the full-logits baseline where its extrapolated peak exceeds this",
    )
    args = ap.parse_args()
    lengths = (
        [int(x) for x in args.lengths.split(",")]
        if args.lengths
        else ([1024, 4096] if args.quick else [2048, 4096, 8192, 16384, 32768])
    )
    chunk = min(args.chunk, 1024) if args.quick else args.chunk
    for title, code in (
        ("loss step (forward + backward)", _STEP),
        ("training step (ropeext.train.loop.train: one optimizer step, AdamW state included)", _TRAIN_STEP),
    ):
        table(title, code, lengths, chunk, args.full_limit_gb)
    print(
        "peak ratio < 1: the chunked loss needs less memory; 'not run' sizes are extrapolated linearly from the "
        "last full-logits run."
    )


def table(title: str, code: str, lengths: list[int], chunk: int, full_limit_gb: float) -> None:
    rows = []
    full_per_token = None
    for n in lengths:
        need = None if full_per_token is None else full_per_token * n
        if need is not None and need > full_limit_gb * 2**30:
            full = {"skipped": need}
        else:
            full = measure(n, "full", chunk, code)
            full_per_token = full["peak"] / n
        rows.append((n, full, measure(n, "chunked", chunk, code)))
        print(f"  {title.split(' (')[0]} {n}: done", flush=True)
    print(
        f"\n{title}: peak memory above the model, vocab {VOCAB}, batch 1, fp32, "
        f"chunk {chunk} tokens; logits alone are {VOCAB * 4 / 2**20:.2f} MiB per token"
    )
    print(
        f"{'length':>7} {'full-logits peak':>17} {'chunked peak':>13} {'peak ratio':>10} {'full s':>7} "
        f"{'chunked s':>9} {'time ratio':>10} {'|loss diff|/loss':>16}"
    )
    for n, full, ch in rows:
        if "skipped" in full:
            print(
                f"{n:>7} {'not run (~' + format(full['skipped'] / 2**30, '.1f') + ' GB)':>17} "
                f"{ch['peak'] / 2**30:>11.2f}GB {'-':>10} {'-':>7} {ch['seconds']:>9.2f} {'-':>10} {'-':>16}"
            )
            continue
        print(
            f"{n:>7} {full['peak'] / 2**30:>15.2f}GB {ch['peak'] / 2**30:>11.2f}GB "
            f"{ch['peak'] / full['peak']:>9.2f}x "
            f"{full['seconds']:>7.2f} {ch['seconds']:>9.2f} {ch['seconds'] / full['seconds']:>9.2f}x "
            f"{abs(ch['loss'] - full['loss']) / full['loss']:>16.1e}"
        )


if __name__ == "__main__":
    main()
