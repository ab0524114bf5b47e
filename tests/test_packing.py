"""Packing layouts, attention masks and the `ropeext pack` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ropeext.attention.masks import attention_mask
from ropeext.data.packing import (
    INTERLEAVED,
    LAYOUTS,
    TAGGED,
    Tags,
    attention_rule,
    check_interleave,
    pack_documents,
    pack_flat,
    packing_stats,
    render_tag,
)
from ropeext.errors import RopeextError

A = 1  # anchor id used in the hand-made examples
DOCS = [[10, 11, 12, 13, 14], [20, 21], [30, 31, 32], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49]]
IL = {"min_tokens": 8, "max_tokens": 60, "chunks": [2, 3], "cut_range": [0.2, 0.8]}
NO_CUTS = {**IL, "min_tokens": 500, "max_tokens": 500}  # no document of the examples is long enough
PLAIN = [lay for lay in LAYOUTS if lay not in TAGGED]


def _kw(layout, n, rng=None, interleave=IL):
    if layout in INTERLEAVED:
        return {"interleave": interleave}
    if layout in TAGGED:
        rng = rng or np.random.default_rng(0)
        return {"tags": [[500 + i] * (1 + i) for i in rng.integers(0, 3, n)]}
    return {}


def _order(seed, n):
    return list(np.random.default_rng(seed).permutation(n))


def test_hand_made_windows_every_layout():
    # [20, 21] has 2 tokens and is dropped; seed 0 orders the kept documents 40.., 10.., 30..
    kept = [DOCS[0], DOCS[2], DOCS[3]]
    assert [kept[i][0] for i in _order(0, 3)] == [40, 10, 30]
    expect_ids = [[A, 40, 41, 42, 43, 44, 45, 46], [A, 47, 48, 49, 10, 11, 12, 13], [A, 14, 30, 31, 32, 0, 0, 0]]
    expect_doc = [[0, 1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 2, 2, 2, 2], [0, 1, 2, 2, 2, -1, -1, -1]]
    expect_labels = [
        [-100, 41, 42, 43, 44, 45, 46, -100],
        [-100, 48, 49, -100, 11, 12, 13, -100],
        [-100, -100, 31, 32, -100, -100, -100, -100],
    ]
    continuous = [list(range(8))] * 3
    expect_pos = {
        "full": continuous,
        "intra_doc": continuous,
        "anchor": continuous,
        "intra_doc_reset": [[0, 0, 1, 2, 3, 4, 5, 6], [0, 0, 1, 2, 0, 1, 2, 3], [0, 0, 0, 1, 2, 5, 6, 7]],
        # no document to cut: the interleaved layouts are their plain counterparts
        "intra_doc_interleaved": continuous,
        "anchor_interleaved": continuous,
    }
    for layout in PLAIN:
        out = pack_documents(DOCS, 8, layout, A, seed=0, pad_last=True, pad_id=0, **_kw(layout, 4, interleave=NO_CUTS))
        assert set(out) == {"input_ids", "labels", "position_ids", "doc_ids"}
        for col in out.values():
            assert col.dtype == np.int32 and col.shape == (3, 8)
        assert out["input_ids"].tolist() == expect_ids
        assert out["doc_ids"].tolist() == expect_doc
        assert out["labels"].tolist() == expect_labels
        assert out["position_ids"].tolist() == expect_pos[layout], layout


def test_unmasked_boundary_labels_and_drop_last():
    out = pack_documents(DOCS, 8, "anchor", A, seed=0, mask_boundary_labels=False)
    assert out["input_ids"].shape == (2, 8)  # last partial window dropped
    assert out["labels"].tolist() == [[40, 41, 42, 43, 44, 45, 46, -100], [47, 48, 49, 10, 11, 12, 13, -100]]


def test_hand_made_masks():
    doc = np.array([0, 1, 1, 2, 2, -1])
    full = attention_mask(doc, "full").astype(int).tolist()
    assert full == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ]
    intra = attention_mask(doc, "intra_doc").astype(int).tolist()
    assert intra == [
        [1, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ]
    assert (attention_mask(doc, "intra_doc_reset") == attention_mask(doc, "intra_doc")).all()
    anchor = attention_mask(doc, "anchor").astype(int).tolist()
    assert anchor == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [1, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ]
    assert (attention_mask(doc, "anchor_tag") == attention_mask(doc, "anchor")).all()
    # a document interrupted by another: its later piece sees its earlier one, not the one between
    gap = np.array([0, 1, 2, 1, -1])
    assert attention_mask(gap, "intra_doc_interleaved").astype(int).tolist() == [
        [1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    assert attention_mask(gap, "anchor_interleaved").astype(int).tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 0, 1, 0, 0],
        [1, 1, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]


def _brute_mask(doc, layout):
    layout = attention_rule(layout)
    W = len(doc)
    m = np.zeros((W, W), dtype=bool)
    for q in range(W):
        for k in range(W):
            if q == k:
                m[q, k] = True
            elif k > q or doc[q] == -1 or doc[k] == -1:
                continue
            elif layout == "full":
                m[q, k] = True
            elif layout == "anchor":
                m[q, k] = doc[q] == doc[k] or doc[k] == 0
            else:
                m[q, k] = doc[q] == doc[k]
    return m


def _random_docs(rng, n=40, hi=30):
    return [list(rng.integers(3, 300, rng.integers(1, hi))) for _ in range(n)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_masks_match_brute_force_on_packed_windows(layout):
    docs = _random_docs(np.random.default_rng(1))
    out = pack_documents(docs, 24, layout, A, pad_last=True, **_kw(layout, len(docs)))
    for row in out["doc_ids"]:
        assert (attention_mask(row, layout) == _brute_mask(row, layout)).all()


@pytest.mark.parametrize("W", [3, 7, 64])
def test_policy_invariants(W):
    rng = np.random.default_rng(W)
    docs = _random_docs(rng, n=60, hi=3 * W)
    kept = [d for d in docs if len(d) > 2]
    for pad_last in (False, True):
        out = pack_documents(docs, W, "intra_doc_reset", A, seed=3, pad_last=pad_last)
        ids, doc, pos, lab = (out[k] for k in ("input_ids", "doc_ids", "position_ids", "labels"))
        assert (ids[:, 0] == A).all() and (doc[:, 0] == 0).all() and (pos[:, 0] == 0).all()
        # the document tokens, read window by window, are the kept documents in the seeded order
        stream = np.concatenate([kept[i] for i in _order(3, len(kept))])
        body = ids[:, 1:][doc[:, 1:] > 0]
        assert body.tolist() == stream[: len(body)].tolist()
        total = len(stream)
        assert len(body) == (total if pad_last else total // (W - 1) * (W - 1))
        for r in range(len(ids)):
            d = doc[r]
            # doc ids start at 1 and grow by one at each boundary; padding only at the tail
            real = d[1:][d[1:] > 0]
            assert real[0] == 1 and set(np.diff(real)) <= {0, 1}
            n_real = 1 + len(real)
            assert (d[n_real:] == -1).all()
            for t in range(W):
                # reset positions count from 0 inside each piece
                if d[t] > 0:
                    first = np.flatnonzero(d == d[t])[0]
                    assert pos[r, t] == t - first
                # labels: the next token inside the same piece, else -100
                ok = t + 1 < W and d[t] == d[t + 1] and d[t] > 0
                assert lab[r, t] == (ids[r, t + 1] if ok else -100)
        # a split document continues in the next window, right after the anchor
        for r in range(len(ids) - 1):
            last = doc[r, -1]
            piece_end = ids[r, 1:][doc[r, 1:] == last]
            nxt = ids[r + 1, 1:][doc[r + 1, 1:] == 1]
            joined = np.concatenate([piece_end, nxt]).tolist()
            s = stream.tolist()
            start = (W - 1) * r + int(np.sum(doc[r, 1:] != last))
            assert s[start : start + len(joined)] == joined


def test_seed_changes_order_only():
    docs = _random_docs(np.random.default_rng(5), n=50)
    a = pack_documents(docs, 32, "anchor", A, seed=0)
    b = pack_documents(docs, 32, "anchor", A, seed=0)
    c = pack_documents(docs, 32, "anchor", A, seed=1)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["input_ids"] == c["input_ids"]).all()
    assert sorted(a["input_ids"].ravel().tolist()) != [] and a["input_ids"].shape == c["input_ids"].shape


def test_pack_flat_agrees_with_lists_and_counts():
    docs = _random_docs(np.random.default_rng(6), n=30)
    lens = np.array([len(d) for d in docs])
    offsets = np.concatenate([[0], np.cumsum(lens)])
    cols, info = pack_flat(np.concatenate(docs), offsets, 16, "full", A, seed=2)
    ref = pack_documents(docs, 16, "full", A, seed=2)
    assert all((cols[k] == ref[k]).all() for k in ref)
    assert info.documents_dropped_short == int((lens <= 2).sum())
    assert info.tokens_kept + info.tokens_dropped_last == int(lens[lens > 2].sum())
    assert info.tokens_kept == cols["input_ids"].shape[0] * 15


def test_stats():
    out = pack_documents(DOCS, 8, "anchor", A, seed=0, pad_last=True)
    st = packing_stats(out)
    t, w = st["totals"], st["per_window"]
    assert t["windows"] == 3 and w["docs"] == [1, 2, 2]
    assert w["crosses_boundary"] == [False, True, True]
    assert t["frac_windows_crossing_boundary"] == pytest.approx(2 / 3)
    assert w["sum_sq_doc_len_over_w2"] == pytest.approx([49 / 64, (9 + 16) / 64, (1 + 9) / 64])
    assert t["padding_tokens"] == 3 and t["label_tokens"] == (out["labels"] != -100).sum()


@pytest.mark.parametrize("bad", [2, 0, -5, 2.5])
def test_bad_window(bad):
    with pytest.raises(RopeextError, match="window"):
        pack_documents(DOCS, bad, "full", A)


def test_bad_layout():
    with pytest.raises(RopeextError, match="unknown packing layout 'diagonal'"):
        pack_documents(DOCS, 8, "diagonal", A)
    with pytest.raises(RopeextError, match="layout"):
        attention_mask(np.zeros(4, dtype=int), "diagonal")


# --- interleaved chunks ------------------------------------------------------------------------

BASE = 10_000  # document i, token j is BASE + 1000 i + j: every token says where it comes from


def _coded_docs(rng, n, lo, hi):
    return [[BASE + 1000 * i + j for j in range(int(rng.integers(lo, hi)))] for i in range(n)]


def _decode(ids):
    return (ids - BASE) // 1000, (ids - BASE) % 1000


@pytest.mark.parametrize("W", [16, 64, 97])
@pytest.mark.parametrize("layout", INTERLEAVED)
def test_interleaved_invariants(W, layout):
    rng = np.random.default_rng(W)
    docs = _coded_docs(rng, 80, 1, 70)
    lens = np.array([len(d) for d in docs])
    cols, info = pack_flat(
        np.concatenate(docs), np.concatenate([[0], np.cumsum(lens)]), W, layout, A, seed=5, pad_last=True, interleave=IL
    )
    ids, doc, pos, lab = (cols[k] for k in ("input_ids", "doc_ids", "position_ids", "labels"))
    room = W - 1
    assert (ids[:, 0] == A).all() and (doc[:, 0] == 0).all()
    assert (pos == np.arange(W)).all()  # positions stay the columns: never reset, gaps not closed
    src, off = _decode(ids)
    real = doc > 0
    # the stream (window bodies one after another): every kept token exactly once, each document in order
    body_real = real[:, 1:].reshape(-1)
    s_src, s_off = src[:, 1:].reshape(-1)[body_real], off[:, 1:].reshape(-1)[body_real]
    s_at = np.flatnonzero(body_real)  # stream position
    kept = np.flatnonzero(lens > 2)
    assert sorted(set(s_src.tolist())) == kept.tolist() and len(s_src) == lens[kept].sum()
    # the plain stream of the same seed: documents in the same order, each group = documents that
    # begin in one window; interleaving stays inside the group's stretch of the stream
    plain = pack_documents(docs, W, "intra_doc", A, seed=5, pad_last=True)
    p_src = _decode(plain["input_ids"][:, 1:].reshape(-1)[plain["doc_ids"][:, 1:].reshape(-1) > 0])[0]
    order = p_src[np.r_[True, p_src[1:] != p_src[:-1]]]
    start = np.concatenate([[0], np.cumsum(lens[order])])
    group = start[:-1] // room
    cut_docs = 0
    for i, d in enumerate(order):
        at = s_at[s_src == d]
        o = s_off[s_src == d]
        assert o.tolist() == list(range(lens[d]))  # in order, each token once
        g = group == group[i]
        assert start[:-1][g].min() <= at.min() and at.max() < start[1:][g].max()
        breaks = o[1:][np.diff(at) > 1]  # first token of a chunk after a gap
        if len(breaks):
            cut_docs += 1
            L = lens[d]
            assert IL["min_tokens"] <= L <= IL["max_tokens"] and len(breaks) <= 2
            assert (breaks >= np.ceil(0.2 * L)).all() and (breaks <= np.floor(0.8 * L)).all()
    # only documents that begin in the same window are interleaved: windows of 16 hold one or two
    assert cut_docs >= (3 if W >= 64 else 0)
    # doc ids: one per source document in a window, numbered by first appearance
    gapped = 0
    for r in range(len(ids)):
        m = real[r]
        pairs = set(zip(doc[r, m].tolist(), src[r, m].tolist()))
        assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})
        firsts = doc[r, m][np.unique(doc[r, m], return_index=True)[1]]
        assert sorted(firsts.tolist()) == list(range(1, len(firsts) + 1))
        seen = []
        for d in doc[r, m].tolist():
            if d not in seen:
                seen.append(d)
        assert seen == list(range(1, len(seen) + 1))
        for d in seen:
            c = np.flatnonzero(doc[r] == d)
            gapped += int(c[-1] - c[0] + 1 != len(c))
        # labels: the next token of the same document, adjacent in the window; never across a gap
        for t in range(W):
            ok = (
                1 <= t < W - 1
                and real[r, t + 1]
                and real[r, t]
                and src[r, t] == src[r, t + 1]
                and off[r, t + 1] == off[r, t] + 1
            )
            assert lab[r, t] == (ids[r, t + 1] if ok else -100)
    st = packing_stats(cols, info)["totals"]
    assert gapped >= (3 if W >= 64 else 0) and st["gapped_document_pieces"] == gapped
    assert 0 < st["frac_documents_interleaved"] == info.extra["documents_interleaved"] / len(kept) < 1
    assert info.extra["documents_interleaved"] == int(((lens >= 8) & (lens <= 60)).sum())


def test_interleave_draws_chunks_and_cut_points_uniformly():
    from ropeext.data.packing import PackInfo, _interleave, _Segments

    n, L = 3000, 100
    seg = _Segments(np.arange(n) * L, np.full(n, L), np.arange(n))
    out = _interleave(seg, 1023, check_interleave({**IL, "max_tokens": 2048}), seed=3, info=PackInfo())
    chunks = np.bincount(out.unit, minlength=n)
    assert set(chunks.tolist()) == {2, 3} and abs((chunks == 3).mean() - 0.5) < 0.05
    cuts = (out.src - out.unit * L)[out.src != out.unit * L]
    assert cuts.min() == 20 and cuts.max() == 80 and len(np.unique(cuts)) == 61
    assert np.bincount(cuts)[20:81].min() > 0.5 * len(cuts) / 61
    for u in range(50):  # each document: chunks in order, distinct cuts, covering it exactly
        mine = out.src[out.unit == u] - u * L
        assert (np.diff(mine) > 0).all() and mine[0] == 0 and out.length[out.unit == u].sum() == L


def test_interleaved_is_seeded_and_keeps_the_document_order_elsewhere():
    docs = _coded_docs(np.random.default_rng(9), 60, 3, 70)
    a = pack_documents(docs, 64, "anchor_interleaved", A, seed=1, interleave=IL)
    b = pack_documents(docs, 64, "anchor_interleaved", A, seed=1, interleave=IL)
    c = pack_documents(docs, 64, "anchor_interleaved", A, seed=2, interleave=IL)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["input_ids"] == c["input_ids"]).all()
    i = pack_documents(docs, 64, "intra_doc_interleaved", A, seed=1, interleave=IL)
    assert all((a[k] == i[k]).all() for k in a)  # the two interleaved layouts share their windows


@pytest.mark.parametrize(
    "bad, match",
    [
        ({**IL, "chunks": [1, 3]}, "chunks"),
        ({**IL, "chunks": [3, 2]}, "chunks"),
        ({**IL, "cut_range": [0.8, 0.2]}, "cut_range"),
        ({**IL, "cut_range": [0.0, 0.5]}, "cut_range"),
        ({**IL, "min_tokens": 100, "max_tokens": 50}, "min_tokens"),
        ({**IL, "min_tokens": 3, "chunks": [2, 4]}, "a document of 3 tokens has fewer than 3 cut points"),
        ({"min_tokens": 8}, "expected the keys"),
    ],
)
def test_bad_interleave_settings(bad, match):
    with pytest.raises(RopeextError, match=match):
        pack_documents(DOCS, 8, "intra_doc_interleaved", A, interleave=bad)


def test_layout_settings_are_required_and_exclusive():
    with pytest.raises(RopeextError, match="interleave settings are required"):
        pack_documents(DOCS, 8, "anchor_interleaved", A)
    with pytest.raises(RopeextError, match="only used by the interleaved layouts"):
        pack_documents(DOCS, 8, "anchor", A, interleave=IL)
    with pytest.raises(RopeextError, match="tags are required"):
        pack_documents(DOCS, 8, "anchor_tag", A)
    with pytest.raises(RopeextError, match="only used by anchor_tag"):
        pack_documents(DOCS, 8, "anchor", A, tags=[[5]] * 4)


# --- domain tags -------------------------------------------------------------------------------


def test_anchor_tag_hand_made():
    # seed 0 orders the kept documents 40.. (tag 101), 10.. (tag 100), 30.. (tag 102 103)
    tags = [[100], [101], [102, 103], [101]]
    out = pack_documents(DOCS, 8, "anchor_tag", A, seed=0, pad_last=True, pad_id=0, tags=tags)
    assert out["input_ids"].tolist() == [
        [A, 101, 40, 41, 42, 43, 44, 45],
        [A, 101, 46, 47, 48, 49, 100, 10],  # continuation: tag again
        [A, 100, 11, 12, 13, 14, 102, 103],  # a tag with no room left ...
        [A, 102, 103, 30, 31, 32, 0, 0],
    ]  # ... comes again, whole
    assert out["doc_ids"].tolist() == [
        [0, 1, 1, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 1, 2, 2],
        [0, 1, 1, 1, 1, 1, 2, 2],
        [0, 1, 1, 1, 1, 1, -1, -1],
    ]
    # no label predicts a tag token; the last tag token predicts the first text token
    assert out["labels"].tolist() == [
        [-100, 40, 41, 42, 43, 44, 45, -100],
        [-100, 46, 47, 48, 49, -100, 10, -100],
        [-100, 11, 12, 13, 14, -100, -100, -100],
        [-100, -100, 30, 31, 32, -100, -100, -100],
    ]
    assert (out["position_ids"] == np.arange(8)).all()
    loose = pack_documents(
        DOCS, 8, "anchor_tag", A, seed=0, pad_last=True, pad_id=0, tags=tags, mask_boundary_labels=False
    )
    assert loose["labels"].tolist() == out["labels"].tolist()  # every boundary is before a tag


def test_anchor_tag_cut_inside_a_tag_starts_over():
    docs = [[10, 11, 12, 13, 14], [30, 31, 32]]
    tags = [[100], [102, 103, 104]]
    order = [docs[i][0] for i in _order(0, 2)]
    assert order == [10, 30]
    out = pack_documents(docs, 8, "anchor_tag", A, seed=0, pad_last=True, pad_id=0, tags=tags)
    assert out["input_ids"].tolist() == [[A, 100, 10, 11, 12, 13, 14, 102], [A, 102, 103, 104, 30, 31, 32, 0]]
    assert out["labels"].tolist() == [
        [-100, 10, 11, 12, 13, 14, -100, -100],
        [-100, -100, -100, 30, 31, 32, -100, -100],
    ]


@pytest.mark.parametrize("W", [8, 17, 64])
@pytest.mark.parametrize("pad_last", [False, True])
def test_anchor_tag_invariants(W, pad_last):
    rng = np.random.default_rng(W)
    docs = _coded_docs(rng, 50, 1, 3 * W)
    table = [[500], [501, 502], [503, 504, 505]]
    which = rng.integers(0, 3, len(docs))
    lens = np.array([len(d) for d in docs])
    cols, info = pack_flat(
        np.concatenate(docs),
        np.concatenate([[0], np.cumsum(lens)]),
        W,
        "anchor_tag",
        A,
        seed=2,
        pad_last=pad_last,
        tags=Tags(which, [np.array(t) for t in table]),
    )
    ids, doc, pos, lab = (cols[k] for k in ("input_ids", "doc_ids", "position_ids", "labels"))
    assert (pos == np.arange(W)).all() and (doc[:, 0] == 0).all()
    is_tag = (ids >= 500) & (ids < 1000)
    src, off = _decode(ids)
    n_tag = 0
    retagged = 0  # pieces that continue a document: mid-text, or after a tag the window edge left alone
    stream = []
    tag_alone = False
    for r in range(len(ids)):
        runs = [np.flatnonzero(doc[r] == d) for d in range(1, doc[r].max() + 1)]
        retagged += int(tag_alone)
        tag_alone = False
        for c in runs:
            assert c[-1] - c[0] + 1 == len(c)  # contiguous
            k = int(is_tag[r, c].sum())
            text = c[~is_tag[r, c]]
            assert is_tag[r, c[:k]].all()  # tag first, then text
            if len(text):
                d = int(src[r, text[0]])
                assert ids[r, c[:k]].tolist() == table[which[d]]  # the whole tag of its document
                assert off[r, text].tolist() == list(range(off[r, text[0]], off[r, text[0]] + len(text)))
                retagged += int(off[r, text[0]] > 0)
                stream += [(d, int(o)) for o in off[r, text]]
            else:  # a tag alone, only where the window ends; the next window starts with it again
                assert c[-1] == W - 1 and k >= 1
                tag_alone = True
                assert r + 1 == len(ids) or is_tag[r + 1, 1]
            n_tag += k
        for t in range(W - 1):
            ok = t >= 1 and doc[r, t] > 0 and doc[r, t] == doc[r, t + 1] and not is_tag[r, t + 1]
            assert lab[r, t] == (ids[r, t + 1] if ok else -100)
        assert lab[r, -1] == -100
    assert not is_tag[:, 1:][lab[:, :-1] != -100].any()  # belt and braces: never a tag target
    # every document's text, window by window, in the seeded order, each token once
    kept = [i for i in range(len(docs)) if lens[i] > 2]
    expect = [(i, j) for i in np.array(kept)[_order(2, len(kept))] for j in range(lens[i])]
    assert stream == expect[: len(stream)]
    if pad_last:
        assert len(stream) == len(expect)
    st = packing_stats(cols, info)
    assert st["totals"]["tag_tokens"] == n_tag == sum(st["per_window"]["tag_tokens"])
    assert st["per_window"]["tag_tokens"] == is_tag.sum(axis=1).tolist()
    assert st["totals"]["retagged_pieces"] == retagged > 0
    assert info.tokens_kept == len(stream) and info.tokens_kept + info.tokens_dropped_last == len(expect)
    assert info.extra["documents_per_tag"] == np.bincount(which[kept], minlength=3).tolist()


def test_anchor_tag_errors():
    with pytest.raises(RopeextError, match="tag of 7 tokens leaves no room"):
        pack_documents(DOCS, 8, "anchor_tag", A, tags=[[5] * 7] * 4)
    assert pack_documents(DOCS, 8, "anchor_tag", A, tags=[[5] * 6] * 4, pad_last=True)["input_ids"].shape[0] > 0
    with pytest.raises(RopeextError, match="empty tag"):
        pack_documents(DOCS, 8, "anchor_tag", A, tags=[[]] * 4)
    with pytest.raises(RopeextError, match="3 tags for 4 documents"):
        pack_documents(DOCS, 8, "anchor_tag", A, tags=[[5]] * 3)
    assert render_tag("<$domain> ", "Wikipedia") == "<Wikipedia> "
    assert render_tag("${domain}s cost $$1\n", "book") == "books cost $1\n"
    with pytest.raises(RopeextError, match="tag_template"):
        render_tag("no field {domain}", "x")
    with pytest.raises(RopeextError, match="only \\$domain"):
        render_tag("$domain $other", "x")


# --- the CLI -----------------------------------------------------------------------------------


def _write_docs(path, docs, extra=True):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"input_ids": pa.array(docs, type=pa.list_(pa.int32()))}
    if extra:
        cols["source"] = pa.array([f"doc{i}" for i in range(len(docs))])
    pq.write_table(pa.table(cols), path)


def test_cli_pack_roundtrip(tmp_path, tiny_tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ropeext.cli import main

    docs = _random_docs(np.random.default_rng(7), n=40, hi=40)
    docs = [[int(t) % 300 + 3 for t in d] for d in docs]
    _write_docs(tmp_path / "tok.parquet", docs)
    out = tmp_path / "packed" / "anchor.parquet"
    rc = main(
        [
            "pack",
            "--tokens",
            str(tmp_path / "tok.parquet"),
            "--tokenizer",
            str(tiny_tokenizer_dir),
            "--window",
            "32",
            "--layout",
            "anchor",
            "--output",
            str(out),
            "--seed",
            "4",
            "--pad-last",
            "--no-mlflow",
        ]
    )
    assert rc == 0
    table = pq.read_table(out)
    assert table.column_names == ["input_ids", "labels", "position_ids", "doc_ids"]
    ftype = table.schema.field("labels").type
    assert pa.types.is_list(ftype) and ftype.value_type == pa.int32()
    ref = pack_documents(docs, 32, "anchor", 1, seed=4, pad_last=True, pad_id=0)  # tiny tokenizer: <s>=1, <pad>=0
    for k in ref:
        assert np.array(table.column(k).to_pylist()).tolist() == ref[k].tolist()
    stats = json.loads((tmp_path / "packed" / "anchor.stats.json").read_text())
    assert stats["totals"]["windows"] == len(ref["input_ids"])
    assert stats["totals"]["documents"] == sum(len(d) > 2 for d in docs)
    assert len(stats["per_window"]["docs"]) == len(ref["input_ids"])
    assert not list((tmp_path / "packed").glob("*.tmp"))


def _run_err(capsys, argv):
    from ropeext.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def test_cli_bad_inputs(tmp_path, tiny_tokenizer_dir, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "tok.parquet"
    _write_docs(good, [[5, 6, 7, 8]] * 4)
    out = tmp_path / "out.parquet"
    base = ["pack", "--tokenizer", str(tiny_tokenizer_dir), "--output", str(out), "--no-mlflow"]

    flat = tmp_path / "flat.parquet"
    pq.write_table(pa.table({"input_ids": pa.array([5, 6, 7, 8], type=pa.int32())}), flat)
    rc, err = _run_err(capsys, base + ["--tokens", str(flat), "--window", "4", "--layout", "full"])
    assert rc == 2 and "without document boundaries" in err and "flat.parquet" in err

    nocol = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"text": ["a b c"]}), nocol)
    rc, err = _run_err(capsys, base + ["--tokens", str(nocol), "--window", "4", "--layout", "full"])
    assert rc == 2 and "without document boundaries" in err and "text" in err

    rc, err = _run_err(capsys, base + ["--tokens", str(good), "--window", "2", "--layout", "full"])
    assert rc == 2 and "window" in err and "> 2" in err

    rc, err = _run_err(
        capsys, base + ["--tokens", str(tmp_path / "missing.parquet"), "--window", "4", "--layout", "full"]
    )
    assert rc == 2 and "missing.parquet" in err

    big = tmp_path / "big.parquet"
    _write_docs(big, [[5, 6, 99999]] * 4)
    rc, err = _run_err(capsys, base + ["--tokens", str(big), "--window", "4", "--layout", "full"])
    assert rc == 2 and "99999" in err and "vocabulary" in err

    rc, err = _run_err(capsys, base + ["--tokens", str(good), "--window", "64", "--layout", "full"])
    assert rc == 2 and "no complete window" in err and "--pad-last" in err
    assert not out.exists()

    with pytest.raises(SystemExit):  # argparse rejects an unknown layout with its choices
        _run_err(capsys, base + ["--tokens", str(good), "--window", "4", "--layout", "diagonal"])
    assert "invalid choice: 'diagonal'" in capsys.readouterr().err


def test_cli_tokenizer_without_bos_or_eos(tmp_path, tiny_tokenizer_dir, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.bos_token = None
    tok.eos_token = None
    bare = tmp_path / "bare_tok"
    tok.save_pretrained(bare)
    good = tmp_path / "tok.parquet"
    _write_docs(good, [[5, 6, 7, 8]] * 4)
    rc, err = _run_err(
        capsys,
        [
            "pack",
            "--tokens",
            str(good),
            "--tokenizer",
            str(bare),
            "--window",
            "4",
            "--layout",
            "anchor",
            "--output",
            str(tmp_path / "o.parquet"),
            "--no-mlflow",
        ],
    )
    assert rc == 2 and "neither a BOS nor an EOS" in err


def _write_domains(path, docs, domains):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "input_ids": pa.array(docs, type=pa.list_(pa.int32())),
                "id": pa.array([f"doc{i}" for i in range(len(docs))]),
                "domain": pa.array(domains),
            }
        ),
        path,
    )


def _read_packed(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {k: np.array(table.column(k).to_pylist()) for k in table.column_names}


@pytest.mark.parametrize("template", [None, "<$domain> "])
def test_cli_pack_anchor_tag(tmp_path, tiny_tokenizer_dir, template):
    import yaml
    from transformers import AutoTokenizer

    from ropeext.cli import main

    rng = np.random.default_rng(8)
    docs = [[int(t) % 300 + 3 for t in d] for d in _random_docs(rng, n=40, hi=40)]
    domains = [["python", "prose", "The Stack"][i] for i in rng.integers(0, 3, len(docs))]
    _write_domains(tmp_path / "tok.parquet", docs, domains)
    argv = [
        "pack",
        "--tokens",
        str(tmp_path / "tok.parquet"),
        "--tokenizer",
        str(tiny_tokenizer_dir),
        "--window",
        "32",
        "--layout",
        "anchor_tag",
        "--output",
        str(tmp_path / "p" / "anchor_tag.parquet"),
        "--seed",
        "3",
        "--no-mlflow",
    ]
    if template is not None:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({"packing": {"tag_template": template}}))
        argv += ["--config", str(tmp_path / "c.yaml")]
    assert main(argv) == 0
    used = template or "$domain\n"  # the schema's default
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    text = {d: used.replace("$domain", d) for d in set(domains)}
    ids = {d: tok(text[d], add_special_tokens=False)["input_ids"] for d in set(domains)}
    ref = pack_documents(docs, 32, "anchor_tag", 1, seed=3, pad_id=0, tags=[ids[d] for d in domains])
    got = _read_packed(tmp_path / "p" / "anchor_tag.parquet")
    for k in ref:
        assert got[k].tolist() == ref[k].tolist(), k
    stats = json.loads((tmp_path / "p" / "anchor_tag.stats.json").read_text())
    assert stats["tag_template"] == used
    kept = [d for d, doc in zip(domains, docs) if len(doc) > 2]
    assert {d: (v["token_ids"], v["text"], v["documents"]) for d, v in stats["tags"].items()} == {
        d: (ids[d], text[d], kept.count(d)) for d in set(domains)
    }
    per = stats["per_window"]["tag_tokens"]
    assert len(per) == len(ref["input_ids"]) and sum(per) == stats["totals"]["tag_tokens"] > 0
    assert stats["totals"]["retagged_pieces"] == sum(stats["per_window"]["retagged"])


def test_cli_anchor_tag_needs_the_domain_column(tmp_path, tiny_tokenizer_dir, capsys):
    _write_docs(tmp_path / "tok.parquet", [[5, 6, 7, 8]] * 4)
    out = tmp_path / "o.parquet"
    rc, err = _run_err(
        capsys,
        [
            "pack",
            "--tokens",
            str(tmp_path / "tok.parquet"),
            "--tokenizer",
            str(tiny_tokenizer_dir),
            "--window",
            "4",
            "--layout",
            "anchor_tag",
            "--output",
            str(out),
            "--no-mlflow",
        ],
    )
    assert rc == 2 and "tok.parquet" in err and "`domain` column" in err and "tokenizer stage" in err
    assert not out.exists()
    _write_domains(tmp_path / "null.parquet", [[5, 6, 7, 8]] * 2, ["a", None])
    rc, err = _run_err(
        capsys,
        [
            "pack",
            "--tokens",
            str(tmp_path / "null.parquet"),
            "--tokenizer",
            str(tiny_tokenizer_dir),
            "--window",
            "4",
            "--layout",
            "anchor_tag",
            "--output",
            str(out),
            "--no-mlflow",
        ],
    )
    assert rc == 2 and "1 null rows" in err and not out.exists()


def test_cli_pack_interleaved_reads_its_settings_from_the_config(tmp_path, tiny_tokenizer_dir):
    import yaml

    from ropeext.cli import main

    docs = [[int(t) % 300 + 3 for t in d] for d in _random_docs(np.random.default_rng(9), n=60, hi=40)]
    _write_docs(tmp_path / "tok.parquet", docs)
    settings = {"min_tokens": 10, "max_tokens": 35, "chunks": [2, 3], "cut_range": [0.25, 0.75]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"packing": {"interleave": settings}}))
    out = tmp_path / "anchor_interleaved.parquet"
    assert (
        main(
            [
                "pack",
                "--tokens",
                str(tmp_path / "tok.parquet"),
                "--tokenizer",
                str(tiny_tokenizer_dir),
                "--window",
                "64",
                "--layout",
                "anchor_interleaved",
                "--output",
                str(out),
                "--seed",
                "2",
                "--config",
                str(tmp_path / "c.yaml"),
                "--no-mlflow",
            ]
        )
        == 0
    )
    ref = pack_documents(docs, 64, "anchor_interleaved", 1, seed=2, pad_id=0, interleave=settings)
    got = _read_packed(out)
    assert all(got[k].tolist() == ref[k].tolist() for k in ref)
    assert ref["input_ids"].tolist() != pack_documents(docs, 64, "anchor", 1, seed=2)["input_ids"].tolist()
    stats = json.loads((tmp_path / "anchor_interleaved.stats.json").read_text())
    assert stats["interleave"] == settings
    lens = np.array([len(d) for d in docs])
    assert stats["totals"]["documents_interleaved"] == int(((lens >= 10) & (lens <= 35)).sum())
    assert stats["totals"]["gapped_document_pieces"] > 0


def test_stats_count_gapped_documents():
    cols = {"doc_ids": np.array([[0, 1, 2, 1, 3, 2, 1], [0, 1, 1, 2, 2, -1, -1]]), "labels": np.full((2, 7), -100)}
    st = packing_stats(cols)
    assert st["per_window"]["gapped_docs"] == [2, 0] and st["per_window"]["docs"] == [3, 2]
    assert st["totals"]["gapped_document_pieces"] == 2 and st["totals"]["frac_windows_with_gapped_docs"] == 0.5
    assert st["per_window"]["sum_sq_doc_len_over_w2"] == pytest.approx([(9 + 4 + 1) / 49, (4 + 4) / 49], abs=1e-6)
