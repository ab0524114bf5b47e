"""How much a position shift changes causal attention, computed from post-RoPE queries and keys.

Everything here works on one layer's ``q`` (heads, T, d) and ``k`` (kv_heads, T, d) from two runs
of the same tokens at positions ``arange(T) + delta1`` and ``arange(T) + delta2``. In exact
arithmetic RoPE makes ``q_i . k_j`` depend on ``i - j`` only, so every quantity below is zero.

Two numeric paths turn q and k into attention logits, mirroring the two ways a model computes them:

``fa2-like``
    q and k stay in their storage dtype (bf16 in a bf16 model); their products are accumulated
    in fp32 (float64 for float64 inputs), scaled in that precision, and softmax runs in fp32 —
    as fused kernels (FlashAttention-2, SDPA's flash and memory-efficient kernels) do.
``eager-bf16``
    as transformers' eager attention: the matrix product is rounded to the storage dtype, scaled
    in that dtype (a second rounding), softmax runs in fp32 and the probabilities are rounded to
    the storage dtype again. For fp32 or float64 inputs the roundings are no-ops.

Memory: a layer's T x T attention is never held. Heads are processed one at a time and query
rows in blocks of ``chunk_size``, so the largest temporary is ``chunk_size x T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ropeext.errors import RopeextError

NUMERIC_PATHS = ("fa2-like", "eager-bf16")


def check_path(path: str) -> str:
    if path not in NUMERIC_PATHS:
        raise RopeextError(f"numeric path {path!r} is not one of {', '.join(NUMERIC_PATHS)}")
    return path


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half-precision and fp32 inputs; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_logits(q: torch.Tensor, k: torch.Tensor, scale: float, path: str) -> torch.Tensor:
    """Scaled logits ``q @ k.T * scale`` (q: (n, d), k: (m, d)) as the numeric path computes them.

    Returned in the accumulation dtype (fp32, or float64 for float64 inputs).
    """
    acc = accumulate_dtype(q.dtype)
    # Up-casting is exact; products and sums are then rounded in the accumulation dtype only.
    logits = q.to(acc) @ k.to(acc).transpose(-1, -2)
    if path == "eager-bf16":
        return (logits.to(q.dtype) * scale).to(acc)
    return logits * scale


def _causal_probs(q_rows: torch.Tensor, k: torch.Tensor, row_start: int, scale: float, path: str) -> torch.Tensor:
    """Softmax attention of the query rows ``row_start ..`` over keys ``0 .. row_end-1`` (causal)."""
    n = q_rows.shape[0]
    row_end = row_start + n
    logits = attention_logits(q_rows, k[:row_end], scale, path)
    rows = torch.arange(row_start, row_end, device=q_rows.device)[:, None]
    cols = torch.arange(row_end, device=q_rows.device)[None, :]
    logits = logits.masked_fill(cols > rows, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if path == "eager-bf16":
        probs = probs.to(q_rows.dtype).to(logits.dtype)
    return probs


@dataclass
class LayerDeviation:
    """One layer's |P(delta1) - P(delta2)|, reduced two ways, per head.

    ``column`` (heads, T): for key j, the mean over the queries i >= j that see it.
    ``row`` (heads, T): for query i, the mean over the keys j <= i it sees.
    D (column variant) is ``column.sum()``, the row variant ``row.sum()``.
    """

    column: torch.Tensor
    row: torch.Tensor

    @property
    def column_total(self) -> float:
        return float(self.column.sum())

    @property
    def row_total(self) -> float:
        return float(self.row.sum())


def layer_deviation(
    q1: torch.Tensor,
    k1: torch.Tensor,
    q2: torch.Tensor,
    k2: torch.Tensor,
    *,
    scale: float,
    path: str = "fa2-like",
    chunk_size: int = 512,
) -> LayerDeviation:
    """Compare causal attention of one layer between two runs, head by head and in row blocks.

    q1, q2: (heads, T, d); k1, k2: (kv_heads, T, d) with heads a multiple of kv_heads (grouped
    query attention shares each key head among heads // kv_heads query heads).
    """
    check_path(path)
    if chunk_size < 1:
        raise RopeextError(f"chunk size must be a positive number of query rows, got {chunk_size}")
    if q1.shape != q2.shape or k1.shape != k2.shape:
        raise ValueError(
            f"shape mismatch: q {tuple(q1.shape)} vs {tuple(q2.shape)}, k {tuple(k1.shape)} vs {tuple(k2.shape)}"
        )
    heads, length, _ = q1.shape
    kv_heads = k1.shape[0]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key heads")
    group = heads // kv_heads
    acc = accumulate_dtype(q1.dtype)
    column = torch.zeros(heads, length, dtype=acc, device=q1.device)
    row = torch.zeros(heads, length, dtype=acc, device=q1.device)
    for h in range(heads):
        kh1, kh2 = k1[h // group], k2[h // group]
        for start in range(0, length, chunk_size):
            stop = min(start + chunk_size, length)
            p1 = _causal_probs(q1[h, start:stop], kh1, start, scale, path)
            p2 = _causal_probs(q2[h, start:stop], kh2, start, scale, path)
            diff = (p1 - p2).abs()  # entries above the diagonal are 0 - 0
            column[h, :stop] += diff.sum(dim=0)
            row[h, start:stop] = diff.sum(dim=1)
    positions = torch.arange(length, device=q1.device, dtype=acc)
    column /= length - positions  # queries i >= j that see key j
    row /= positions + 1  # keys j <= i that query i sees
    return LayerDeviation(column=column.cpu(), row=row.cpu())


def key_logits(q: torch.Tensor, k: torch.Tensor, key: int, *, scale: float, path: str = "fa2-like") -> torch.Tensor:
    """Pre-softmax logits of key ``key`` for every query that sees it: (heads, T - key).

    q: (heads, T, d); k: (kv_heads, T, d).
    """
    check_path(path)
    heads, kv_heads = q.shape[0], k.shape[0]
    group = heads // kv_heads
    k_col = k[:, key : key + 1].repeat_interleave(group, dim=0)  # (heads, 1, d)
    return attention_logits(q[:, key:], k_col, scale, path)[..., 0].cpu()


def logit_deviation(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Per head mean over queries of |A(delta1) - A(delta2)| for one key column: (heads,)."""
    return (logits1 - logits2).abs().mean(dim=-1)
