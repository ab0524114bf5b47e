"""Packing a range of windows at a time, and the streaming `ropeext pack`: the same windows, the same
statistics and the same file as the whole packing in memory."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ropeext.data import pack_stream
from ropeext.data.packing import (
    COLUMNS,
    INTERLEAVED,
    LAYOUTS,
    TAGGED,
    Tags,
    concat_window_stats,
    pack_documents,
    pack_flat,
    pack_windows,
    packing_stats,
    plan_packing,
    stats_from_windows,
    window_stats,
)

IL = {"min_tokens": 16, "max_tokens": 500, "chunks": [2, 3], "cut_range": [0.2, 0.8]}


def _corpus(seed=11, n=300):
    """Many short documents and some long ones (split over several windows), token ids 3..999."""
    rng = np.random.default_rng(seed)
    lens = np.where(rng.random(n) < 0.7, rng.integers(1, 40, n), rng.integers(100, 700, n))
    offsets = np.concatenate([[0], np.cumsum(lens)])
    tokens = rng.integers(3, 1000, int(offsets[-1]))
    tags = Tags(rng.integers(0, 3, n), [np.array([1001]), np.array([1002, 1003]), np.array([1004, 1005, 1006])])
    return tokens, offsets, tags


def _kw(layout, tags):
    return {"interleave": IL} if layout in INTERLEAVED else {"tags": tags} if layout in TAGGED else {}


def _digest(cols) -> str:
    h = hashlib.sha256()
    for k in COLUMNS:
        h.update(np.ascontiguousarray(cols[k], dtype="<i4").tobytes())
    return h.hexdigest()[:32]


# sha256 of the four columns packed by the implementation that built every window in one piece,
# before packing was split into a plan and ranges of windows (window 64, seed 3, last window padded)
PINNED = {
    "full": "4a86761c8a1ebf1c4955fb3a50b9125c",
    "intra_doc": "4a86761c8a1ebf1c4955fb3a50b9125c",
    "intra_doc_reset": "bfddd6847b2b06312932bda4f830fe47",
    "intra_doc_interleaved": "acfdbd3728d507d6fb2d9e669a2a526a",
    "anchor": "4a86761c8a1ebf1c4955fb3a50b9125c",
    "anchor_tag": "8e3b522c43caf6e644be4b45adb5faeb",
    "anchor_interleaved": "acfdbd3728d507d6fb2d9e669a2a526a",
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packing_output_is_pinned(layout):
    tokens, offsets, tags = _corpus()
    cols, _ = pack_flat(tokens, offsets, 64, layout, 1, 3, pad_last=True, pad_id=0, **_kw(layout, tags))
    assert _digest(cols) == PINNED[layout]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_windows_in_ranges_equal_the_whole_packing(layout):
    tokens, offsets, tags = _corpus()
    rng = np.random.default_rng(LAYOUTS.index(layout))
    for seed, W, pad_last, mask in ((0, 64, True, True), (1, 17, False, True), (2, 128, True, False)):
        kw = _kw(layout, tags)
        whole, info = pack_flat(
            tokens, offsets, W, layout, 1, seed, pad_last=pad_last, mask_boundary_labels=mask, pad_id=0, **kw
        )
        plan = plan_packing(offsets, W, layout, 1, seed, pad_last=pad_last, mask_boundary_labels=mask, pad_id=0, **kw)
        n = plan.windows
        assert n == len(whole["input_ids"]) > 10
        for cuts in ([0, n], [0, 1, n], sorted({0, n, *rng.integers(1, n, 6).tolist()}), list(range(n + 1))):
            parts = [pack_windows(tokens.astype(np.int32), plan, a, b) for a, b in zip(cuts[:-1], cuts[1:])]
            for k in COLUMNS:
                got = np.concatenate([p[k] for p in parts])
                assert got.dtype == np.int32 and np.array_equal(got, whole[k]), (seed, W, k, cuts[:4])
            streamed = stats_from_windows(concat_window_stats([window_stats(p) for p in parts], W), plan.info)
            assert json.dumps(streamed) == json.dumps(packing_stats(whole, info))
        assert pack_windows(tokens, plan, n, n + 5)["input_ids"].shape == (0, W)


def test_plan_counts_equal_the_columns():
    tokens, offsets, tags = _corpus(seed=5)
    for layout in ("anchor", "anchor_tag"):
        for pad_last in (False, True):
            cols, info = pack_flat(tokens, offsets, 33, layout, 1, 0, pad_last=pad_last, pad_id=0, **_kw(layout, tags))
            real = int((cols["doc_ids"] > 0).sum())
            tag_tokens = int(np.sum(info.per_window.get("tag_tokens", 0)))
            assert info.tokens_kept + tag_tokens == real
            assert info.padding_tokens == int((cols["doc_ids"] == -1).sum())
            lengths = np.diff(offsets)
            assert info.tokens_kept + info.tokens_dropped_last + info.tokens_dropped_short == int(lengths.sum())


# --- the streaming command ----------------------------------------------------------------------


def _write_tokens(path, docs, domains=None, shards=1):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ropeext.data.shards import shard_file

    for i in range(shards):
        rows = list(range(i, len(docs), shards))  # document k is row k // N of shard k % N
        cols = {"input_ids": pa.array([docs[r] for r in rows], type=pa.list_(pa.int32()))}
        if domains is not None:
            cols["domain"] = pa.array([domains[r] for r in rows])
        pq.write_table(pa.table(cols), path.parent / shard_file(path.stem, i, shards), row_group_size=7)


def _read_packed(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {k: np.array(table.column(k).to_pylist(), dtype=np.int32) for k in table.column_names}


@pytest.mark.parametrize(
    "layout,window,pad_last,shards",
    [("anchor_tag", 32, False, 1), ("anchor_interleaved", 48, True, 1), ("intra_doc_reset", 24, True, 3)],
)
def test_cli_streams_row_groups_with_the_in_memory_result(
    tmp_path, tiny_tokenizer_dir, monkeypatch, layout, window, pad_last, shards
):
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from ropeext.cli import main
    from ropeext.commands.pack import document_tags, packing_settings
    from ropeext.data.packed_file import read_packed_info

    rng = np.random.default_rng(window)
    lens = np.where(rng.random(120) < 0.7, rng.integers(1, 30, 120), rng.integers(40, 200, 120))
    docs = [rng.integers(3, 300, n).tolist() for n in lens]
    domains = [["web", "books", "code"][i] for i in rng.integers(0, 3, len(docs))]
    _write_tokens(tmp_path / "tok.parquet", docs, domains, shards)
    monkeypatch.setattr(pack_stream, "ROW_GROUP_TOKENS", 5 * window)  # 5 windows per row group,
    monkeypatch.setattr(pack_stream, "BUILD_TOKENS", 2 * window)  # built 2, 2 and 1 at a time
    out = tmp_path / "p" / f"{layout}.parquet"
    argv = [
        "pack",
        "--tokens",
        str(tmp_path / "tok.parquet"),
        "--tokenizer",
        str(tiny_tokenizer_dir),
        "--window",
        str(window),
        "--layout",
        layout,
        "--output",
        str(out),
        "--seed",
        "6",
        "--no-mlflow",
    ]
    assert main(argv + (["--pad-last"] if pad_last else [])) == 0

    settings = packing_settings(None)
    kw = {}
    if layout in TAGGED:
        kw["tags"], _ = document_tags(
            domains, settings["tag_template"], AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
        )
    if layout in INTERLEAVED:
        kw["interleave"] = settings["interleave"]
    flat = np.concatenate([np.asarray(d, dtype=np.int64) for d in docs])
    ref, info = pack_flat(
        flat, np.concatenate([[0], np.cumsum(lens)]), window, layout, 1, 6, pad_last=pad_last, pad_id=0, **kw
    )
    got = _read_packed(out)
    for k in COLUMNS:
        assert np.array_equal(got[k], ref[k]), k
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == -(-len(ref["input_ids"]) // 5) > 2
    assert read_packed_info(out) == {"layout": layout, "window": window}
    stats = json.loads((tmp_path / "p" / f"{layout}.stats.json").read_text())
    for key in ("pack_seconds", "tokens_per_second"):
        assert stats["totals"].pop(key) > 0
    want = packing_stats(ref, info)
    assert stats["per_window"] == json.loads(json.dumps(want["per_window"]))
    assert {k: stats["totals"][k] for k in want["totals"]} == json.loads(json.dumps(want["totals"]))
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_one_row_group_is_the_file_write_table_makes(tmp_path):
    """Under ROW_GROUP_TOKENS the streamed file is byte for byte one ``write_table`` of every window."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ropeext.data.packed_file import packed_metadata

    tokens, offsets, _ = _corpus()
    cols, _ = pack_flat(tokens, offsets, 64, "anchor", 1, 0)
    n, W = cols["input_ids"].shape
    off = pa.array(np.arange(n + 1, dtype=np.int32) * W, type=pa.int32())
    table = pa.table({k: pa.ListArray.from_arrays(off, pa.array(cols[k].reshape(-1))) for k in COLUMNS})
    pq.write_table(table.replace_schema_metadata(packed_metadata("anchor", W)), tmp_path / "one.parquet")
    pack_stream.write_windows(tmp_path / "streamed.parquet", [cols], "anchor", W)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "streamed.parquet").read_bytes()


def test_token_map_reads_shards_as_int32_and_removes_its_file(tmp_path):
    from ropeext.data.tokens import read_token_arrays

    rng = np.random.default_rng(2)
    docs = [rng.integers(0, 70000, rng.integers(0, 50)).tolist() for _ in range(200)]
    _write_tokens(tmp_path / "train.parquet", docs, shards=4)
    values, offsets = read_token_arrays(tmp_path / "train.parquet")
    with pack_stream.token_map(tmp_path / "train.parquet", tmp_path / "out" / "x.parquet", batch_rows=16) as tok:
        assert tok.ids.dtype == np.int32 and np.array_equal(tok.ids, values)
        assert np.array_equal(tok.offsets, offsets)
        assert (tok.min_id, tok.max_id) == (int(values.min()), int(values.max()))
        held = tok.ids[5:9]  # a view kept past the context must not break its closing
        tok.release()
        assert np.array_equal(tok.ids, values)  # released pages come back from the file
    assert held.tolist() == values[5:9].tolist()
    assert list((tmp_path / "out").iterdir()) == []
    _write_tokens(tmp_path / "empty.parquet", [[], []])
    with pack_stream.token_map(tmp_path / "empty.parquet", tmp_path / "out" / "y.parquet") as tok:
        assert len(tok.ids) == 0 and tok.offsets.tolist() == [0, 0, 0] and tok.min_id is None


def test_domain_index_is_read_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    domains = [["wiki", "arxiv", "github", "c4", "Books"][i] for i in rng.integers(0, 5, 300)]
    for name, col in (("plain", pa.array(domains)), ("dict", pa.array(domains).dictionary_encode())):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(
            pa.table({"input_ids": pa.array([[5, 6, 7]] * 300, type=pa.list_(pa.int32())), "domain": col}),
            path,
            row_group_size=17,
        )
        names, index = pack_stream.read_domain_index(path, 300, batch_rows=23)
        want_names, want_index = np.unique(np.asarray(domains, dtype=object).astype(str), return_inverse=True)
        assert names == want_names.tolist() and np.array_equal(index, want_index)
    with pytest.raises(Exception, match="299 domains for 300 documents|300 domains for 299 documents"):
        pack_stream.read_domain_index(tmp_path / "plain.parquet", 299)


def test_pack_documents_keeps_working_on_lists():
    docs = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    out = pack_documents(docs, 4, "anchor", 1, seed=0, pad_last=True)
    assert out["input_ids"].dtype == np.int32 and out["input_ids"][:, 0].tolist() == [1] * len(out["input_ids"])
    assert sorted(t for row, d in zip(out["input_ids"], out["doc_ids"]) for t, i in zip(row, d) if i > 0) == sorted(
        t for d in docs for t in d
    )
