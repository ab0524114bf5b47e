import json

import pyarrow.parquet as pq
import pytest

from ropeext.data.corpus import build_splits, split_of, stdlib_files, top_level_definitions, write_splits
from ropeext.errors import RopeextError


def test_split_is_deterministic_and_roughly_proportional():
    ids = [f"pkg/mod{i}.py" for i in range(4000)]
    a = [split_of(i, 0.05, 0.1) for i in ids]
    assert a == [split_of(i, 0.05, 0.1) for i in ids]
    assert 0.07 < a.count("test") / len(a) < 0.13
    assert 0.03 < a.count("validation") / len(a) < 0.07


def test_stdlib_files_skip_tests_and_site_packages():
    files = stdlib_files()
    assert len(files) > 300
    parts = {p for f in files for p in f.parts}
    assert "site-packages" not in parts and "test" not in parts and "tests" not in parts


def test_top_level_definitions_extracts_functions_and_classes_with_decorators():
    src = "import os\n\n@dec\ndef f(x):\n    return x\n\nclass C:\n    def m(self):\n        pass\n\nY = 1\n"
    defs = top_level_definitions(src)
    assert [n for n, _ in defs] == ["f", "C"]
    assert defs[0][1].startswith("@dec\ndef f") and defs[1][1].rstrip().endswith("pass")
    assert top_level_definitions("def broken(:\n") == []


def test_stdlib_corpus_definitions_follow_their_file(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "test").mkdir()
    for i in range(30):
        (root / "pkg" / f"m{i}.py").write_text(f"def f{i}(a):\n    return a + {i} * 1000000000000\n" * 3)
    (root / "test" / "t.py").write_text("def test_x():\n    assert True\n" * 10)
    splits, manifest = build_splits(
        {"source": "stdlib", "path": str(root), "min_chars": 10, "split_fractions": {"validation": 0.2, "test": 0.2}}
    )
    where = {d.id: s for s, docs in splits.items() for d in docs}
    assert not any(i.startswith("test/") for i in where)
    for doc_id, split in where.items():
        if "::" in doc_id:
            assert where[doc_id.split("::")[0]] == split
    assert manifest["documents"]["train"] == len(splits["train"])
    assert len(manifest["file_list_sha256"]) == 64 and manifest["python_version"].startswith("3.")


def test_jsonl_and_text_sources(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text("\n".join(json.dumps({"body": "x" * 100 + str(i)}) for i in range(50)) + "\n")
    splits, _ = build_splits({"source": "jsonl", "path": str(f), "text_field": "body", "min_chars": 10})
    assert sum(len(v) for v in splits.values()) == 50
    (tmp_path / "txt").mkdir()
    for i in range(20):
        (tmp_path / "txt" / f"{i}.txt").write_text("word " * 50)
    splits, _ = build_splits({"source": "text", "path": str(tmp_path / "txt"), "min_chars": 10})
    assert sum(len(v) for v in splits.values()) == 20


def test_malformed_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok ok ok"}\n{not json\n')
    with pytest.raises(RopeextError, match=r"bad.jsonl:2: malformed JSON"):
        build_splits({"source": "jsonl", "path": str(f), "min_chars": 1})


def test_missing_field_and_path_are_named(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"content": "hello world"}\n')
    with pytest.raises(RopeextError, match="no field 'text'"):
        build_splits({"source": "jsonl", "path": str(f), "min_chars": 1})
    with pytest.raises(RopeextError, match="corpus.path: required"):
        build_splits({"source": "parquet", "path": None})


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": [f"document number {i} " * 10 for i in range(40)]})
    ds.save_to_disk(tmp_path / "ds")
    splits, manifest = build_splits({"source": "hf", "path": str(tmp_path / "ds"), "min_chars": 1})
    assert sum(manifest["documents"].values()) == 40


# ---------------------------------------------------------------- streaming sources, domains, caps


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_stdlib_domain_is_the_top_level_module(tmp_path):
    from ropeext.data.corpus import iter_stdlib, stdlib_domain

    assert stdlib_domain("json/decoder.py") == "json" and stdlib_domain("os.py") == "os"
    root = tmp_path / "lib"
    (root / "json").mkdir(parents=True)
    (root / "json" / "decoder.py").write_text("def decode(s):\n    return s\n")
    (root / "os.py").write_text("def getcwd():\n    return '/'\n")
    docs = {d.id: d.domain for d in iter_stdlib(root=root)}
    assert docs == {"json/decoder.py": "json", "json/decoder.py::decode": "json", "os.py": "os", "os.py::getcwd": "os"}


def test_domain_field_reads_dotted_paths_and_falls_back(tmp_path):
    recs = [
        {"text": "a" * 80, "meta": {"redpajama_set_name": "RedPajamaGithub"}},
        {"text": "b" * 80, "meta": {"redpajama_set_name": "RedPajamaBook"}},
        {"text": "c" * 80, "meta": {}},
    ]
    f = _jsonl(tmp_path / "slim.jsonl", recs)
    cfg = {
        "source": "jsonl",
        "path": str(f),
        "min_chars": 1,
        "domain_field": "meta.redpajama_set_name",
        "domain": "unknown",
        "split_fractions": {"validation": 0, "test": 0},
    }
    splits, manifest = build_splits(cfg)
    assert [d.domain for d in splits["train"]] == ["RedPajamaGithub", "RedPajamaBook", "unknown"]
    assert manifest["domain_fallbacks"] == 1
    assert manifest["domains"]["train"] == {"RedPajamaBook": 1, "RedPajamaGithub": 1, "unknown": 1}
    fixed, _ = build_splits(cfg | {"domain_field": None, "domain": "pg19"})
    assert {d.domain for d in fixed["train"]} == {"pg19"}


def test_parquet_is_read_batch_by_batch_with_a_struct_domain(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ropeext.data import corpus

    n = 50
    table = pa.table(
        {
            "text": [f"document {i} " * 10 for i in range(n)],
            "meta": [{"set": f"s{i % 3}"} for i in range(n)],
            "big": ["x" * 1000] * n,
        }
    )
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=7)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read the whole table"))
    docs = list(corpus.iter_parquet(str(tmp_path / "a.parquet"), "text", "meta.set", batch_rows=4))
    assert [d.text for d in docs] == table.column("text").to_pylist()
    assert [d.domain for d in docs] == [f"s{i % 3}" for i in range(n)]
    assert [d.id for d in docs] == [f"{tmp_path / 'a.parquet'}:{i}" for i in range(n)]
    with pytest.raises(RopeextError, match="no column 'meta2' for corpus.domain_field"):
        list(corpus.iter_parquet(str(tmp_path / "a.parquet"), "text", "meta2.set"))


def test_hf_saved_dataset_domain_and_missing_split(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"text": [f"document number {i} " * 10 for i in range(12)], "source": [f"d{i % 2}" for i in range(12)]}
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(tmp_path / "dd")
    cfg = {"source": "hf", "path": str(tmp_path / "dd"), "min_chars": 1, "domain_field": "source"}
    splits, manifest = build_splits(cfg)
    docs = sorted((d for s in splits.values() for d in s), key=lambda d: int(d.id.rsplit(":", 1)[1]))
    assert [d.domain for d in docs] == [f"d{i % 2}" for i in range(12)]
    with pytest.raises(RopeextError, match="has no split 'validation'"):
        build_splits(cfg | {"hf_split": "validation"})


def test_unreadable_text_files_are_counted_named_and_warned(tmp_path, capsys):
    (tmp_path / "txt").mkdir()
    for i in range(5):
        (tmp_path / "txt" / f"ok{i}.txt").write_text("word " * 50)
    (tmp_path / "txt" / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 40)
    (tmp_path / "txt" / "binary.bin").write_bytes(b"\xff\xfe\x00\x81" * 40)
    splits, manifest = build_splits({"source": "text", "path": str(tmp_path / "txt"), "min_chars": 10})
    assert sum(manifest["documents"].values()) == 5
    assert manifest["skipped"]["count"] == 2 and manifest["skipped"]["by_reason"] == {"not UTF-8": 2}
    assert any("latin1.txt" in n for n in manifest["skipped"]["first"])
    err = capsys.readouterr().err
    assert "skipped 2" in err and "latin1.txt" in err and "binary.bin" in err


def test_stdlib_files_that_fail_to_decode_are_reported(tmp_path, capsys):
    root = tmp_path / "lib"
    root.mkdir()
    (root / "good.py").write_text("def f():\n    return 1\n" * 5)
    (root / "bad.py").write_bytes(b"# \xff\xfe\n" * 20)
    splits, manifest = build_splits(
        {"source": "stdlib", "path": str(root), "min_chars": 1, "split_fractions": {"validation": 0, "test": 0}}
    )
    assert manifest["skipped"]["count"] == 1 and "bad.py" in manifest["skipped"]["first"][0]
    assert "bad.py" in capsys.readouterr().err


def test_max_documents_stops_reading_the_source(tmp_path):
    lines = [json.dumps({"text": f"record {i} " * 10}) for i in range(400)]
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(lines) + "\n{this line is never read\n")
    cfg = {"source": "jsonl", "path": str(f), "min_chars": 1, "max_documents": 3}
    splits, manifest = build_splits(cfg)
    assert {s: len(d) for s, d in splits.items()} == {"train": 3, "validation": 3, "test": 3}
    assert manifest["stopped_early"]
    # the first documents of each split in source order, as a full read with a cut after the split
    full = [json.loads(x)["text"] for x in lines]
    ids = [f"{f}:{i + 1}" for i in range(400)]
    for s in ("train", "validation", "test"):
        want = [i for i in ids if split_of(i, 0.05, 0.1) == s][:3]
        assert [d.id for d in splits[s]] == want
        assert [d.text for d in splits[s]] == [full[ids.index(i)] for i in want]
    with pytest.raises(RopeextError, match="malformed JSON"):
        build_splits(cfg | {"max_documents": 10_000})


def test_write_splits_streams_row_groups_and_shards_read_back_in_order(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from ropeext.data import corpus
    from ropeext.data.shards import iter_rows, split_files

    f = _jsonl(tmp_path / "a.jsonl", [{"text": f"record number {i} " * 5, "d": f"x{i % 4}"} for i in range(300)])
    cfg = {"source": "jsonl", "path": str(f), "min_chars": 1, "domain_field": "d"}
    monkeypatch.setattr(corpus, "ROW_GROUP_DOCS", 16)
    one = corpus.write_splits(cfg, tmp_path / "one")
    four = corpus.write_splits(cfg | {"shards": 4}, tmp_path / "four")
    assert one["documents"] == four["documents"] and four["files"]["train"][1] == "train-00001-of-00004.parquet"
    train = pq.ParquetFile(tmp_path / "one" / "train.parquet")
    assert train.num_row_groups == -(-one["documents"]["train"] // 16)
    assert train.schema_arrow.names == ["id", "kind", "domain", "text"]
    for s in corpus.SPLITS:
        whole = pq.read_table(tmp_path / "one" / f"{s}.parquet")
        files = split_files(tmp_path / "four", s)
        assert len(files) == 4
        shard1 = pq.read_table(files[1]).column("id").to_pylist()
        assert shard1 == whole.column("id").to_pylist()[1::4]  # document k -> shard k % 4
        back = [b for b in iter_rows(files, ["id", "domain", "text"], batch_rows=5)]
        got = {c: sum((b.column(c).to_pylist() for b in back), []) for c in ("id", "domain", "text")}
        assert got == {c: whole.column(c).to_pylist() for c in ("id", "domain", "text")}
    assert not list((tmp_path / "four").glob(".*tmp*"))


def test_write_splits_leaves_nothing_behind_on_error(tmp_path):
    from ropeext.data.corpus import write_splits

    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"text": "x" * 100}) + "\n{bad\n")
    with pytest.raises(RopeextError, match="malformed JSON"):
        write_splits({"source": "jsonl", "path": str(f), "min_chars": 1}, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_hf_dataset_folder_is_streamed(tmp_path, monkeypatch):
    """A dataset folder that is not a save_to_disk directory goes through load_dataset(streaming=True)."""
    import datasets

    (tmp_path / "ds" / "data").mkdir(parents=True)
    (tmp_path / "ds" / "data" / "train.jsonl").write_text(
        "".join(json.dumps({"text": f"doc {i} " * 20, "meta": {"set": f"s{i % 2}"}}) + "\n" for i in range(200))
    )
    seen = {}
    original = datasets.load_dataset

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    splits, manifest = build_splits(
        {"source": "hf", "path": str(tmp_path / "ds"), "min_chars": 1, "domain_field": "meta.set", "max_documents": 1}
    )
    assert seen["streaming"] is True
    # ids carry the folder's path, so which record lands where varies; 200 records fill every split
    assert all(len(v) == 1 for v in splits.values()) and manifest["stopped_early"]
    assert {d.domain for v in splits.values() for d in v} <= {"s0", "s1"}


def _file_in(folder, split: str, suffix: str = ".txt", segments: int = 0):
    """A path in ``folder`` whose id (the path itself) the split hash puts in ``split``; with ``segments``, one
    whose first ``segments`` segment ids (``<path>#<k>``) the hash spreads over every split."""

    def spread(path) -> bool:
        ids = {split_of(f"{path.as_posix()}#{k}", 0.05, 0.1) for k in range(segments)}
        return not segments or ids == {"train", "validation", "test"}

    return next(
        p
        for i in range(1000)
        if split_of((p := folder / f"doc{i}{suffix}").as_posix(), 0.05, 0.1) == split and spread(p)
    )


def test_a_one_document_corpus_says_why_train_is_empty_and_segments_fill_every_split(tmp_path):
    # each segment's id is hashed: with a 5% validation share a path may, by chance, send none of its segments
    # there, so the path is one whose first 50 segments (it has about 70) reach every split
    doc = _file_in(tmp_path, "test", segments=50)
    text = " ".join(f"word{i}" for i in range(40_000))  # one line of about 300 KB
    doc.write_text(text)
    cfg = {"source": "text", "path": str(doc)}
    with pytest.raises(RopeextError) as err:
        write_splits(cfg, tmp_path / "whole")
    message = str(err.value)
    for part in ("the train split is empty", "1 document(s)", "(validation 0, test 1)", "corpus.segment_chars"):
        assert part in message, message
    assert not list((tmp_path / "whole").iterdir())  # nothing half-written

    manifest = write_splits(cfg | {"segment_chars": 5000}, tmp_path / "cut")
    assert all(manifest["documents"][s] > 0 for s in ("train", "validation", "test")), manifest["documents"]
    assert manifest["segmented"] == 1 and manifest["segment_chars"] == 5000
    rows = [
        r for s in ("train", "validation", "test") for r in pq.read_table(tmp_path / "cut" / f"{s}.parquet").to_pylist()
    ]
    rows.sort(key=lambda r: int(r["id"].rsplit("#", 1)[1]))
    assert [r["id"] for r in rows] == [f"{doc.as_posix()}#{k}" for k in range(len(rows))]
    assert "".join(r["text"] for r in rows) == text and max(len(r["text"]) for r in rows) <= 5000
    # short documents stay whole
    short = _file_in(tmp_path / "more", "train")
    short.parent.mkdir()
    short.write_text("a short document that is long enough for min_chars, and whole " * 2)
    splits, m = build_splits({"source": "text", "path": str(short.parent), "segment_chars": 5000})
    assert [d.id for d in splits["train"]] == [short.as_posix()] and m["segmented"] == 0


def test_documents_all_below_min_chars_are_named_as_the_reason(tmp_path):
    (tmp_path / "a.txt").write_text("tiny")
    with pytest.raises(RopeextError, match=r"1 document\(s\) read .* none with at least corpus.min_chars \(64\)"):
        build_splits({"source": "text", "path": str(tmp_path)})
