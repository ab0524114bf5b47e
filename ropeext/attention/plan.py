"""Segment plans: a packed batch cut into independent causal attention problems.

Every layout's mask (``ropeext.attention.masks``) is a union of causal blocks, one per segment:

- ``full``: all non-padding tokens of a row form one segment;
- ``intra_doc`` rule (intra_doc, intra_doc_reset, intra_doc_interleaved): the tokens of one
  document id in a row are a segment (the anchor alone is a segment of length 1);
- ``anchor`` rule (anchor, anchor_tag, anchor_interleaved): as intra_doc, and each document
  segment is *extended* by the anchor's key and value placed in front of it. A causal problem on
  [anchor, d_1..d_L] gives each d_i exactly the anchor plus d_1..d_i; the output at the extra
  front row (the anchor as a query) is discarded, since the anchor's own output comes from its
  length-1 segment. This is exact: the anchor's key and value
  are the very tensors of column 0 (rotary position 0 already applied), reused, not recomputed;
- padding: every padding token is its own segment of length 1 (it sees itself only).

A plan holds flat token indices (row * W + column) so that the attention backends gather
queries/keys/values into segments, run plain causal attention, and scatter the outputs back with
one permutation. Each token's output is produced exactly once.

A document need not be contiguous (interleaved chunks): its segment is then its tokens in column
order, wherever they are in the row, held in ``order`` (flat indices sorted by row, document,
column). Causal attention over that gathered sequence lets each token see exactly the earlier
tokens of its document, across the gaps; the rotary positions travel with the queries and keys,
which are rotated before attention. Where every document is contiguous ``order`` is None (the
identity) and segments are plain runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropeext.data.packing import PAD_DOC, attention_rule

# padding granule of a bucket: 2^(floor(log2 length) - BUCKET_SHIFT)
BUCKET_SHIFT = 6


@dataclass
class SegmentPlan:
    batch: int
    window: int
    start: np.ndarray  # position in ``order`` (the flat index, without one) of each segment's first own token
    length: np.ndarray  # own tokens per segment
    prefix: np.ndarray  # 1 where the anchor key is placed in front (anchor layout), else 0
    anchor: np.ndarray  # flat index of the anchor of the segment's row
    order: np.ndarray | None = None  # flat token indices, segment by segment (None: the identity)
    _cache: dict | None = None

    @property
    def ext_length(self) -> np.ndarray:
        return self.length + self.prefix

    @property
    def plain_causal(self) -> bool:
        """True when every row is one causal segment (full layout without padding)."""
        return (
            len(self.start) == self.batch and bool((self.length == self.window).all()) and not bool(self.prefix.any())
        )

    @property
    def whole_rows(self) -> bool:
        """True when every row is one causal problem over the whole window: plain causal rows, or
        (anchor layout) one document filling the window behind its anchor. The anchor's own output
        is then the same in both forms (as a query it sees only itself)."""
        return int((self.ext_length == self.window).sum()) == self.batch

    def sum_sq(self) -> int:
        """Attention cost of the plan: sum over segments of (extended length)^2."""
        return int((self.ext_length.astype(np.int64) ** 2).sum())

    def gather_rows(self, seg: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Index matrix (n, width) of flat token indices for segments ``seg``, and a validity mask
        of the output columns (False for the extra anchor row and for right padding)."""
        col = np.arange(width, dtype=np.int64)[None, :]
        pre = self.prefix[seg][:, None]
        start = self.start[seg][:, None]
        last = start + self.length[seg][:, None] - 1
        idx = np.minimum(start + col - pre, last)
        if self.order is not None:
            idx = self.order[idx]
        idx = np.where((pre == 1) & (col == 0), self.anchor[seg][:, None], idx)
        valid = (col >= pre) & (col < pre + self.length[seg][:, None])
        return idx, valid

    def buckets(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Segments grouped by padded length: [(width, gather_idx (n,width), out_select, out_dest)].

        Lengths are rounded up to a multiple of 2^(floor(log2 L) - 6): segments shorter than 128
        keep their exact length, longer ones waste at most 1/64 of their length on padding. Right
        padding is safe under causal attention: real queries never see keys after them, and padded
        query rows are dropped. The fine granule is deliberate: one more SDPA call costs about
        50 microseconds on CPU, while coarse padding (1/8) cost 3-4% of the whole attention time in
        benchmarks/bench_attention.py.
        """
        if self._cache is not None and "buckets" in self._cache:
            return self._cache["buckets"]
        ext = self.ext_length
        granule = np.left_shift(1, np.maximum(np.floor(np.log2(np.maximum(ext, 1))).astype(np.int64) - BUCKET_SHIFT, 0))
        width = -(-ext // granule) * granule
        out = []
        for w in np.unique(width):
            seg = np.flatnonzero(width == w)
            idx, valid = self.gather_rows(seg, int(w))
            out.append((int(w), idx, np.flatnonzero(valid.reshape(-1)), idx[valid]))
        self._cache = {**(self._cache or {}), "buckets": out}
        return out

    def varlen(self) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
        """Unpadded form for varlen kernels: gather index, cu_seqlens, max_seqlen, out_select, out_dest."""
        if self._cache is not None and "varlen" in self._cache:
            return self._cache["varlen"]
        ext = self.ext_length
        total = int(ext.sum())
        seg_of = np.repeat(np.arange(len(ext)), ext)
        cu = np.zeros(len(ext) + 1, dtype=np.int64)
        np.cumsum(ext, out=cu[1:])
        j = np.arange(total, dtype=np.int64) - cu[seg_of]  # column inside the extended segment
        pre = self.prefix[seg_of]
        own = np.maximum(self.start[seg_of] + j - pre, 0)
        if self.order is not None:
            own = self.order[own]
        idx = np.where((pre == 1) & (j == 0), self.anchor[seg_of], own)
        valid = j >= pre
        res = (idx, cu, int(ext.max()) if len(ext) else 0, np.flatnonzero(valid), idx[valid])
        self._cache = {**(self._cache or {}), "varlen": res}
        return res


def build_plan(doc_ids, layout: str) -> SegmentPlan:
    """Cut a (B, W) doc-id array (numpy or torch) into the segments of ``layout``."""
    rule = attention_rule(layout)
    if hasattr(doc_ids, "detach"):
        doc_ids = doc_ids.detach().to("cpu").numpy()
    doc = np.asarray(doc_ids, dtype=np.int64)
    if doc.ndim != 2:
        raise ValueError(f"doc_ids must be (batch, window), got shape {doc.shape}")
    B, W = doc.shape
    pad = doc == PAD_DOC
    if rule == "full":
        key = np.where(pad, 0, 1)
    else:
        key = doc
    # a fresh segment at column 0, where the key changes, and at every padding token
    new = np.ones((B, W), dtype=bool)
    new[:, 1:] = key[:, 1:] != key[:, :-1]
    new |= pad
    new[:, 0] = True
    flat_new = new.reshape(-1)
    start = np.flatnonzero(flat_new)
    length = np.diff(np.append(start, B * W))
    order = None
    flat_doc = doc.reshape(-1)
    span = int(doc.max(initial=0)) + 2
    if rule != "full":
        runs = start[flat_doc[start] != PAD_DOC]
        pair = (runs // W) * span + flat_doc[runs]
        if len(np.unique(pair)) < len(pair):  # some document comes back after a gap: group by document
            start, length, order = _grouped(flat_doc, B, W, span)
    first = start if order is None else order[start]
    row = first // W
    first_doc = flat_doc[first]
    if rule == "anchor":
        if np.any(doc[:, 0] != 0):
            raise ValueError("anchor layout: every window must start with the anchor (doc id 0 at column 0)")
        prefix = (first_doc > 0).astype(np.int64)
    else:
        prefix = np.zeros(len(start), dtype=np.int64)
    return SegmentPlan(batch=B, window=W, start=start, length=length, prefix=prefix, anchor=row * W, order=order)


def _grouped(flat_doc: np.ndarray, B: int, W: int, span: int):
    """Segments of all tokens of one document id per row, each in column order; every padding
    token alone. Returns (start, length) into ``order`` and ``order``."""
    col = np.tile(np.arange(W, dtype=np.int64), B)
    row = np.repeat(np.arange(B, dtype=np.int64), W)
    group = np.where(flat_doc == PAD_DOC, span + col, flat_doc) + row * (span + W)
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = sorted_group[1:] != sorted_group[:-1]
    start = np.flatnonzero(new)
    return start, np.diff(np.append(start, len(order))), order
