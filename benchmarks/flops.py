"""The FLOP model of a training step, shared by benchmarks/gpu_check.py and benchmarks/bench_train.py.

FLOPs per step: 6 x parameters x tokens for the dense part (a tied output projection counted once,
embedding lookups not) plus attention 12 x layers x hidden x (query-key pairs the layout attends), so a
layout is credited only with the pairs it needs. The datasheet peaks turn achieved FLOP/s into MFU.
"""

from __future__ import annotations

import re

import numpy as np

from ropeext.data.packing import PAD_DOC, attention_rule

# Dense (no sparsity) BF16 tensor-core peak from the vendor datasheets, TFLOP/s; first match wins.
DATASHEET_BF16 = (
    (r"\bH200\b.*\bNVL\b", "H200 NVL", 835.0),
    (r"\bGH200\b|\bH200\b", "H200 / GH200", 989.0),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 756.0),
    (r"\bH100\b.*\bNVL\b", "H100 NVL", 835.0),
    (r"\bH100\b|\bH800\b", "H100 SXM", 989.0),
    (r"\bB200\b", "B200", 2250.0),
    (r"\bA100\b|\bA800\b", "A100", 312.0),
    (r"\bL40S\b", "L40S", 362.0),
    (r"\bL4\b", "L4", 121.0),
    (r"\bA10\b", "A10", 125.0),
)


def datasheet_peak(name: str):
    """(label, FLOP/s) of the dense BF16 datasheet peak for a GPU name, or None when unknown."""
    for pattern, label, tflops in DATASHEET_BF16:
        if re.search(pattern, name):
            return label, tflops * 1e12
    return None


def attended_pairs(doc_ids: np.ndarray, layout: str) -> np.ndarray:
    """Query-key pairs each window attends to under ``layout`` (the dense mask's True count)."""
    rule = attention_rule(layout)
    doc = np.asarray(doc_ids, dtype=np.int64)
    out = np.empty(len(doc), dtype=np.float64)
    for i, row in enumerate(doc):
        pad = int((row == PAD_DOC).sum())
        real = row[row != PAD_DOC]
        if rule == "full":
            n = len(real)
            out[i] = n * (n + 1) / 2 + pad
            continue
        ids, counts = np.unique(real, return_counts=True)
        pairs = (counts * (counts + 1) // 2).sum()
        if rule == "anchor":
            pairs += counts[ids > 0].sum()  # every document token also sees the anchor key
        out[i] = pairs + pad  # a padding query sees itself only
    return out


def step_flops(n_params: int, layers: int, hidden: int, tokens: int, pairs: float) -> tuple[float, float]:
    """(total, attention) FLOPs of one training step over ``tokens`` with ``pairs`` attended pairs."""
    attn = 12.0 * layers * hidden * pairs
    return 6.0 * n_params * tokens + attn, attn


def count_params(model) -> int:
    """Parameters, a tied matrix once (it counts as the output projection; lookups are free)."""
    return sum(p.numel() for p in model.parameters()) - (
        0 if model.config.tie_word_embeddings else model.model.embed_tokens.weight.numel()
    )
