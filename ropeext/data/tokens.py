"""Tokenized documents on disk: one Parquet row per document, column ``input_ids`` (list<int32>)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ropeext.errors import RopeextError


def tokenize_documents(tokenizer, texts: list[str], batch_size: int = 256) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], add_special_tokens=False)["input_ids"]
        out.extend(enc)
    return out


def write_tokens(path: str | Path, ids: list[list[int]], doc_ids: list[str] | None = None,
                 kinds: list[str] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    cols = {"input_ids": pa.array(ids, type=pa.list_(pa.int32()))}
    if doc_ids is not None:
        cols["id"] = pa.array(doc_ids)
    if kinds is not None:
        cols["kind"] = pa.array(kinds)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(cols), tmp)
    tmp.replace(path)


def read_tokens(path: str | Path, kinds: set[str] | None = None) -> list[np.ndarray]:
    """Documents as int arrays; ``kinds`` keeps only rows whose ``kind`` column is in the set."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"tokenized documents not found: {path}")
    table = pq.read_table(path)
    if "input_ids" not in table.column_names:
        raise RopeextError(f"{path}: no `input_ids` column of per-document token lists")
    docs = table.column("input_ids").to_pylist()
    if kinds is not None and "kind" in table.column_names:
        docs = [d for d, k in zip(docs, table.column("kind").to_pylist()) if k in kinds]
    return [np.asarray(d, dtype=np.int64) for d in docs]
