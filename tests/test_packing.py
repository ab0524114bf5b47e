"""Packing layouts, attention masks and the `ropeext pack` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ropeext.attention.masks import attention_mask
from ropeext.data.packing import LAYOUTS, pack_documents, pack_flat, packing_stats
from ropeext.errors import RopeextError

A = 1  # anchor id used in the hand-made examples
DOCS = [[10, 11, 12, 13, 14], [20, 21], [30, 31, 32], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49]]


def _order(seed, n):
    return list(np.random.default_rng(seed).permutation(n))


def test_hand_made_windows_every_layout():
    # [20, 21] has 2 tokens and is dropped; seed 0 orders the kept documents 40.., 10.., 30..
    kept = [DOCS[0], DOCS[2], DOCS[3]]
    assert [kept[i][0] for i in _order(0, 3)] == [40, 10, 30]
    expect_ids = [[A, 40, 41, 42, 43, 44, 45, 46],
                  [A, 47, 48, 49, 10, 11, 12, 13],
                  [A, 14, 30, 31, 32, 0, 0, 0]]
    expect_doc = [[0, 1, 1, 1, 1, 1, 1, 1],
                  [0, 1, 1, 1, 2, 2, 2, 2],
                  [0, 1, 2, 2, 2, -1, -1, -1]]
    expect_labels = [[-100, 41, 42, 43, 44, 45, 46, -100],
                     [-100, 48, 49, -100, 11, 12, 13, -100],
                     [-100, -100, 31, 32, -100, -100, -100, -100]]
    continuous = [list(range(8))] * 3
    expect_pos = {
        "full": continuous, "intra_doc": continuous, "anchor": continuous,
        "intra_doc_reset": [[0, 0, 1, 2, 3, 4, 5, 6],
                            [0, 0, 1, 2, 0, 1, 2, 3],
                            [0, 0, 0, 1, 2, 5, 6, 7]],
    }
    for layout in LAYOUTS:
        out = pack_documents(DOCS, 8, layout, A, seed=0, pad_last=True, pad_id=0)
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
    assert out["labels"].tolist() == [[40, 41, 42, 43, 44, 45, 46, -100],
                                      [47, 48, 49, 10, 11, 12, 13, -100]]


def test_hand_made_masks():
    doc = np.array([0, 1, 1, 2, 2, -1])
    full = attention_mask(doc, "full").astype(int).tolist()
    assert full == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                    [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]]
    intra = attention_mask(doc, "intra_doc").astype(int).tolist()
    assert intra == [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0],
                     [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]]
    assert (attention_mask(doc, "intra_doc_reset") == attention_mask(doc, "intra_doc")).all()
    anchor = attention_mask(doc, "anchor").astype(int).tolist()
    assert anchor == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                      [1, 0, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]]


def _brute_mask(doc, layout):
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
    out = pack_documents(_random_docs(np.random.default_rng(1)), 24, layout, A, pad_last=True)
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
        assert body.tolist() == stream[:len(body)].tolist()
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
            assert s[start:start + len(joined)] == joined


def test_seed_changes_order_only():
    docs = _random_docs(np.random.default_rng(5), n=50)
    a = pack_documents(docs, 32, "anchor", A, seed=0)
    b = pack_documents(docs, 32, "anchor", A, seed=0)
    c = pack_documents(docs, 32, "anchor", A, seed=1)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["input_ids"] == c["input_ids"]).all()
    assert sorted(a["input_ids"].ravel().tolist()) != [] and \
        a["input_ids"].shape == c["input_ids"].shape


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
    rc = main(["pack", "--tokens", str(tmp_path / "tok.parquet"), "--tokenizer", str(tiny_tokenizer_dir),
               "--window", "32", "--layout", "anchor", "--output", str(out), "--seed", "4", "--pad-last",
               "--no-mlflow"])
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

    rc, err = _run_err(capsys, base + ["--tokens", str(tmp_path / "missing.parquet"), "--window", "4",
                                       "--layout", "full"])
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
    rc, err = _run_err(capsys, ["pack", "--tokens", str(good), "--tokenizer", str(bare), "--window", "4",
                                "--layout", "anchor", "--output", str(tmp_path / "o.parquet"), "--no-mlflow"])
    assert rc == 2 and "neither a BOS nor an EOS" in err
