"""Which key each query may see, for every packing layout (True = visible).

``doc_ids`` follow ``ropeext.data.packing``: 0 for the anchor (column 0), 1..n for the documents
of the window, -1 for padding (tail only). A document's tokens need not be contiguous (interleaved
chunks): visibility depends on the ids alone. For query q and key k (k <= q always), by the
layout's rule (``ropeext.data.packing.attention_rule``):

``full``                      every non-padding key.
``intra_doc`` (intra_doc, intra_doc_reset, intra_doc_interleaved)
                              keys of the query's own document (the anchor is document 0, so it
                              sees only itself).
``anchor`` (anchor, anchor_tag, anchor_interleaved)
                              keys of the query's own document, and the anchor.

A padding query sees only itself, so no row is ever empty (an empty softmax row would turn into
NaN and poison the gradients) and no real token ever sees padding.
"""

from __future__ import annotations

import numpy as np

from ropeext.data.packing import LAYOUTS, PAD_DOC, attention_rule

__all__ = ["LAYOUTS", "attention_mask", "attention_mask_torch", "mask_predicate"]


def attention_mask(doc_ids: np.ndarray, layout: str) -> np.ndarray:
    """The boolean W x W visibility matrix of one window (rows: queries, columns: keys)."""
    rule = attention_rule(layout)
    doc = np.asarray(doc_ids)
    if doc.ndim != 1:
        raise ValueError(f"attention_mask takes the doc_ids of one window (1-D), got shape {doc.shape}")
    W = len(doc)
    q = np.arange(W)[:, None]
    k = np.arange(W)[None, :]
    dq, dk = doc[:, None], doc[None, :]
    return _visible(q, k, dq, dk, rule)


def attention_mask_torch(doc_ids, layout: str):
    """Batched torch version: (B, W) doc ids -> (B, 1, W, W) bool, on the same device."""
    # heavy: torch loads only when a model runs
    import torch

    rule = attention_rule(layout)
    W = doc_ids.shape[-1]
    ar = torch.arange(W, device=doc_ids.device)
    q, k = ar[:, None], ar[None, :]
    dq, dk = doc_ids[:, :, None], doc_ids[:, None, :]
    return _visible(q, k, dq, dk, rule)[:, None]


def _visible(q, k, dq, dk, rule):
    causal = k <= q
    if rule == "full":
        allowed = (dk != PAD_DOC) & (dq != PAD_DOC)
    elif rule == "anchor":
        allowed = ((dq == dk) | (dk == 0)) & (dq != PAD_DOC)
    else:  # intra_doc
        allowed = (dq == dk) & (dq != PAD_DOC)
    return (causal & allowed) | (q == k)


def mask_predicate(doc_ids, layout: str):
    """A FlexAttention ``mask_mod(b, h, q, k)`` over a (B, W) doc-id tensor, same rule as above."""
    rule = attention_rule(layout)

    def mask_mod(b, h, q_idx, kv_idx):
        dq = doc_ids[b, q_idx]
        dk = doc_ids[b, kv_idx]
        return _visible(q_idx, kv_idx, dq, dk, rule)

    return mask_mod
