"""Tokenized documents on disk (one Parquet row per document: ``input_ids``, ``id``, ``kind``, ``domain``),
and the streaming tokenizer that writes them (ids of ``tokenizer(texts, add_special_tokens=False)``,
whatever the thread count). Readers take ``<split>.parquet`` or fall back to its shard set.

Memory is bounded by the batch size, not by the longest document: a document longer than
``piece_chars`` is encoded as pieces cut at spaces (``ropeext.data.pieces`` states the rule and when
the joined ids equal those of the whole text) and its row holds the pieces' ids joined, one
document as before. No special tokens are added to a piece (nor to a document): packing places
BOS/EOS at document boundaries only.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Iterator

import numpy as np
from tokenizers import Tokenizer

from ropeext.data.pieces import text_pieces
from ropeext.data.shards import iter_rows, resolve
from ropeext.errors import RopeextError
from ropeext.io import atomic_path

TOKENIZE_BATCH_CHARS = 1 << 20  # characters of text per encoded batch (a task of the worker pool)
TOKENIZE_BATCH_ROWS = 256  # ... and at most this many documents
TOKENIZE_PIECE_CHARS = 1 << 20  # a longer document is encoded in pieces of at most this many characters
WORKER_TASKS = 32  # batches a worker process encodes before it is replaced by a fresh one
META_COLUMNS = ("id", "kind", "domain")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity API on this platform
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------ encoding


def _flatten(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    return flat, lengths


class _Backend:
    """Encodes text lists to (flat int32 ids, lengths) with the Rust tokenizer when the tokenizer has one."""

    def __init__(self, tokenizer):
        self.hf = tokenizer
        self.fast = None
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        if backend is not None:
            # a copy without truncation or padding: what the tokenizer's own __call__ applies by default
            self.fast = Tokenizer.from_str(backend.to_str())
            self.fast.no_truncation()
            self.fast.no_padding()

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.fast is not None:
            ids = [e.ids for e in self.fast.encode_batch(texts, add_special_tokens=False)]
        else:
            ids = self.hf(texts, add_special_tokens=False)["input_ids"]
        return _flatten(ids)

    def worker_spec(self) -> str | None:
        return None if self.fast is None else self.fast.to_str()


_WORKER: dict = {}


def _init_worker(spec: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one worker process per core, each single-threaded
    _WORKER["tok"] = Tokenizer.from_str(spec)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """End this worker when the process that started it is gone (killed jobs leave no stray workers)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _flatten([e.ids for e in _WORKER["tok"].encode_batch(texts, add_special_tokens=False)])


def _tasks(texts: list[str], batch_chars: int, piece_chars: int) -> Iterator[tuple[list[str], list[int]]]:
    """The texts of a batch as encoding tasks of about ``batch_chars`` characters each: (pieces, the index in
    ``texts`` of each piece's document). A text longer than ``piece_chars`` becomes several pieces, in order."""
    task: list[str] = []
    owners: list[int] = []
    chars = 0
    for i, text in enumerate(texts):
        for piece in text_pieces(text, piece_chars):
            if task and chars + len(piece) > batch_chars:
                yield task, owners
                task, owners, chars = [], [], 0
            task.append(piece)
            owners.append(i)
            chars += len(piece)
    if task:
        yield task, owners


def _joined(parts: list[tuple[list[int], np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids, lengths) of ``n`` documents from their encoded tasks (owners, flat ids, piece lengths) in order."""
    if not parts:
        return np.zeros(0, dtype=np.int32), np.zeros(n, dtype=np.int64)
    owners = np.concatenate([np.asarray(o, dtype=np.int64) for o, _, _ in parts])
    pieces = np.concatenate([lengths for _, _, lengths in parts])
    lengths = np.bincount(owners, weights=pieces, minlength=n).astype(np.int64)
    flat = parts[0][1] if len(parts) == 1 else np.concatenate([f for _, f, _ in parts])
    return flat, lengths


def tokenize_documents(
    tokenizer,
    texts: list[str],
    batch_size: int = TOKENIZE_BATCH_ROWS,
    *,
    batch_chars: int = TOKENIZE_BATCH_CHARS,
    piece_chars: int = TOKENIZE_PIECE_CHARS,
) -> list[list[int]]:
    """Token ids of a small list of texts (no special tokens added; long texts encoded in pieces as in
    ``tokenize_split``); large splits go through ``tokenize_split``."""
    backend = _Backend(tokenizer)
    out: list[list[int]] = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        parts = [(owners, *backend.encode(task)) for task, owners in _tasks(chunk, batch_chars, piece_chars)]
        flat, lengths = _joined(parts, len(chunk))
        out.extend(np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else [])
    return [x.tolist() for x in out]


def _text_batches(paths: list[Path], max_chars: int, max_rows: int) -> Iterator[dict]:
    """Columns of the corpus split in batches of at most ``max_rows`` documents and about ``max_chars`` characters."""
    for batch in iter_rows(paths, ["text", *META_COLUMNS] if _has_domain(paths) else ["text", "id", "kind"], max_rows):
        cols = batch.to_pydict()
        cols.setdefault("domain", [""] * batch.num_rows)
        texts = cols["text"]
        start, chars = 0, 0
        for i, t in enumerate(texts):
            chars += len(t)
            if chars >= max_chars or i == len(texts) - 1:
                yield {k: v[start : i + 1] for k, v in cols.items()}
                start, chars = i + 1, 0


def _has_domain(paths: list[Path]) -> bool:
    import pyarrow.parquet as pq  # lazy: spawned encoder workers import this module

    return "domain" in pq.read_schema(paths[0]).names


@dataclass
class TokenStats:
    """Per-document token counts of a written split (int32, one per document)."""

    lengths: list = field(default_factory=list)

    def add(self, lengths: np.ndarray) -> None:
        self.lengths.append(np.asarray(lengths, dtype=np.int32))

    def summary(self) -> dict:
        lengths = np.sort(np.concatenate(self.lengths)) if self.lengths else np.zeros(0, dtype=np.int32)
        n = len(lengths)
        return {
            "documents": n,
            "tokens": int(lengths.sum(dtype=np.int64)),
            "median_length": int(lengths[n // 2]) if n else 0,
            "p90_length": int(lengths[int(n * 0.9)]) if n else 0,
            "max_length": int(lengths[-1]) if n else 0,
        }


def _encoded_batches(
    backend: _Backend,
    batches: Iterator[dict],
    threads: int,
    batch_chars: int = TOKENIZE_BATCH_CHARS,
    piece_chars: int = TOKENIZE_PIECE_CHARS,
):
    """(batch columns, flat ids, lengths) in input order; a pool of ``threads`` processes when > 1.

    The unit of work is a task of about ``batch_chars`` characters (``_tasks``), so a batch holding a
    document of 50 MB is encoded as 50 tasks of 1 MB, spread over the workers, never as one string.
    """
    spec = backend.worker_spec()
    if threads <= 1 or spec is None:
        for cols in batches:
            texts = cols["text"]
            parts = [(owners, *backend.encode(task)) for task, owners in _tasks(texts, batch_chars, piece_chars)]
            yield (cols, *_joined(parts, len(texts)))
        return
    # spawned, not forked: the parent may hold threads (torch, tokenizers) that a fork would copy mid-flight,
    # and a spawned worker imports only numpy and tokenizers
    # each worker is replaced after WORKER_TASKS batches: a long-lived encoder's memory creeps up (~0.5 MB per
    # batch measured), a fresh one's does not
    with ProcessPoolExecutor(
        threads,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(spec,),
        max_tasks_per_child=WORKER_TASKS,
    ) as pool:
        # pending, in order: (owners, future) of a task, and (columns, None) after the last task of a batch
        pending: deque = deque()
        parts: list = []
        in_flight = 0

        def popped():
            nonlocal parts, in_flight
            entry, fut = pending.popleft()
            if fut is None:
                done = (entry, *_joined(parts, len(entry["text"])))
                parts = []
                return done
            parts.append((entry, *fut.result()))
            in_flight -= 1
            return None

        try:
            for cols in batches:
                for task, owners in _tasks(cols["text"], batch_chars, piece_chars):
                    pending.append((owners, pool.submit(_encode_in_worker, task)))
                    in_flight += 1
                    while in_flight >= 2 * threads:  # bounded: never more than two tasks per worker in flight
                        if (done := popped()) is not None:
                            yield done
                pending.append((cols, None))
            while pending:
                if (done := popped()) is not None:
                    yield done
        finally:
            for _, fut in pending:
                if fut is not None:
                    fut.cancel()


def tokenize_split(
    tokenizer,
    corpus_paths: list[Path],
    output: str | Path,
    *,
    threads: int = 1,
    max_tokens: int | None = None,
    batch_chars: int = TOKENIZE_BATCH_CHARS,
    batch_rows: int = TOKENIZE_BATCH_ROWS,
    piece_chars: int = TOKENIZE_PIECE_CHARS,
) -> dict:
    """Tokenize a corpus split (one file or its shards) into ``output``, streaming; return its statistics.

    ``max_tokens``: stop after the document that brings the split to at least this many tokens.
    ``piece_chars``: a longer document is encoded in pieces cut at spaces (``ropeext.data.pieces``),
    its ids joined into one row.
    """
    import pyarrow as pa  # lazy: spawned encoder workers import this module
    import pyarrow.parquet as pq  # lazy, as above

    corpus_paths = [Path(p) for p in corpus_paths]
    for p in corpus_paths:
        if not p.is_file():
            raise RopeextError(f"corpus split not found: {p}")
    backend = _Backend(tokenizer)
    schema = pa.schema(
        [("input_ids", pa.list_(pa.int32())), ("id", pa.string()), ("kind", pa.string()), ("domain", pa.string())]
    )
    stats, total, capped = TokenStats(), 0, False
    with atomic_path(output) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        batches = _text_batches(corpus_paths, batch_chars, batch_rows)
        encoded = _encoded_batches(backend, batches, threads, batch_chars, piece_chars)
        try:
            for cols, flat, lengths in encoded:
                if max_tokens is not None:
                    running = total + np.cumsum(lengths)
                    over = np.flatnonzero(running >= max_tokens)
                    if len(over):
                        keep = int(over[0]) + 1
                        cols = {k: v[:keep] for k, v in cols.items()}
                        lengths = lengths[:keep]
                        flat = flat[: int(lengths.sum())]
                        capped = True
                offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32), type=pa.int32())
                ids = pa.ListArray.from_arrays(offsets, pa.array(flat, type=pa.int32()))
                writer.write_table(
                    pa.Table.from_arrays(
                        [
                            ids,
                            pa.array(cols["id"], pa.string()),
                            pa.array(cols["kind"], pa.string()),
                            pa.array(cols["domain"], pa.string()),
                        ],
                        schema=schema,
                    )
                )
                stats.add(lengths)
                total += int(lengths.sum())
                if capped:
                    break
        finally:
            encoded.close()
    return stats.summary() | {"max_tokens": max_tokens, "capped": capped}


def shard_budget(max_tokens: int | None, shards: int) -> int | None:
    """The ``max_tokens`` share of one of ``shards`` independently tokenized shards (rounded up)."""
    return None if max_tokens is None else math.ceil(max_tokens / shards)


# ------------------------------------------------------------------------------ writing / reading


def write_tokens(
    path: str | Path,
    ids: list[list[int]],
    doc_ids: list[str] | None = None,
    kinds: list[str] | None = None,
    domains: list[str] | None = None,
) -> None:
    """A small tokens file in one piece (tests, tools); stages stream through ``tokenize_split``."""
    import pyarrow as pa  # lazy: spawned encoder workers import this module
    import pyarrow.parquet as pq  # lazy, as above

    cols = {"input_ids": pa.array(ids, type=pa.list_(pa.int32()))}
    for name, values in (("id", doc_ids), ("kind", kinds), ("domain", domains)):
        if values is not None:
            cols[name] = pa.array(values, type=pa.string())
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(cols), tmp)


def iter_tokens(path: str | Path, columns: list[str] | None = None, batch_rows: int = 1024) -> Iterator:
    """Record batches of a tokens file (or its shard set, in split order)."""
    import pyarrow.parquet as pq  # lazy: spawned encoder workers import this module

    try:
        files = resolve(Path(path))
    except RopeextError as exc:
        raise RopeextError(f"tokenized documents not found: {exc}") from None
    names = pq.read_schema(files[0]).names
    if "input_ids" not in names:
        raise RopeextError(f"{files[0]}: no `input_ids` column of per-document token lists")
    yield from iter_rows(files, [c for c in (columns or names) if c in names], batch_rows)


def read_token_arrays(path: str | Path, kinds: set[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All token ids of a split as one flat int32 array and int64 document offsets (the form a packer wants)."""
    import pyarrow as pa  # lazy: spawned encoder workers import this module
    import pyarrow.compute as pc  # lazy, as above

    values, lengths = [], []
    cols = ["input_ids"] + (["kind"] if kinds is not None else [])
    for batch in iter_tokens(path, cols):
        ids = batch.column("input_ids")
        if ids.null_count:
            raise RopeextError(f"{path}: `input_ids` has {ids.null_count} null rows")
        if kinds is not None and "kind" in batch.schema.names:
            ids = ids.filter(pc.is_in(batch.column("kind"), value_set=pa.array(sorted(kinds), pa.string())))
        offs = np.asarray(ids.offsets, dtype=np.int64)
        values.append(np.asarray(ids.values.to_numpy(zero_copy_only=False)[offs[0] : offs[-1]], dtype=np.int32))
        lengths.append(np.diff(offs))
    lengths_all = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths_all)]).astype(np.int64)
    return (np.concatenate(values) if values else np.zeros(0, dtype=np.int32)), offsets


def document_lengths(path: str | Path) -> np.ndarray:
    """Tokens per document of a split (int64), read from the list offsets alone."""
    parts = [
        np.diff(np.asarray(b.column("input_ids").offsets, dtype=np.int64)) for b in iter_tokens(path, ["input_ids"])
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def read_tokens(path: str | Path, kinds: set[str] | None = None) -> list[np.ndarray]:
    """Documents as int64 views into one flat array; ``kinds`` keeps only rows whose ``kind`` is in the set."""
    values, offsets = read_token_arrays(path, kinds)
    flat = values.astype(np.int64)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def document_ids(path: str | Path) -> list[str]:
    """The ``id`` of every document of a split, in order (``#<index>`` where the file has no ``id`` column)."""
    ids: list[str] = []
    for batch in iter_tokens(path, ["input_ids", "id"]):
        n = batch.num_rows
        if "id" in batch.schema.names:
            ids += [x if x is not None else f"#{len(ids) + i}" for i, x in enumerate(batch.column("id").to_pylist())]
        else:
            ids += [f"#{len(ids) + i}" for i in range(n)]
    return ids
