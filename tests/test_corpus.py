import json

import pytest

from ropeext.data.corpus import build_splits, split_of, stdlib_files, top_level_definitions
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
    splits, manifest = build_splits({"source": "stdlib", "path": str(root), "min_chars": 10,
                                     "split_fractions": {"validation": 0.2, "test": 0.2}})
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
