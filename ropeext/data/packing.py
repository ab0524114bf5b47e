"""Packing tokenized documents into fixed windows, with the layouts of the packing study.

Every window has the same token stream in every layout: the anchor token (the tokenizer's BOS,
or EOS where there is no BOS) at column 0, then document pieces filling the remaining W-1
columns. Layouts differ only in the rotary positions and in which keys a query may see
(``ropeext.attention.masks``):

``full``             positions 0..W-1; causal attention across the whole window.
``intra_doc``        positions 0..W-1; a token sees earlier tokens of its own document only.
``intra_doc_reset``  as ``intra_doc`` with positions restarting at 0 in every document piece.
``anchor``           positions 0..W-1 (never reset); a token sees earlier tokens of its own
                     document and the anchor (AnchorAttention).

Policy: documents of 2 tokens or fewer are dropped; the rest are taken in a seeded shuffled
order and appended greedily; a document longer than the room left is split at the window edge
and continues in the next window, which again starts with the anchor. This is the same as
cutting the concatenated stream into pieces of W-1 tokens, which is how it is computed: the
whole packer is array work. The last partial window is dropped, or padded when asked.

Columns (int32, windows x W):

``input_ids``     tokens (padding uses ``pad_id``, the anchor by default).
``labels``        the NEXT token: ``labels[t] = input_ids[t+1]``; -100 at the last column, at and
                  before padding, and (by default) where t and t+1 belong to different documents,
                  including the anchor's own label.
``position_ids``  rotary positions.
``doc_ids``       0 for the anchor, 1..n for the document pieces of the window, -1 for padding.
                  Padding only ever occupies the tail of a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ropeext.errors import RopeextError

LAYOUTS = ("full", "intra_doc", "intra_doc_reset", "anchor")
IGNORE_INDEX = -100
PAD_DOC = -1
MIN_DOC_TOKENS = 3  # documents of 2 tokens or fewer are dropped
COLUMNS = ("input_ids", "labels", "position_ids", "doc_ids")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise RopeextError(f"unknown packing layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    return layout


def check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window <= 2:
        raise RopeextError(f"packing window must be an integer > 2 (anchor + at least 2 tokens), got {window!r}")
    return int(window)


@dataclass
class PackInfo:
    """What the packer kept and dropped (the columns themselves say the rest)."""

    documents_in: int = 0
    documents_kept: int = 0
    documents_dropped_short: int = 0
    tokens_kept: int = 0
    tokens_dropped_short: int = 0
    tokens_dropped_last: int = 0
    padding_tokens: int = 0
    extra: dict = field(default_factory=dict)


def pack_documents(docs: list[list[int]], window: int, layout: str, anchor_id: int, seed: int = 0, *,
                   pad_last: bool = False, mask_boundary_labels: bool = True,
                   pad_id: int | None = None) -> dict[str, np.ndarray]:
    """Pack ``docs`` (token id lists) into windows of ``window`` tokens; see the module docstring."""
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    flat = np.fromiter((t for d in docs for t in d), dtype=np.int64, count=int(lengths.sum()))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    columns, _ = pack_flat(flat, offsets, window, layout, anchor_id, seed, pad_last=pad_last,
                           mask_boundary_labels=mask_boundary_labels, pad_id=pad_id)
    return columns


def pack_flat(tokens: np.ndarray, offsets: np.ndarray, window: int, layout: str, anchor_id: int,
              seed: int = 0, *, pad_last: bool = False, mask_boundary_labels: bool = True,
              pad_id: int | None = None) -> tuple[dict[str, np.ndarray], PackInfo]:
    """The packer on flat arrays: document i is ``tokens[offsets[i]:offsets[i+1]]`` (Arrow's list layout)."""
    W = check_window(window)
    check_layout(layout)
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(tokens) \
            or np.any(np.diff(offsets) < 0):
        raise RopeextError("document offsets must start at 0, never decrease and end at the number of tokens")
    pad_id = anchor_id if pad_id is None else pad_id
    info = PackInfo(documents_in=len(offsets) - 1)

    lengths = np.diff(offsets)
    keep = lengths >= MIN_DOC_TOKENS
    info.documents_dropped_short = int((~keep).sum())
    info.tokens_dropped_short = int(lengths[~keep].sum())
    kept = np.flatnonzero(keep)
    order = kept[np.random.default_rng(seed).permutation(len(kept))]
    info.documents_kept = len(order)
    doc_len = lengths[order]

    # Gather the shuffled documents into one stream without a Python loop over tokens:
    # stream[j] = tokens[j + shift of j's document].
    total = int(doc_len.sum())
    doc_start = np.zeros(len(order) + 1, dtype=np.int64)  # start of each document in the stream
    np.cumsum(doc_len, out=doc_start[1:])
    shift = np.repeat(offsets[order] - doc_start[:-1], doc_len)
    shift += np.arange(total, dtype=np.int64)
    stream = tokens[shift].astype(np.int32, copy=False)
    del shift

    room = W - 1
    n_full = total // room
    rest = total - n_full * room
    n_win = n_full + (1 if (pad_last and rest) else 0)
    used = min(total, n_win * room)
    info.tokens_kept = used
    info.tokens_dropped_last = total - used
    info.padding_tokens = n_win * room - used

    input_ids = np.empty((n_win, W), dtype=np.int32)
    input_ids[:, 0] = anchor_id
    body = input_ids[:, 1:]  # a view: the W-1 document columns
    if n_win:
        body[:n_full] = stream[:n_full * room].reshape(n_full, room)
        if n_win > n_full:
            body[n_full, :rest] = stream[n_full * room:]
            body[n_full, rest:] = pad_id

    # Document starts inside the body; column 0 of a window always starts a piece.
    starts = np.zeros(n_win * room, dtype=bool)
    first = doc_start[:-1]
    starts[first[first < used]] = True
    starts = starts.reshape(n_win, room)
    starts[:, 0] = True
    doc_ids = np.empty((n_win, W), dtype=np.int32)
    doc_ids[:, 0] = 0
    np.cumsum(starts, axis=1, dtype=np.int32, out=doc_ids[:, 1:])

    position_ids = np.empty((n_win, W), dtype=np.int32)
    position_ids[:] = np.arange(W, dtype=np.int32)
    if layout == "intra_doc_reset" and n_win:
        col = np.arange(room, dtype=np.int32)
        piece_start = np.where(starts, col, 0)
        np.maximum.accumulate(piece_start, axis=1, out=piece_start)
        np.subtract(col, piece_start, out=position_ids[:, 1:])

    labels = np.empty((n_win, W), dtype=np.int32)
    labels[:, :-1] = input_ids[:, 1:]
    labels[:, -1] = IGNORE_INDEX
    if mask_boundary_labels:
        labels[:, 0] = IGNORE_INDEX  # the anchor's label crosses into document 1
        labels[:, 1:-1][starts[:, 1:]] = IGNORE_INDEX
    if n_win > n_full:  # padding: doc id -1, position = column, no label at or before it
        pad_from = 1 + rest
        doc_ids[-1, pad_from:] = PAD_DOC
        position_ids[-1, pad_from:] = np.arange(pad_from, W, dtype=np.int32)
        labels[-1, pad_from - 1:] = IGNORE_INDEX
    columns = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "doc_ids": doc_ids}
    return columns, info


def segment_lengths(doc_row: np.ndarray) -> np.ndarray:
    """Lengths of the runs of equal ids in one window's ``doc_ids`` (anchor and padding included)."""
    doc_row = np.asarray(doc_row)
    change = np.flatnonzero(np.diff(doc_row) != 0) + 1
    bounds = np.concatenate(([0], change, [len(doc_row)]))
    return np.diff(bounds)


def packing_stats(columns: dict[str, np.ndarray], info: PackInfo | None = None,
                  per_window: bool = True) -> dict:
    """Per-window statistics and totals of a packed set of windows."""
    doc_ids = np.asarray(columns["doc_ids"])
    labels = np.asarray(columns["labels"])
    n_win, W = doc_ids.shape if doc_ids.ndim == 2 else (0, 0)
    docs = doc_ids.max(axis=1).clip(min=0) if n_win else np.zeros(0, dtype=np.int64)
    real = (doc_ids > 0).sum(axis=1) if n_win else np.zeros(0, dtype=np.int64)
    label_tokens = (labels != IGNORE_INDEX).sum(axis=1) if n_win else np.zeros(0, dtype=np.int64)
    # sum over the document pieces of a window of length^2, over W^2 (anchor and padding excluded)
    sum_sq = np.zeros(n_win, dtype=np.float64)
    if n_win:
        flat_doc = doc_ids.astype(np.int64) + (np.arange(n_win, dtype=np.int64) * (W + 2))[:, None]
        valid = doc_ids > 0
        counts = np.bincount(flat_doc[valid], minlength=n_win * (W + 2)).reshape(n_win, W + 2)
        sum_sq = (counts.astype(np.float64) ** 2).sum(axis=1) / float(W) ** 2
    crossing = docs > 1
    totals = {
        "windows": int(n_win),
        "window": int(W),
        "tokens": int(n_win * W),
        "document_tokens": int(real.sum()),
        "label_tokens": int(label_tokens.sum()),
        "document_pieces": int(docs.sum()),
        "mean_docs_per_window": float(docs.mean()) if n_win else 0.0,
        "frac_windows_crossing_boundary": float(crossing.mean()) if n_win else 0.0,
        "mean_sum_sq_doc_len_over_w2": float(sum_sq.mean()) if n_win else 0.0,
        "padding_tokens": int((doc_ids == PAD_DOC).sum()),
    }
    if info is not None:
        totals.update({
            "documents": info.documents_kept,
            "documents_in": info.documents_in,
            "documents_dropped_short": info.documents_dropped_short,
            "tokens_dropped_short": info.tokens_dropped_short,
            "tokens_dropped_last": info.tokens_dropped_last,
        })
    out = {"totals": totals}
    if per_window:
        out["per_window"] = {
            "docs": docs.astype(int).tolist(),
            "document_tokens": real.astype(int).tolist(),
            "label_tokens": label_tokens.astype(int).tolist(),
            "crosses_boundary": crossing.astype(bool).tolist(),
            "sum_sq_doc_len_over_w2": [round(float(x), 6) for x in sum_sq],
        }
    return out
