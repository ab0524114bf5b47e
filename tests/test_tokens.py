"""The streaming tokenization path: ids as the tokenizer's own call gives them, whatever the
thread count or sharding; caps; readers of split and shard files; the tokenizer CLI modes."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from ropeext.data import tokens
from ropeext.data.corpus import SPLITS, Document, SplitWriter, stdlib_files, write_splits
from ropeext.data.pieces import cut_points, piece_batches, text_pieces
from ropeext.data.shards import gather, parse_shard, shard_file, split_files
from ropeext.data.tokenizer import train_bpe
from ropeext.data.tokens import (
    document_lengths,
    iter_tokens,
    read_token_arrays,
    read_tokens,
    tokenize_documents,
    tokenize_split,
    write_tokens,
)
from ropeext.errors import RopeextError
from tests.conftest import SAMPLE_TEXT


@pytest.fixture(scope="module")
def corpus_dirs(tmp_path_factory):
    """The same 240 JSONL records written as one file per split and as 3 shards per split."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    recs = [
        {"text": "".join(rng.choice(SAMPLE_TEXT, size=int(rng.integers(1, 6)))) + f" #{i}", "src": f"s{i % 3}"}
        for i in range(240)
    ]
    (root / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = {"source": "jsonl", "path": str(root / "docs.jsonl"), "min_chars": 1, "domain_field": "src"}
    write_splits(cfg, root / "one")
    write_splits(cfg | {"shards": 3}, root / "three")
    return root / "one", root / "three"


@pytest.fixture(scope="module")
def tok():
    return train_bpe(SAMPLE_TEXT, vocab_size=300)


def _table(path):
    return pq.read_table(path).to_pydict()


def test_tokenize_split_matches_the_tokenizers_own_call(corpus_dirs, tok, tmp_path):
    one, _ = corpus_dirs
    stats = tokenize_split(tok, [one / "train.parquet"], tmp_path / "t.parquet", batch_chars=2000, batch_rows=7)
    corpus = _table(one / "train.parquet")
    want = tok(corpus["text"], add_special_tokens=False)["input_ids"]
    got = _table(tmp_path / "t.parquet")
    assert got["input_ids"] == want
    assert got["id"] == corpus["id"] and got["kind"] == corpus["kind"] and got["domain"] == corpus["domain"]
    assert pq.read_schema(tmp_path / "t.parquet").field("input_ids").type.value_type.bit_width == 32
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups > 3  # written batch by batch
    lengths = sorted(len(x) for x in want)
    assert stats["tokens"] == sum(lengths) and stats["documents"] == len(want)
    assert stats["median_length"] == lengths[len(lengths) // 2] and stats["max_length"] == lengths[-1]
    assert tokenize_documents(tok, corpus["text"][:9], batch_size=4) == want[:9]


def test_worker_pool_gives_identical_files(corpus_dirs, tok, tmp_path, monkeypatch):
    from ropeext.data import tokens

    one, _ = corpus_dirs
    monkeypatch.setattr(tokens, "WORKER_TASKS", 3)  # workers replaced while batches are in flight
    tokenize_split(tok, [one / "train.parquet"], tmp_path / "a.parquet", threads=1, batch_chars=3000)
    tokenize_split(tok, [one / "train.parquet"], tmp_path / "b.parquet", threads=2, batch_chars=3000)
    assert pq.ParquetFile(tmp_path / "b.parquet").num_row_groups > 3 * 2 * 2
    assert _table(tmp_path / "a.parquet") == _table(tmp_path / "b.parquet")


def test_max_tokens_keeps_whole_documents_up_to_the_cap(corpus_dirs, tok, tmp_path):
    one, _ = corpus_dirs
    full = _table(one / "train.parquet")
    lengths = [len(x) for x in tok(full["text"], add_special_tokens=False)["input_ids"]]
    cap = sum(lengths[:10]) - 1  # reached inside document 10
    stats = tokenize_split(tok, [one / "train.parquet"], tmp_path / "c.parquet", max_tokens=cap, batch_rows=3)
    got = _table(tmp_path / "c.parquet")
    assert got["id"] == full["id"][:10] and stats["capped"] and stats["tokens"] == sum(lengths[:10])
    stats = tokenize_split(tok, [one / "train.parquet"], tmp_path / "d.parquet", max_tokens=10**9)
    assert not stats["capped"] and stats["documents"] == len(lengths)


def test_shards_tokenized_apart_and_gathered_equal_the_single_file(corpus_dirs, tok, tmp_path):
    one, three = corpus_dirs
    for s in SPLITS:
        tokenize_split(tok, split_files(one, s), tmp_path / "one" / f"{s}.parquet")
        for i in range(3):
            name = shard_file(s, i, 3)
            tokenize_split(tok, [three / name], tmp_path / "three" / name)
        # readers take the shard set as one split ...
        assert [x.tolist() for x in read_tokens(tmp_path / "three" / f"{s}.parquet")] == [
            x.tolist() for x in read_tokens(tmp_path / "one" / f"{s}.parquet")
        ]
        # ... and gathering writes the single file's rows
        gather(split_files(tmp_path / "three", s), tmp_path / "gathered" / f"{s}.parquet", batch_rows=4)
        assert _table(tmp_path / "gathered" / f"{s}.parquet") == _table(tmp_path / "one" / f"{s}.parquet")
    # all-shards-in-one-job reads the corpus shards interleaved: the same file again
    tokenize_split(tok, split_files(three, "train"), tmp_path / "joined.parquet")
    assert _table(tmp_path / "joined.parquet") == _table(tmp_path / "one" / "train.parquet")


def test_readers_flat_arrays_kinds_and_errors(tmp_path):
    docs = [[5, 6, 7], [8], [9, 10], []]
    write_tokens(tmp_path / "t.parquet", docs, ["a", "b", "c", "d"], ["file", "definition", "file", "file"])
    values, offsets = read_token_arrays(tmp_path / "t.parquet")
    assert values.dtype == np.int32 and values.tolist() == [5, 6, 7, 8, 9, 10] and offsets.tolist() == [0, 3, 4, 6, 6]
    assert [d.tolist() for d in read_tokens(tmp_path / "t.parquet", kinds={"file"})] == [[5, 6, 7], [9, 10], []]
    assert read_tokens(tmp_path / "t.parquet")[0].dtype == np.int64
    assert document_lengths(tmp_path / "t.parquet").tolist() == [3, 1, 2, 0]
    assert [b.num_rows for b in iter_tokens(tmp_path / "t.parquet", batch_rows=3)] == [3, 1]
    with pytest.raises(RopeextError, match="tokenized documents not found"):
        read_tokens(tmp_path / "missing.parquet")
    write_tokens(tmp_path / "x-00000-of-00002.parquet", [[1]])
    with pytest.raises(RopeextError, match="missing x-00001-of-00002.parquet"):
        read_tokens(tmp_path / "x.parquet")
    with pytest.raises(RopeextError, match="I/N"):
        parse_shard("3/3")
    assert parse_shard("2/8") == (2, 8)


def test_bpe_training_from_streamed_batches_equals_training_on_a_list():
    batches = [SAMPLE_TEXT[i : i + 7] for i in range(0, len(SAMPLE_TEXT), 7)]
    a = train_bpe(SAMPLE_TEXT, vocab_size=300).backend_tokenizer.to_str()
    b = train_bpe(iter(batches), vocab_size=300).backend_tokenizer.to_str()
    assert a == b


def test_cli_one_job_equals_scatter_and_gather(tmp_path):
    """`ropeext tokenizer` in one job, and as --train-only + --shard i/N + --gather, write the same files."""
    import yaml

    from ropeext.cli import main

    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"text": t + f" {i}"}) + "\n" for i, t in enumerate(SAMPLE_TEXT))
    )
    base = {
        "corpus": {"source": "jsonl", "path": str(tmp_path / "docs.jsonl"), "min_chars": 1},
        "tokenizer": {"vocab_size": 300},
    }
    for name, shards in (("one", 1), ("two", 2)):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(base | {"corpus": base["corpus"] | {"shards": shards}}))
        assert (
            main(["corpus", "--config", str(cfg), "--output-dir", str(tmp_path / name / "corpus"), "--no-mlflow"]) == 0
        )
    common = [
        "--tokenizer-dir",
        str(tmp_path / "one" / "tok"),
        "--tokens-dir",
        str(tmp_path / "one" / "tokens"),
        "--no-mlflow",
        "--threads",
        "1",
    ]
    assert (
        main(
            [
                "tokenizer",
                "--config",
                str(tmp_path / "one.yaml"),
                "--corpus-dir",
                str(tmp_path / "one" / "corpus"),
                *common,
            ]
        )
        == 0
    )
    two = [
        "--config",
        str(tmp_path / "two.yaml"),
        "--corpus-dir",
        str(tmp_path / "two" / "corpus"),
        "--tokenizer-dir",
        str(tmp_path / "two" / "tok"),
        "--tokens-dir",
        str(tmp_path / "two" / "tokens"),
        "--no-mlflow",
        "--threads",
        "1",
    ]
    assert main(["tokenizer", *two, "--train-only"]) == 0
    for s in SPLITS:
        for i in range(2):
            assert main(["tokenizer", *two, "--split", s, "--shard", f"{i}/2"]) == 0
    assert main(["tokenizer", *two, "--gather"]) == 0
    one, two_dir = tmp_path / "one", tmp_path / "two"
    assert (one / "tok" / "tokenizer.json").read_text() == (two_dir / "tok" / "tokenizer.json").read_text()
    for s in SPLITS:
        assert _table(one / "tokens" / f"{s}.parquet") == _table(two_dir / "tokens" / f"{s}.parquet")
    a, b = (json.loads((tmp_path / n / "tokens" / "stats.json").read_text()) for n in ("one", "two"))
    for s in SPLITS:
        assert {k: a[s][k] for k in ("documents", "tokens", "median_length", "max_length")} == {
            k: b[s][k] for k in ("documents", "tokens", "median_length", "max_length")
        }
    assert main(["tokenizer", *two, "--shard", "0/2"]) == 2  # --split missing: a clear error, not a traceback


# ---- long documents: encoded in pieces, ids as the whole text's --------------------------------------

LLAMA3_SPLIT = (  # the pre-token regex of Llama 3 (and, but for the digit groups, Qwen 2)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@pytest.fixture(scope="module")
def long_text():
    """About 200 KB: standard-library source (newlines, indentation, digits, punctuation) with non-ASCII
    words, runs of spaces and a single-line stretch, as one document."""
    parts, n = [], 0
    for p in stdlib_files():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        parts.append(text)
        n += len(text)
        if n > 150_000:
            break
    source = "".join(parts)
    one_line = " ".join(source[:40_000].split())
    return source + " café naïve Straße 日本語のテキスト  \t  x\n\n   " + one_line + "   end"


def _llama3_style_bpe(texts):
    # heavy: tokenizers and transformers load only for this tokenizer
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>")


def test_cut_points_fall_before_a_space_that_follows_a_word():
    text = "alpha beta  gamma\tdelta\n epsilon " * 50  # at most 22 characters between two such spaces
    for size in (7, 30, 100):
        pieces = text_pieces(text, size)
        assert "".join(pieces) == text and all(0 < len(p) <= size for p in pieces)
        if size > 22:
            for cut in cut_points(text, size)[1:]:
                assert text[cut] == " " and not text[cut - 1].isspace()
    # no such space within the limit: cut at the limit
    assert text_pieces("abcdefgh", 3) == ["abc", "def", "gh"]
    assert text_pieces("a" + " " * 9 + "b", 4) == ["a", "    ", "    ", " b"]
    assert text_pieces("short", 10) == ["short"] and text_pieces("", 3) == [""]


@pytest.mark.parametrize("style", ["ropeext", "llama3"])
def test_a_long_document_in_pieces_has_the_ids_of_the_whole_text(style, long_text, tok, tmp_path):
    tokenizer = tok if style == "ropeext" else _llama3_style_bpe([long_text[:50_000]])
    whole = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    assert len(text_pieces(long_text, 5000)) > 30
    corpus = tmp_path / "train.parquet"
    writer = SplitWriter(corpus)
    writer.add(Document("short", "a short one"))
    writer.add(Document("long", long_text))
    writer.add(Document("after", "and after it"))
    writer.close()
    stats = tokenize_split(tokenizer, [corpus], tmp_path / "t.parquet", batch_chars=20_000, piece_chars=5000)
    got = _table(tmp_path / "t.parquet")
    assert got["id"] == ["short", "long", "after"]  # one row per document, pieces joined
    assert got["input_ids"][1] == whole
    assert got["input_ids"][0] == tokenizer("a short one", add_special_tokens=False)["input_ids"]
    assert tokenizer.bos_token_id not in whole  # no special token between pieces
    assert stats["documents"] == 3 and stats["max_length"] == len(whole)
    assert tokenize_documents(tokenizer, [long_text, "x y"], piece_chars=3000, batch_chars=7000) == [
        whole,
        tokenizer("x y", add_special_tokens=False)["input_ids"],
    ]


def test_no_string_longer_than_a_piece_reaches_the_encoder(long_text, tok, tmp_path, monkeypatch):
    """What the encoder holds at once is bounded by batch_chars and piece_chars, not by the document,
    with one process and with the worker pool (whose output is the same file)."""
    corpus = tmp_path / "train.parquet"
    writer = SplitWriter(corpus)
    docs = [long_text[i * 1000 : i * 1000 + 60_000] for i in range(3)]
    for i, text in enumerate(docs):
        writer.add(Document(f"d{i}", text))
    writer.close()
    seen = []
    encode = tokens._Backend.encode

    def spy(self, texts):
        seen.append([len(t) for t in texts])
        return encode(self, texts)

    monkeypatch.setattr(tokens._Backend, "encode", spy)
    tokenize_split(tok, [corpus], tmp_path / "a.parquet", batch_chars=12_000, piece_chars=4000)
    assert seen and max(max(s) for s in seen) <= 4000 and max(sum(s) for s in seen) <= 12_000
    tokenize_split(tok, [corpus], tmp_path / "b.parquet", threads=2, batch_chars=12_000, piece_chars=4000)
    assert _table(tmp_path / "a.parquet") == _table(tmp_path / "b.parquet")
    whole = tok(docs, add_special_tokens=False)["input_ids"]
    assert _table(tmp_path / "a.parquet")["input_ids"] == whole


def test_the_tokenizer_trained_on_pieces_is_the_one_trained_on_whole_documents(long_text):
    texts = [long_text, long_text[::-1][:30_000], "short text"]
    whole = train_bpe(texts, vocab_size=400)
    pieces = list(piece_batches([texts[:2], texts[2:]], 4000))
    assert max(len(p) for batch in pieces for p in batch) <= 4000
    assert train_bpe(iter(pieces), vocab_size=400).backend_tokenizer.to_str() == whole.backend_tokenizer.to_str()
