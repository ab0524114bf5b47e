"""Packing tokenized documents into fixed windows, with the seven layouts of the packing study.

The layouts, the policy, interleaved chunks, domain tags and the columns are described in docs/packing.md.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from string import Template

import numpy as np

from ropeext.errors import RopeextError

LAYOUTS = (
    "full",
    "intra_doc",
    "intra_doc_reset",
    "intra_doc_interleaved",
    "anchor",
    "anchor_tag",
    "anchor_interleaved",
)
_RULE = {
    "full": "full",
    "intra_doc": "intra_doc",
    "intra_doc_reset": "intra_doc",
    "intra_doc_interleaved": "intra_doc",
    "anchor": "anchor",
    "anchor_tag": "anchor",
    "anchor_interleaved": "anchor",
}
INTERLEAVED = ("intra_doc_interleaved", "anchor_interleaved")
TAGGED = ("anchor_tag",)
IGNORE_INDEX = -100
PAD_DOC = -1
MIN_DOC_TOKENS = 3  # documents of 2 tokens or fewer are dropped
COLUMNS = ("input_ids", "labels", "position_ids", "doc_ids")
INTERLEAVE_KEYS = ("min_tokens", "max_tokens", "chunks", "cut_range")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise RopeextError(f"unknown packing layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    return layout


def attention_rule(layout: str) -> str:
    """The visibility rule of ``layout``: ``full``, ``intra_doc`` (own document) or ``anchor``."""
    return _RULE[check_layout(layout)]


def check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window <= 2:
        raise RopeextError(f"packing window must be an integer > 2 (anchor + at least 2 tokens), got {window!r}")
    return int(window)


def check_interleave(settings) -> dict:
    """Validate ``packing.interleave`` settings (see docs/packing.md); returns them as a dict."""
    if not isinstance(settings, dict) or set(settings) != set(INTERLEAVE_KEYS):
        raise RopeextError(f"packing.interleave: expected the keys {', '.join(INTERLEAVE_KEYS)}, got {settings!r}")
    lo_n, hi_n = settings["min_tokens"], settings["max_tokens"]
    chunks, cut = list(settings["chunks"]), list(settings["cut_range"])
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (lo_n, hi_n, *chunks)):
        raise RopeextError(f"packing.interleave: min_tokens, max_tokens and chunks must be integers, got {settings!r}")
    if not MIN_DOC_TOKENS <= lo_n <= hi_n:
        raise RopeextError(f"packing.interleave: need {MIN_DOC_TOKENS} <= min_tokens <= max_tokens, got {lo_n}, {hi_n}")
    if len(chunks) != 2 or not 2 <= chunks[0] <= chunks[1]:
        raise RopeextError(f"packing.interleave.chunks: expected [lo, hi] with 2 <= lo <= hi, got {chunks}")
    if len(cut) != 2 or not 0 < cut[0] < cut[1] < 1:
        raise RopeextError(f"packing.interleave.cut_range: expected [a, b] with 0 < a < b < 1, got {cut}")
    # k-1 distinct cuts need k-1 integers in [ceil(aL), floor(bL)]; beyond L = k/(b-a) there always are
    top = min(hi_n, lo_n + int(math.ceil(chunks[1] / (cut[1] - cut[0]))) + 1)
    L = np.arange(lo_n, top + 1)
    cut_lo, cut_hi = _cut_bounds(L, cut)
    short = L[cut_hi - cut_lo + 1 < chunks[1] - 1]
    if len(short):
        raise RopeextError(
            f"packing.interleave: a document of {int(short[0])} tokens has fewer than {chunks[1] - 1} cut points in "
            f"cut_range {cut}; raise min_tokens or widen cut_range"
        )
    return {
        "min_tokens": int(lo_n),
        "max_tokens": int(hi_n),
        "chunks": [int(c) for c in chunks],
        "cut_range": [float(c) for c in cut],
    }


def _cut_bounds(L, cut):
    L = np.asarray(L, dtype=np.int64)
    return np.ceil(cut[0] * L).astype(np.int64), np.floor(cut[1] * L).astype(np.int64)


def render_tag(template: str, domain: str) -> str:
    """``template`` with ``$domain`` replaced (``string.Template``: braces would read as Snakemake wildcards)."""
    if not isinstance(template, str) or not re.search(r"\$(domain\b|\{domain\})", template):
        raise RopeextError(f"packing.tag_template must be a string containing $domain, got {template!r}")
    try:
        return Template(template).substitute(domain=domain)
    except (KeyError, ValueError) as exc:
        raise RopeextError(
            f"packing.tag_template {template!r}: only $domain may be used, and a literal $ written $$ ({exc!r})"
        ) from None


@dataclass
class Tags:
    """Tag tokens of every document: document i gets ``table[index[i]]``."""

    index: np.ndarray
    table: list

    @classmethod
    def from_lists(cls, tags: list) -> "Tags":
        keys, index = {}, []
        for t in tags:
            index.append(keys.setdefault(tuple(int(x) for x in t), len(keys)))
        return cls(np.asarray(index, dtype=np.int64), [np.asarray(k, dtype=np.int64) for k in keys])


@dataclass
class PackInfo:
    """What the packer kept and dropped; tag tokens are counted apart, in ``extra["tag_tokens"]``."""

    documents_in: int = 0
    documents_kept: int = 0
    documents_dropped_short: int = 0
    tokens_kept: int = 0
    tokens_dropped_short: int = 0
    tokens_dropped_last: int = 0
    padding_tokens: int = 0
    extra: dict = field(default_factory=dict)
    per_window: dict = field(default_factory=dict)


@dataclass
class _Segments:
    """Contiguous runs of source tokens, in stream order. ``src`` indexes the document tokens, or
    (``tag``) the tag bank placed after them; ``unit`` is the document's row index."""

    src: np.ndarray
    length: np.ndarray
    unit: np.ndarray
    tag: np.ndarray | None = None

    def starts(self) -> np.ndarray:
        out = np.zeros(len(self.length), dtype=np.int64)
        np.cumsum(self.length[:-1], out=out[1:])
        return out


def pack_documents(
    docs: list[list[int]],
    window: int,
    layout: str,
    anchor_id: int,
    seed: int = 0,
    *,
    pad_last: bool = False,
    mask_boundary_labels: bool = True,
    pad_id: int | None = None,
    tags: list[list[int]] | None = None,
    interleave: dict | None = None,
) -> dict[str, np.ndarray]:
    """Pack ``docs`` (token id lists) into windows of ``window`` tokens; see docs/packing.md."""
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    flat = np.fromiter((t for d in docs for t in d), dtype=np.int64, count=int(lengths.sum()))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    columns, _ = pack_flat(
        flat,
        offsets,
        window,
        layout,
        anchor_id,
        seed,
        pad_last=pad_last,
        mask_boundary_labels=mask_boundary_labels,
        pad_id=pad_id,
        tags=None if tags is None else Tags.from_lists(tags),
        interleave=interleave,
    )
    return columns


def pack_flat(
    tokens: np.ndarray,
    offsets: np.ndarray,
    window: int,
    layout: str,
    anchor_id: int,
    seed: int = 0,
    *,
    pad_last: bool = False,
    mask_boundary_labels: bool = True,
    pad_id: int | None = None,
    tags: Tags | None = None,
    interleave: dict | None = None,
) -> tuple[dict[str, np.ndarray], PackInfo]:
    """The packer on flat arrays, all windows at once: document i is ``tokens[offsets[i]:offsets[i+1]]``."""
    check_window(window)
    check_layout(layout)
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim == 1 and len(offsets) and offsets[-1] != len(tokens):
        raise RopeextError(_OFFSETS_ERROR)
    plan = plan_packing(
        offsets,
        window,
        layout,
        anchor_id,
        seed,
        pad_last=pad_last,
        mask_boundary_labels=mask_boundary_labels,
        pad_id=pad_id,
        tags=tags,
        interleave=interleave,
    )
    return pack_windows(tokens, plan, 0, plan.windows), plan.info


_OFFSETS_ERROR = "document offsets must start at 0, never decrease and end at the number of tokens"


@dataclass
class PackPlan:
    """A packing decided from the document lengths alone: the segments whose concatenation, cut every
    W-1 tokens, gives the windows, and every count of ``info``."""

    seg: _Segments
    starts: np.ndarray  # stream offset of each segment
    bank: np.ndarray | None  # the tag bank (anchor_tag): tag tokens, indexed from ``n_tokens`` on
    window: int
    layout: str
    anchor_id: int
    pad_id: int
    mask_boundary_labels: bool
    windows: int
    used: int  # stream tokens placed in windows (the rest, a dropped partial window, is not)
    info: PackInfo


def plan_packing(
    offsets: np.ndarray,
    window: int,
    layout: str,
    anchor_id: int,
    seed: int = 0,
    *,
    pad_last: bool = False,
    mask_boundary_labels: bool = True,
    pad_id: int | None = None,
    tags: Tags | None = None,
    interleave: dict | None = None,
) -> PackPlan:
    """Everything but the token ids of a packing (see ``pack_flat``): document i has
    ``offsets[i+1] - offsets[i]`` tokens."""
    W = check_window(window)
    check_layout(layout)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise RopeextError(_OFFSETS_ERROR)
    if (tags is not None) != (layout in TAGGED):
        raise RopeextError(f"layout {layout}: tags are {'required' if layout in TAGGED else 'only used by anchor_tag'}")
    if (interleave is not None) != (layout in INTERLEAVED):
        raise RopeextError(
            f"layout {layout}: packing.interleave settings are "
            f"{'required' if layout in INTERLEAVED else 'only used by the interleaved layouts'}"
        )
    if tags is not None and len(tags.index) != len(offsets) - 1:
        raise RopeextError(f"{len(tags.index)} tags for {len(offsets) - 1} documents")
    pad_id = anchor_id if pad_id is None else pad_id
    info = PackInfo(documents_in=len(offsets) - 1)
    room = W - 1

    lengths = np.diff(offsets)
    keep = lengths >= MIN_DOC_TOKENS
    info.documents_dropped_short = int((~keep).sum())
    info.tokens_dropped_short = int(lengths[~keep].sum())
    kept = np.flatnonzero(keep)
    order = kept[np.random.default_rng(seed).permutation(len(kept))]
    info.documents_kept = len(order)
    seg = _Segments(offsets[order], lengths[order], order)
    bank = retag = None
    if layout in INTERLEAVED:
        seg = _interleave(seg, room, check_interleave(interleave), seed, info)
    elif layout in TAGGED:
        seg, bank, retag = _tag_windows(seg, tags, room, int(offsets[-1]))

    starts = seg.starts()
    total = int(seg.length.sum())
    n_full = total // room
    n_win = n_full + (1 if (pad_last and total - n_full * room) else 0)
    used = min(total, n_win * room)
    tag_used = tag_all = 0
    if seg.tag is not None:
        is_tag = np.flatnonzero(seg.tag)
        bounds = np.minimum(np.arange(n_win + 1, dtype=np.int64) * room, used)
        before = _tokens_before(starts[is_tag], seg.length[is_tag], bounds)  # tag tokens before each window edge
        info.per_window["tag_tokens"] = np.diff(before)
        tag_used, tag_all = int(before[-1]), int(seg.length[is_tag].sum())
        info.extra["tag_tokens"] = tag_used
    info.tokens_kept = used - tag_used
    info.tokens_dropped_last = (total - used) - (tag_all - tag_used)
    info.padding_tokens = n_win * room - used
    if retag is not None:
        again = retag[:n_win] >= 0
        info.per_window["retagged"] = again
        info.extra["retagged_pieces"] = int(again.sum())
        info.extra["documents_per_tag"] = np.bincount(tags.index[order], minlength=len(tags.table)).tolist()
    return PackPlan(seg, starts, bank, W, layout, anchor_id, pad_id, mask_boundary_labels, n_win, used, info)


def _tokens_before(start: np.ndarray, length: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For sorted, non-overlapping segments, how many of their tokens lie before each of ``points``."""
    if not len(start):
        return np.zeros(len(points), dtype=np.int64)
    end = start + length
    whole = np.zeros(len(start) + 1, dtype=np.int64)
    np.cumsum(length, out=whole[1:])
    k = np.searchsorted(start, points, side="right")  # segments starting before each point
    last = np.maximum(k - 1, 0)
    partial = np.where(k > 0, np.clip(points - start[last], 0, None) - np.clip(points - end[last], 0, None), 0)
    return whole[np.maximum(k - 1, 0)] + partial


def pack_windows(tokens: np.ndarray, plan: PackPlan, first: int, stop: int) -> dict[str, np.ndarray]:
    """The columns of windows ``first`` .. ``stop - 1`` of ``plan``: rows of ``pack_flat``'s output,
    whatever the range. ``tokens`` is the flat id array the plan's offsets index (it may be
    memory-mapped: only the ids these windows hold are read)."""
    first, stop = max(0, int(first)), min(int(stop), plan.windows)
    stop = max(stop, first)
    room = plan.window - 1
    a, b = first * room, min(stop * room, plan.used)
    seg = _slice(plan.seg, plan.starts, a, b)
    return _columns(
        tokens,
        plan.bank,
        seg,
        plan.window,
        stop - first,
        max(b - a, 0),
        plan.layout,
        plan.anchor_id,
        plan.pad_id,
        plan.mask_boundary_labels,
    )


def _slice(seg: _Segments, starts: np.ndarray, a: int, b: int) -> _Segments:
    """The segments cut to the stream range [a, b)."""
    if b <= a:
        empty = np.zeros(0, dtype=np.int64)
        return _Segments(empty, empty, empty, None if seg.tag is None else np.zeros(0, dtype=bool))
    i0 = int(np.searchsorted(starts, a, side="right")) - 1
    i1 = int(np.searchsorted(starts, b, side="left"))
    src, length = seg.src[i0:i1].copy(), seg.length[i0:i1].copy()
    tail = int(starts[i1 - 1] + seg.length[i1 - 1]) - b
    head = a - int(starts[i0])
    src[0] += head
    length[0] -= head
    if tail > 0:
        length[-1] -= tail
    return _Segments(src, length, seg.unit[i0:i1], None if seg.tag is None else seg.tag[i0:i1])


def _interleave(seg: _Segments, room: int, settings: dict, seed: int, info: PackInfo) -> _Segments:
    """Documents (in order) -> their chunks, interleaved within groups; see docs/packing.md."""
    rng = np.random.default_rng([seed, 1])
    L = seg.length
    n = len(L)
    group = seg.starts() // room
    eligible = (L >= settings["min_tokens"]) & (L <= settings["max_tokens"])
    lo_k, hi_k = settings["chunks"]
    k = np.ones(n, dtype=np.int64)
    k[eligible] = rng.integers(lo_k, hi_k + 1, size=int(eligible.sum()))
    # k-1 distinct cut points per document, uniform over the allowed integers: the j-th draw picks
    # among the values not yet taken, shifted past the taken ones in increasing order
    cut_lo, cut_hi = _cut_bounds(L, settings["cut_range"])
    m = k - 1
    cuts = np.full((n, max(hi_k - 1, 1)), np.iinfo(np.int64).max, dtype=np.int64)
    for j in range(hi_k - 1):
        active = np.flatnonzero(m > j)
        if not len(active):
            break
        v = cut_lo[active] + rng.integers(0, cut_hi[active] - cut_lo[active] + 1 - j)
        for c in range(j):
            v += v >= cuts[active, c]
        cuts[active, j] = v
        cuts[active, : j + 1] = np.sort(cuts[active, : j + 1], axis=1)
    starts = np.concatenate([np.zeros((n, 1), dtype=np.int64), cuts], axis=1)
    valid = np.arange(starts.shape[1])[None, :] < k[:, None]
    chunk_off = starts[valid]  # row-major: documents in order, chunks in order
    chunk_doc = np.repeat(np.arange(n), k)
    last = np.ones(len(chunk_off), dtype=bool)
    last[:-1] = chunk_doc[1:] != chunk_doc[:-1]
    chunk_end = np.where(last, L[chunk_doc], np.roll(chunk_off, -1))
    # a uniformly random interleaving per group that keeps each document's chunks in order: random
    # keys, the j-th chunk of a document taking the j-th smallest of its document's keys
    keys = rng.random(len(chunk_off))
    keys = keys[np.lexsort((keys, chunk_doc))]
    final = np.lexsort((keys, group[chunk_doc]))
    info.extra.update(documents_interleaved=int((k > 1).sum()), chunks=int(len(chunk_off)))
    return _Segments(
        seg.src[chunk_doc[final]] + chunk_off[final], (chunk_end - chunk_off)[final], seg.unit[chunk_doc[final]]
    )


def _tag_windows(seg: _Segments, tags: Tags, room: int, n_tokens: int):
    """Documents (in order) -> tag and text segments cut into windows, each continuation re-tagged.

    Returns the segments, the tag bank (a tag segment's ``src`` is ``n_tokens`` + its offset in it) and,
    per window, the position (in document order) of the document whose tag it repeats, or -1.
    """
    table = [np.asarray(t, dtype=np.int64) for t in tags.table]
    tag_len = np.array([len(t) for t in table], dtype=np.int64)
    bank_off = np.zeros(len(table) + 1, dtype=np.int64)
    np.cumsum(tag_len, out=bank_off[1:])
    bank = np.concatenate(table) if table else np.zeros(0, dtype=np.int64)
    which = tags.index[seg.unit]
    t = tag_len[which]
    if len(t) and t.min() < 1:
        raise RopeextError("anchor_tag: a document has an empty tag (the tag template rendered no tokens)")
    if len(t) and t.max() > room - 1:
        raise RopeextError(
            f"anchor_tag: a tag of {int(t.max())} tokens leaves no room for the document in a window "
            f"of {room + 1} (anchor + tag + at least one token); use a shorter packing.tag_template "
            f"or a larger window"
        )
    n = len(t)
    doc_start = np.zeros(n + 1, dtype=np.int64)  # of each tagged document in the base stream (tags once)
    np.cumsum(t + seg.length, out=doc_start[1:])
    total = int(doc_start[-1])
    # base segments: tag, text, tag, text, ...
    base = _Segments(
        np.empty(2 * n, dtype=np.int64),
        np.empty(2 * n, dtype=np.int64),
        np.repeat(seg.unit, 2),
        np.tile([True, False], n),
    )
    base.src[0::2] = n_tokens + bank_off[which]
    base.src[1::2] = seg.src
    base.length[0::2] = t
    base.length[1::2] = seg.length
    base_start = base.starts()

    # window by window: a window starting inside a document first repeats its tag, then takes the
    # document's text from where the previous window stopped (from its first token if a tag was cut)
    starts_list = doc_start[:-1].tolist()
    t_list = t.tolist()
    a, b, retag = [], [], []
    p = 0
    while p < total:
        i = bisect.bisect_right(starts_list, p) - 1
        if p > starts_list[i]:
            p = max(p, starts_list[i] + t_list[i])
            cap = room - t_list[i]
            retag.append(i)
        else:
            cap = room
            retag.append(-1)
        a.append(p)
        p = min(p + cap, total)
        b.append(p)
    a, b, retag = (np.asarray(x, dtype=np.int64) for x in (a, b, retag))

    # the base segments cut to the windows' slices [a, b): elementary intervals between all breakpoints
    points = np.unique(np.concatenate([base_start, a, b]))
    points = points[points < total]
    ends = np.append(points[1:], total)
    slot = np.searchsorted(a, points, side="right") - 1
    inside = (slot >= 0) & (points < b[np.maximum(slot, 0)])
    points, ends = points[inside], ends[inside]
    s = np.searchsorted(base_start, points, side="right") - 1
    parts = _Segments(base.src[s] + points - base_start[s], ends - points, base.unit[s], base.tag[s])
    w = np.flatnonzero(retag >= 0)
    r = retag[w]
    again = _Segments(n_tokens + bank_off[which[r]], t[r], seg.unit[r], np.ones(len(r), dtype=bool))
    pos = np.concatenate([points, a[w]])
    kind = np.concatenate([np.ones(len(points), dtype=np.int8), np.zeros(len(w), dtype=np.int8)])
    final = np.lexsort((kind, pos))  # a repeated tag goes in front of its window's first interval
    out = _Segments(
        *(np.concatenate([getattr(parts, f), getattr(again, f)])[final] for f in ("src", "length", "unit", "tag"))
    )
    return out, bank, retag


def _columns(
    tokens,
    bank,
    seg: _Segments,
    W: int,
    n_win: int,
    used: int,
    layout: str,
    anchor_id: int,
    pad_id: int,
    mask_boundary: bool,
) -> dict[str, np.ndarray]:
    """``n_win`` windows from ``seg``, segments starting at the first window's column 1 and holding
    ``used`` tokens in all (fewer than the windows' room only when the last window is padded)."""
    room = W - 1
    length = seg.length
    seg_start = seg.starts()
    size = n_win * room
    is_tag = np.repeat(seg.tag, length)[:used] if seg.tag is not None and seg.tag.any() else None

    # stream[j] = source[j + shift of j's segment], gathered without a Python loop over tokens
    shift = np.repeat(seg.src - seg_start, length)[:used]
    shift += np.arange(used, dtype=np.int64)
    body = np.full(size, pad_id, dtype=np.int32)
    if is_tag is None:
        body[:used] = tokens[shift]
    else:
        body[:used] = tokens.take(shift, mode="clip")
        body[:used][is_tag] = bank[shift[is_tag] - len(tokens)]
    del shift

    # runs: maximal stretches of one document inside a window. A segment continues the previous
    # one (no new run) when it is the text right after its own tag, or the next source tokens of
    # the same document; every window's first column starts a run.
    joined = np.zeros(len(length), dtype=bool)
    if len(length) > 1:
        contiguous = seg.src[1:] == seg.src[:-1] + length[:-1]
        if seg.tag is not None:  # or the text right after its own tag
            contiguous = (contiguous & (seg.tag[1:] == seg.tag[:-1])) | (seg.tag[:-1] & ~seg.tag[1:])
        joined[1:] = (seg.unit[1:] == seg.unit[:-1]) & contiguous
    run_start = np.unique(
        np.concatenate([seg_start[~joined & (seg_start < used)], np.arange(n_win, dtype=np.int64) * room])
    )
    run_len = np.diff(np.append(run_start, used))
    run_unit = seg.unit[np.searchsorted(seg_start, run_start, side="right") - 1]
    run_row = run_start // room

    # doc ids: a window's documents numbered by first appearance (a document's runs share its id)
    key = run_row * (int(seg.unit.max(initial=0)) + 1) + run_unit
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    appear = np.argsort(first, kind="stable")
    rows_sorted = run_row[first[appear]]
    rank = np.empty(len(first), dtype=np.int64)
    rank[appear] = np.arange(len(first)) - np.searchsorted(rows_sorted, rows_sorted, side="left")
    doc_body = np.full(size, PAD_DOC, dtype=np.int32)
    doc_body[:used] = np.repeat((rank[inverse] + 1).astype(np.int32), run_len)

    input_ids = np.empty((n_win, W), dtype=np.int32)
    input_ids[:, 0] = anchor_id
    input_ids[:, 1:] = body.reshape(n_win, room)
    doc_ids = np.empty((n_win, W), dtype=np.int32)
    doc_ids[:, 0] = 0
    doc_ids[:, 1:] = doc_body.reshape(n_win, room)
    position_ids = np.empty((n_win, W), dtype=np.int32)
    position_ids[:] = np.arange(W, dtype=np.int32)
    if layout == "intra_doc_reset" and used:
        run_col = np.zeros(size, dtype=np.int32)  # each token's run start, as a body column
        run_col[:used] = np.repeat((run_start % room).astype(np.int32), run_len)
        position_ids[:, 1:] -= 1 + run_col.reshape(n_win, room)

    # labels[t] = input_ids[t+1], masked before every run start (with mask_boundary), before every
    # tag token, at the last column and at and before padding
    masked_next = np.zeros(size, dtype=bool)
    if mask_boundary:
        masked_next[run_start] = True
    if is_tag is not None:
        masked_next[:used] |= is_tag
    masked_next[used:] = True
    labels = np.empty((n_win, W), dtype=np.int32)
    labels[:, :-1] = input_ids[:, 1:]
    labels[:, :-1][masked_next.reshape(n_win, room)] = IGNORE_INDEX
    labels[:, -1] = IGNORE_INDEX
    if used < size:  # padding (the last window only): doc id -1, position = column, never attended
        pad_from = 1 + used - (n_win - 1) * room
        position_ids[-1, pad_from:] = np.arange(pad_from, W, dtype=np.int32)
        labels[-1, pad_from - 1 :] = IGNORE_INDEX

    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "doc_ids": doc_ids}


def window_stats(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-window counts of packed windows (``packing_stats`` turns them into totals); the rows of a
    packing taken a range at a time give, concatenated (``concat_window_stats``), those of the whole."""
    doc_ids = np.asarray(columns["doc_ids"])
    labels = np.asarray(columns["labels"])
    n_win, W = doc_ids.shape if doc_ids.ndim == 2 else (0, 0)
    docs = doc_ids.max(axis=1).clip(min=0) if n_win else np.zeros(0, dtype=np.int64)
    real = (doc_ids > 0).sum(axis=1) if n_win else np.zeros(0, dtype=np.int64)
    label_tokens = (labels != IGNORE_INDEX).sum(axis=1) if n_win else np.zeros(0, dtype=np.int64)
    padding = (doc_ids == PAD_DOC).sum(axis=1) if n_win else np.zeros(0, dtype=np.int64)
    # sum over the documents of a window of (tokens)^2, over W^2 (anchor and padding excluded):
    # the attention cost of the per-document masks
    sum_sq = np.zeros(n_win, dtype=np.float64)
    gapped = np.zeros(n_win, dtype=np.int64)
    if n_win:
        flat_doc = doc_ids.astype(np.int64) + (np.arange(n_win, dtype=np.int64) * (W + 2))[:, None]
        valid = doc_ids > 0
        counts = np.bincount(flat_doc[valid], minlength=n_win * (W + 2)).reshape(n_win, W + 2)
        sum_sq = (counts.astype(np.float64) ** 2).sum(axis=1) / float(W) ** 2
        run_first = valid.copy()
        run_first[:, 1:] &= doc_ids[:, 1:] != doc_ids[:, :-1]
        runs = np.bincount(flat_doc[run_first], minlength=n_win * (W + 2)).reshape(n_win, W + 2)
        gapped = (runs > 1).sum(axis=1)
    return {
        "window": np.array(W, dtype=np.int64),
        "docs": docs,
        "real": real,
        "label_tokens": label_tokens,
        "padding": padding,
        "sum_sq": sum_sq,
        "gapped": gapped,
    }


def concat_window_stats(parts: list[dict[str, np.ndarray]], window: int) -> dict[str, np.ndarray]:
    """``window_stats`` of consecutive ranges of windows of width ``window``, joined in order."""
    if not parts:
        return window_stats(
            {"doc_ids": np.zeros((0, window), dtype=np.int32), "labels": np.zeros((0, window), dtype=np.int32)}
        )
    return {
        "window": np.array(window, dtype=np.int64),
        **{k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "window"},
    }


def packing_stats(columns: dict[str, np.ndarray], info: PackInfo | None = None, per_window: bool = True) -> dict:
    """Per-window statistics and totals of packed windows (``gapped_docs``: documents not contiguous there)."""
    return stats_from_windows(window_stats(columns), info, per_window)


def stats_from_windows(counts: dict[str, np.ndarray], info: PackInfo | None = None, per_window: bool = True) -> dict:
    """``packing_stats`` from the per-window counts of ``window_stats``."""
    W = int(counts["window"])
    docs, real, label_tokens = counts["docs"], counts["real"], counts["label_tokens"]
    sum_sq, gapped = counts["sum_sq"], counts["gapped"]
    n_win = len(docs)
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
        "padding_tokens": int(counts["padding"].sum()),
        "gapped_document_pieces": int(gapped.sum()),
        "frac_windows_with_gapped_docs": float((gapped > 0).mean()) if n_win else 0.0,
    }
    if info is not None:
        totals.update(
            {
                "documents": info.documents_kept,
                "documents_in": info.documents_in,
                "documents_dropped_short": info.documents_dropped_short,
                "tokens_dropped_short": info.tokens_dropped_short,
                "tokens_dropped_last": info.tokens_dropped_last,
            }
        )
        if "documents_interleaved" in info.extra:
            totals.update(
                {
                    "documents_interleaved": info.extra["documents_interleaved"],
                    "frac_documents_interleaved": info.extra["documents_interleaved"] / max(info.documents_kept, 1),
                    "chunks": info.extra["chunks"],
                }
            )
        if "tag_tokens" in info.extra:
            totals.update(
                {
                    "tag_tokens": info.extra["tag_tokens"],
                    "frac_tag_tokens": info.extra["tag_tokens"] / max(int(real.sum()), 1),
                    "retagged_pieces": info.extra["retagged_pieces"],
                }
            )
    out = {"totals": totals}
    if per_window:
        out["per_window"] = {
            "docs": docs.astype(int).tolist(),
            "document_tokens": real.astype(int).tolist(),
            "label_tokens": label_tokens.astype(int).tolist(),
            "crosses_boundary": crossing.astype(bool).tolist(),
            "sum_sq_doc_len_over_w2": [round(float(x), 6) for x in sum_sq],
            "gapped_docs": gapped.astype(int).tolist(),
        }
        if info is not None:
            for name, values in info.per_window.items():
                out["per_window"][name] = np.asarray(values).tolist()
    return out
