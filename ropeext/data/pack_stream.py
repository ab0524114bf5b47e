"""The pack stage's input and output, streamed: packing with bounded memory at any corpus size.

- Token ids: read batch by batch from a tokens file (or its shard set) into an int32 scratch file
  beside the output, then memory-mapped (``token_map``). The packer gathers only the ids of the
  windows it is building, and the mapped pages are handed back after every row group
  (``TokenMap.release``), so the process holds one row group's ids, not the corpus's.
- Domains (``anchor_tag``): read batch by batch into one small integer per document
  (``read_domain_index``).
- Windows: planned from the document lengths (``ropeext.data.packing.plan_packing``; a few integers
  per document), then built and written one Parquet row group of about ``ROW_GROUP_TOKENS`` tokens
  at a time (``write_windows``), their per-window statistics gathered on the way.

What is resident: the plan, one row group's columns (16 bytes per token), the working arrays of
the piece being built (``BUILD_TOKENS``), and the Parquet writer's buffers. The output is the same
file whatever the group size: a packing with fewer tokens than one group is written as one row
group, exactly as one ``write_table`` of all windows would.
"""

from __future__ import annotations

import mmap
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ropeext.data.packed_file import packed_metadata
from ropeext.data.packing import COLUMNS, pack_windows, window_stats
from ropeext.data.shards import iter_rows, resolve
from ropeext.errors import RopeextError
from ropeext.io import atomic_path

ROW_GROUP_TOKENS = 1 << 23  # tokens per written row group (x 4 int32 columns = 128 MiB of column data)
BUILD_TOKENS = 1 << 20  # tokens of windows built in one piece (the working arrays: ~50 bytes per token)
READ_BATCH_ROWS = 1024  # documents per batch read from the tokens file


def rows_per_group(window: int, group_tokens: int | None = None) -> int:
    """Windows of ``window`` tokens in one row group of about ``group_tokens`` tokens (default
    ``ROW_GROUP_TOKENS``), at least one."""
    return max(1, int(group_tokens or ROW_GROUP_TOKENS) // int(window))


def token_files(path: str | Path) -> list[Path]:
    """The Parquet file(s) of a tokens split, checked to hold per-document token lists."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow as pa
    import pyarrow.parquet as pq  # (as above)

    path = Path(path)
    try:
        files = resolve(path)
    except RopeextError:
        raise RopeextError(f"tokenized documents not found: {path}") from None
    try:
        schema = pq.read_schema(files[0])
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable Parquet
        raise RopeextError(f"{files[0]}: not a readable Parquet file ({exc})") from None
    if "input_ids" not in schema.names:
        raise RopeextError(
            f"{files[0]}: input without document boundaries: no `input_ids` column "
            f"(columns: {', '.join(schema.names)}); expected one row per document, input_ids list<int32>"
        )
    field = schema.field("input_ids")
    if not (pa.types.is_list(field.type) or pa.types.is_large_list(field.type)) or not pa.types.is_integer(
        field.type.value_type
    ):
        raise RopeextError(
            f"{files[0]}: input without document boundaries: `input_ids` is {field.type}, expected "
            "a per-document list of token ids (list<int32>)"
        )
    return files


@dataclass
class TokenMap:
    """A split's token ids as one flat int32 array (memory-mapped) and int64 document offsets."""

    ids: np.ndarray
    offsets: np.ndarray
    min_id: int | None  # smallest and largest id (None without tokens)
    max_id: int | None
    _map: mmap.mmap | None = None

    def release(self) -> None:
        """Hand the mapped pages read so far back to the page cache (they stay cached, not resident)."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)


@contextmanager
def token_map(path: str | Path, scratch: str | Path, batch_rows: int = READ_BATCH_ROWS) -> Iterator[TokenMap]:
    """The token ids of ``path`` (a tokens file or its shard set) spilled to an int32 file beside
    ``scratch`` and memory-mapped; the file is removed on leaving the context."""
    files = token_files(path)
    scratch = Path(scratch)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    spill = scratch.with_name(f".{scratch.name}.{os.getpid()}.ids.tmp")
    lengths, lo, hi, nulls = [], None, None, 0
    fh = mm = tokens = None
    try:
        with open(spill, "wb") as out:
            for batch in iter_rows(files, ["input_ids"], batch_rows):
                ids = batch.column("input_ids")
                nulls += ids.null_count
                if nulls:
                    continue
                offs = np.asarray(ids.offsets, dtype=np.int64)
                values = ids.values.to_numpy(zero_copy_only=False)[offs[0] : offs[-1]]
                if len(values):
                    lo = int(values.min()) if lo is None else min(lo, int(values.min()))
                    hi = int(values.max()) if hi is None else max(hi, int(values.max()))
                np.ascontiguousarray(values, dtype=np.int32).tofile(out)
                lengths.append(np.diff(offs))
        if nulls:
            raise RopeextError(f"{path}: `input_ids` has {nulls} null rows")
        # heavy: pyarrow loads only when parquet is read or written
        import pyarrow as pa

        pa.default_memory_pool().release_unused()  # the read batches' buffers
        lengths_all = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(lengths_all) + 1, dtype=np.int64)
        np.cumsum(lengths_all, out=offsets[1:])
        if offsets[-1]:
            fh = open(spill, "rb")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            ids = np.frombuffer(mm, dtype=np.int32)
        else:
            ids = np.zeros(0, dtype=np.int32)
        tokens = TokenMap(ids, offsets, lo, hi, mm)
        del ids
        yield tokens
    finally:
        if tokens is not None:  # the arrays over the map must go before it can close
            tokens.ids, tokens._map = np.zeros(0, dtype=np.int32), None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a caller still holds a view of the ids: the map closes when that goes
                pass
        if fh is not None:
            fh.close()
        spill.unlink(missing_ok=True)


def read_domain_index(path: str | Path, documents: int, batch_rows: int = 1 << 16) -> tuple[list[str], np.ndarray]:
    """The ``domain`` column of a tokens split as (sorted distinct names, each document's index into them)."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow as pa
    import pyarrow.compute as pc  # (as above)

    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow.parquet as pq

    files = token_files(path)
    schema = pq.read_schema(files[0])
    if "domain" not in schema.names:
        raise RopeextError(
            f"{path}: layout anchor_tag needs a `domain` column (one string per document: its source, e.g. "
            f"Wikipedia), written by the tokenizer stage (`ropeext tokenizer`, rule tokenizer); columns present: "
            f"{', '.join(schema.names)}. Re-run the tokenizer stage to produce it."
        )
    field = schema.field("domain")
    if not (
        pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_dictionary(field.type)
    ):
        raise RopeextError(f"{path}: `domain` is {field.type}, expected a string per document")
    codes: dict[str, int] = {}
    parts, nulls, count = [], 0, 0
    for batch in iter_rows(files, ["domain"], batch_rows):
        column = batch.column("domain")
        nulls += column.null_count
        count += len(column)
        if nulls:
            continue
        encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
        names = encoded.dictionary.cast(pa.string()).to_pylist()
        local = np.array([codes.setdefault(n, len(codes)) for n in names], dtype=np.int64)
        parts.append(local[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)])
    if nulls:
        raise RopeextError(f"{path}: `domain` has {nulls} null rows; every document needs a domain")
    if count != documents:
        raise RopeextError(f"{path}: {count} domains for {documents} documents")
    names = sorted(codes)
    rank = np.zeros(len(codes), dtype=np.int64)
    for i, name in enumerate(names):
        rank[codes[name]] = i
    index = rank[np.concatenate(parts)] if parts else np.zeros(0, dtype=np.int64)
    return names, index


def packed_schema(layout: str, window: int):
    """The packed file's schema: each column list<int32> (one list of ``window`` per row), and the
    layout and window in its metadata (``ropeext.data.packed_file``)."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow as pa

    return pa.schema([(name, pa.list_(pa.int32())) for name in COLUMNS], metadata=packed_metadata(layout, window))


def _table(columns: dict, schema):
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow as pa

    n, W = columns["input_ids"].shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * W, type=pa.int32())
    arrays = [
        pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(columns[f.name], dtype=np.int32).reshape(-1)))
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_windows(path: str | Path, groups: Iterable[dict], layout: str, window: int) -> None:
    """Write each column dict of ``groups`` (windows x ``window``) as one row group of ``path``,
    under a temporary name renamed when complete."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow.parquet as pq

    schema = packed_schema(layout, window)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for columns in groups:
            writer.write_table(_table(columns, schema))
            del columns


def plan_groups(
    tokens: TokenMap, plan, stats: list | None = None, group_tokens: int | None = None, build_tokens: int | None = None
) -> Iterator[dict]:
    """The windows of ``plan`` a row group at a time. Each group is built ``BUILD_TOKENS`` at a time
    into its columns (so the working arrays stay small beside them), the mapped ids released after
    each piece; the pieces' ``window_stats`` are appended to ``stats``."""
    W = plan.window
    rows = rows_per_group(W, group_tokens)
    step = min(rows, max(1, int(build_tokens or BUILD_TOKENS) // W))
    for first in range(0, plan.windows, rows):
        stop = min(first + rows, plan.windows)
        columns = {k: np.empty((stop - first, W), dtype=np.int32) for k in COLUMNS}
        for a in range(first, stop, step):
            b = min(a + step, stop)
            part = pack_windows(tokens.ids, plan, a, b)
            tokens.release()
            for k in COLUMNS:
                columns[k][a - first : b - first] = part[k]
            if stats is not None:
                stats.append(window_stats(part))
            del part
        yield columns
        del columns  # one group's columns alive at a time: gone before the next is allocated
