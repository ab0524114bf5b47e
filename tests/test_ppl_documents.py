"""Which held-out documents the perplexity evaluation scores: exclusion by id pattern, spreading, the record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ropeext.cli import main
from ropeext.data.tokens import document_ids, write_tokens
from ropeext.errors import RopeextError
from ropeext.eval.ppl import choose_windows, excluded, scored_documents
from ropeext.suites.ppl import documents_line

STDLIB_EXCLUDE = ["encodings/*", "*/_*data*.py", "_*data*.py", "keyword.py", "token.py"]


@pytest.mark.parametrize(
    "doc_id, out",
    [
        ("encodings/cp858.py", True),
        ("encodings/cp858.py::Codec", True),  # a definition of an excluded file goes with it
        ("email/_header_value_parser.py", False),
        ("idlelib/_pyrepl_data.py", True),
        ("_pydecimal.py", False),
        ("_weakrefset_data.py", True),
        ("keyword.py", True),
        ("lib2to3/keyword.py", False),  # a bare name matches the top-level file only
        ("token.py", True),
        ("tokenize.py", False),
        ("Encodings/x.py", False),  # case-sensitive, as the ids are
    ],
)
def test_document_ids_match_the_exclusion_globs(doc_id, out):
    assert excluded(doc_id, STDLIB_EXCLUDE) is out


def _docs(lengths):
    return [np.arange(n) for n in lengths]


def test_excluded_documents_are_skipped_and_windows_spread_over_the_rest():
    ids = ["encodings/cp1.py", "ast.py", "encodings/cp2.py", "json/decoder.py", "typing.py"]
    docs = _docs([500, 300, 400, 200, 150])
    # unexcluded and uncapped, the first long document (a codec table) takes the whole budget
    assert {d for d, _ in choose_windows(docs, ids, [16, 64], 16, 64)} == {0}
    picked = choose_windows(docs, ids, [16, 64], 16, 64, per_document=1, exclude=["encodings/*"])
    assert picked == [(1, 63), (3, 63), (4, 63)]  # one window each, indices into the full list
    assert scored_documents(picked, ids, docs) == [
        {"id": "ast.py", "tokens": 300, "windows": 1},
        {"id": "json/decoder.py", "tokens": 200, "windows": 1},
        {"id": "typing.py", "tokens": 150, "windows": 1},
    ]
    two = choose_windows(docs, ids, [16, 64], 16, 10_000, per_document=2, exclude=["encodings/*"])
    assert [d for d, _ in two] == [1, 1, 3, 3, 4, 4]


def test_an_exclusion_that_leaves_no_long_document_names_eval_ppl_exclude():
    ids = ["encodings/cp1.py", "a.py"]
    with pytest.raises(RopeextError, match=r"eval\.ppl\.exclude: \['encodings/\*'\] leaves no held-out document"):
        choose_windows(_docs([500, 40]), ids, [16, 64], 16, 64, exclude=["encodings/*"])
    # without an exclusion the error stays the plain one (no document is long enough at all)
    with pytest.raises(RopeextError, match="no held-out document is longer than the largest context length 64"):
        choose_windows(_docs([30, 40]), ids, [16, 64], 16, 64)


def test_document_ids_come_from_the_tokens_file(tmp_path):
    write_tokens(tmp_path / "a.parquet", [[1, 2], [3]], doc_ids=["x.py", "y.py"])
    write_tokens(tmp_path / "b.parquet", [[1, 2], [3]])
    assert document_ids(tmp_path / "a.parquet") == ["x.py", "y.py"]
    assert document_ids(tmp_path / "b.parquet") == ["#0", "#1"]


def test_eval_ppl_scores_the_chosen_documents_and_lists_them(tiny_model_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    ids = ["encodings/cp858.py", "ast.py", "encodings/cp858.py::Codec", "json/decoder.py", "typing.py", "keyword.py"]
    lengths = [300, 120, 200, 100, 90, 400]
    write_tokens(tmp_path / "test.parquet", [rng.integers(3, 300, size=n).tolist() for n in lengths], doc_ids=ids)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eval:\n  ppl:\n    exclude: ['encodings/*', keyword.py]\n    windows_per_document: 1\n")
    out = tmp_path / "eval"
    args = [
        "eval",
        "ppl",
        "--config",
        str(cfg),
        "--model",
        str(tiny_model_dir),
        "--tokens",
        str(tmp_path / "test.parquet"),
    ]
    args += ["--lengths", "16,64", "--stride", "16", "--max-tokens", "1000", "--output-dir", str(out)]
    assert main([*args, "--no-mlflow", "--no-progress", "--dtype", "float32"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["documents_scored"] == [
        {"id": "ast.py", "tokens": 120, "windows": 1},
        {"id": "json/decoder.py", "tokens": 100, "windows": 1},
        {"id": "typing.py", "tokens": 90, "windows": 1},
    ]
    assert m["exclude"] == ["encodings/*", "keyword.py"] and m["window_documents"] == [1, 3, 4]
    assert m["documents"] == 3 and m["tokens_scored"] == 48
    line = documents_line([m])
    assert line == (
        "Documents scored: `ast.py` (120 tokens, 1 window), `json/decoder.py` (100 tokens, 1 window), "
        "`typing.py` (90 tokens, 1 window); not scored: ids matching `encodings/*`, `keyword.py` (eval.ppl.exclude)."
    )
    # --exclude on the command line replaces the config's list; an exclusion of everything long fails clearly
    capsys.readouterr()
    assert main([*args, "--exclude", "*.py*", "--no-mlflow", "--no-progress"]) != 0
    assert "eval.ppl.exclude: ['*.py*'] leaves no held-out document" in capsys.readouterr().err


def test_the_report_lists_at_most_a_few_documents():
    scored = [{"id": f"m{i}.py", "tokens": 20_000 + i, "windows": 2} for i in range(10)]
    line = documents_line([{"documents_scored": scored, "exclude": []}])
    assert line.startswith("Documents scored: `m0.py` (20,000 tokens, 2 windows), ")
    assert line.endswith("`m7.py` (20,007 tokens, 2 windows) and 2 more (metrics.json).")
    assert documents_line([{"ppl": {}}]) == ""


def test_the_real_model_config_skips_the_generated_tables_and_spreads_over_three_documents():
    from ropeext.config import load_config
    from tests.conftest import REPO

    c = load_config(REPO / "config" / "smollm2.yaml")["eval"]["ppl"]
    for table in ("encodings/cp858.py", "encodings/mac_arabic.py", "html/entities.py", "keyword.py", "token.py"):
        assert excluded(table, c["exclude"]), table
    for ordinary in ("enum.py", "importlib/_bootstrap_external.py", "pydoc_data/topics.py", "subprocess.py"):
        assert not excluded(ordinary, c["exclude"]), ordinary
    assert c["windows_per_document"] == 1 and c["max_tokens"] // c["stride"] >= 3
    # stand-ins of the test split's documents past 16k tokens, in its order: three distinct ones are scored
    ids = ["encodings/cp858.py", "encodings/cp865.py", "enum.py", "importlib/_bootstrap_external.py"]
    ids += ["pydoc_data/topics.py", "subprocess.py"]
    docs = _docs([18112, 18524, 18436, 19221, 171599, 20427])
    picked = choose_windows(
        docs, ids, c["lengths"], c["stride"], c["max_tokens"], c["windows_per_document"], c["exclude"]
    )
    assert [ids[d] for d, _ in picked] == ["enum.py", "importlib/_bootstrap_external.py", "pydoc_data/topics.py"]
