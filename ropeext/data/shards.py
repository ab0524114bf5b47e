"""A split stored as one Parquet file or as N shard files, read back as one split.

Layout: ``<split>.parquet`` when a split has one shard (the default), else
``<split>-00000-of-00004.parquet`` ... ``<split>-00003-of-00004.parquet`` in the same folder.
Document ``k`` of a split is row ``k // N`` of shard ``k % N``; reading the shards interleaved
(``iter_rows``) gives back the split's rows in their original order, so a split tokenized shard by
shard and gathered is the same file as one tokenized in one piece.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from ropeext.errors import RopeextError
from ropeext.io import atomic_path

_SHARD = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


def shard_file(split: str, index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` of a split: ``<split>.parquet`` when count is 1."""
    if count < 1 or not 0 <= index < count:
        raise RopeextError(f"shard {index} of {count}: expected 0 <= index < count and count >= 1")
    if count == 1:
        return f"{split}.parquet"
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def parse_shard(spec: str) -> tuple[int, int]:
    """``"3/8"`` -> (3, 8): shard 3 (0-based) of 8."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m or int(m[2]) < 1 or int(m[1]) >= int(m[2]):
        raise RopeextError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), got {spec!r}")
    return int(m[1]), int(m[2])


def split_files(directory: str | Path, split: str) -> list[Path]:
    """The files holding one split in ``directory``: ``<split>.parquet``, or its complete shard set in order."""
    directory = Path(directory)
    single = directory / f"{split}.parquet"
    if single.is_file():
        return [single]
    found = shard_set(directory, split)
    if not found:
        raise RopeextError(f"{single}: not found (nor shard files {split}-NNNNN-of-NNNNN.parquet beside it)")
    return found


def shard_set(directory: str | Path, split: str) -> list[Path]:
    """The complete shard set of a split in ``directory`` in index order; [] if there are no shard files."""
    directory = Path(directory)
    found = [
        p for p in directory.glob(f"{split}-*-of-*.parquet") if (m := _SHARD.match(p.name)) and m["split"] == split
    ]
    if not found:
        return []
    counts = {int(_SHARD.match(p.name)["count"]) for p in found}
    if len(counts) != 1:
        raise RopeextError(f"{directory}: shard files of {split!r} from different shard counts {sorted(counts)}")
    n = counts.pop()
    expected = [directory / shard_file(split, i, n) for i in range(n)]
    missing = [p.name for p in expected if not p.is_file()]
    if missing:
        raise RopeextError(
            f"{directory}: incomplete shard set of {split!r}: missing {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return expected


def resolve(path: str | Path) -> list[Path]:
    """``dir/<split>.parquet`` -> that file if it exists, else the complete shard set beside it."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.suffix != ".parquet":
        raise RopeextError(f"not found: {path}")
    return split_files(path.parent, path.stem)


def _open(path: Path):
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable Parquet
        raise RopeextError(f"{path}: not a readable Parquet file ({exc})") from None


def _check_columns(pf, path: Path, columns: list[str] | None) -> None:
    if columns is None:
        return
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise RopeextError(f"{path}: no column {', '.join(map(repr, missing))}; columns: {pf.schema_arrow.names}")


def _exact_tables(path: Path, columns: list[str] | None, k: int):
    """Tables of exactly ``k`` rows (the last one shorter) from one file, read batch by batch."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow as pa

    pf = _open(path)
    _check_columns(pf, path, columns)
    schema = pf.schema_arrow if columns is None else pa.schema([pf.schema_arrow.field(c) for c in columns])
    held = pa.Table.from_batches([], schema=schema)
    for batch in pf.iter_batches(batch_size=k, columns=columns):
        table = pa.Table.from_batches([batch])
        held = pa.concat_tables([held, table]) if held.num_rows else table
        while held.num_rows >= k:
            yield held.slice(0, k)
            held = held.slice(k)
    if held.num_rows:
        yield held


def iter_rows(paths: list[Path], columns: list[str] | None = None, batch_rows: int = 1024) -> Iterator:
    """Record batches of a split stored in ``paths`` (one file or its shards, interleaved back into order).

    At most ``batch_rows`` rows per shard are held at a time.
    """
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow as pa

    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        pf = _open(paths[0])
        _check_columns(pf, paths[0], columns)
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
        return
    readers = [_exact_tables(p, columns, batch_rows) for p in paths]
    while True:
        tables = [next(r, None) for r in readers]
        lengths = np.array([0 if t is None else t.num_rows for t in tables], dtype=np.int64)
        if not lengths.any():
            return
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        rows = np.arange(int(lengths.max()))[:, None]
        order = (starts[None, :] + rows)[rows < lengths[None, :]]  # row-major: row i of shard 0, 1, ..., N-1
        combined = pa.concat_tables([t for t in tables if t is not None]).combine_chunks()
        yield from combined.take(pa.array(order)).combine_chunks().to_batches()


def gather(paths: list[Path], output: str | Path, batch_rows: int = 1024) -> int:
    """Write the shards ``paths`` as one file in split order (atomic, a row group per read batch); the row count."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow.parquet as pq

    schema = _open(Path(paths[0])).schema_arrow
    for p in paths[1:]:
        other = _open(Path(p)).schema_arrow
        if not other.equals(schema):
            raise RopeextError(f"{p}: columns {other.names} ({other.types}) differ from {paths[0]}'s {schema.names}")
    rows = 0
    with atomic_path(output) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in iter_rows(paths, None, batch_rows):
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows
