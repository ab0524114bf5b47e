"""Fixed-length token sequences for the analysis, each starting with BOS.

Documents long enough give one sequence each (BOS and their first tokens), picked in a seeded
order. If too few are long enough, the rest are cut from a stream of every token not used yet (the
tails of those documents, then the other documents), documents joined by BOS; the result says how
many sequences came from each source. No token is used twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ropeext.data.tokens import read_tokens
from ropeext.errors import RopeextError


def build_sequences(
    docs: list[np.ndarray], *, length: int, count: int, bos_id: int, seed: int = 0, source: str = "documents"
) -> tuple[np.ndarray, dict]:
    """``count`` sequences of ``length`` tokens: BOS, then document tokens.

    Returns an int64 array (count, length) and ``{"document_starts": a, "concatenated": b}``.
    """
    if length < 2:
        raise RopeextError(f"sequence length must be at least 2 (BOS and one token), got {length}")
    if count < 1:
        raise RopeextError(f"number of sequences must be positive, got {count}")
    body = length - 1
    cleaned = []
    for doc in docs:
        doc = np.asarray(doc, dtype=np.int64)
        if doc.size and doc[0] == bos_id:
            doc = doc[1:]
        if doc.size:
            cleaned.append(doc)
    order = np.random.default_rng(seed).permutation(len(cleaned))
    long_docs = [cleaned[i] for i in order if cleaned[i].size >= body]
    short_docs = [cleaned[i] for i in order if cleaned[i].size < body]
    rows = [doc[:body] for doc in long_docs[:count]]
    whole = len(rows)
    if whole < count:
        rest = [doc[body:] for doc in long_docs[:count]] + long_docs[count:] + short_docs
        rest = [doc for doc in rest if doc.size]
        pieces = []
        for doc in rest:
            if pieces:
                pieces.append(np.array([bos_id], dtype=np.int64))
            pieces.append(doc)
        stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        available = stream.size // body
        need = count - whole
        if available < need:
            total = sum(d.size for d in cleaned)
            raise RopeextError(
                f"{source}: {total} tokens in {len(cleaned)} documents give only {whole + available} sequences "
                f"of {length} tokens, {count} requested (lower the number of sequences or the length)"
            )
        rows += [stream[i * body : (i + 1) * body] for i in range(need)]
    bos = np.full((count, 1), bos_id, dtype=np.int64)
    return np.concatenate([bos, np.stack(rows)], axis=1), {"document_starts": whole, "concatenated": count - whole}


def documents_from_parquet(path: str | Path) -> list[np.ndarray]:
    """Tokenized documents as written by the tokenizer stage (column ``input_ids``)."""
    try:
        return read_tokens(path)
    except RopeextError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable or not Parquet
        raise RopeextError(f"{path}: cannot read tokenized documents as Parquet ({exc})") from None


def documents_from_text(path: str | Path, tokenizer) -> list[np.ndarray]:
    """A plain-text file tokenized as one document (no special tokens added)."""
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"text file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RopeextError(f"{path}: not UTF-8 text ({exc})") from None
    if not text.strip():
        raise RopeextError(f"{path}: the text file is empty")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [np.asarray(ids, dtype=np.int64)]


def check_vocab(sequences: np.ndarray, vocab_size: int, source: str) -> None:
    if sequences.size and (sequences.min() < 0 or sequences.max() >= vocab_size):
        raise RopeextError(
            f"{source}: token ids range over [{sequences.min()}, {sequences.max()}], but the model's vocabulary "
            f"has {vocab_size} entries (were the documents tokenized with this model's tokenizer?)"
        )
