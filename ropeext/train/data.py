"""Packed windows on disk and the deterministic order in which training visits them.

Training reads windows memory-mapped: the first reader of a packed Parquet file writes each column
once as an int32 ``.npy`` sidecar (``.<name>.npy/<column>.npy`` beside it, plus ``source.json``
naming the Parquet file's size and modification time), and every rank maps those files
read-only. The operating system's page cache holds one copy of the table, whatever the number of
ranks; a batch is gathered and widened to int64 only when it is taken. Several ranks may race to
write the sidecar: each writes complete files under temporary names and renames them into place,
and ``source.json`` is renamed last, so a reader trusts a sidecar only once it is whole.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ropeext import job_warnings
from ropeext.errors import RopeextError

COLUMNS = ("input_ids", "labels", "position_ids", "doc_ids")
SIDECAR_VERSION = 1
SIDECAR_BATCH_BYTES = 64 << 20  # windows converted per step while writing a sidecar


@dataclass
class PackedData:
    """Arrays of shape (windows, W) under the packing column names (in memory or memory-mapped)."""

    arrays: dict[str, np.ndarray]

    @property
    def windows(self) -> int:
        return int(self.arrays["input_ids"].shape[0])

    @property
    def window(self) -> int:
        return int(self.arrays["input_ids"].shape[1])

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The rows ``indices`` of every column, as fresh int64 arrays."""
        return {k: np.asarray(v[indices], dtype=np.int64) for k, v in self.arrays.items()}


def sidecar_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name.removesuffix('.parquet')}.npy")


def _source_key(path: Path) -> dict:
    st = path.stat()
    return {"version": SIDECAR_VERSION, "source": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_meta(path: Path):
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable Parquet
        raise RopeextError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise RopeextError(f"{path}: missing packed columns {missing} (expected {list(COLUMNS)})")
    if pf.metadata.num_rows == 0:
        raise RopeextError(f"{path}: no packed windows")
    return pf


def _write_sidecar(path: Path, pf, folder: Path, key: dict) -> None:
    """Every column as an int32 (windows, W) .npy, row group by row group; atomic per file."""
    n = pf.metadata.num_rows
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{socket.gethostname()}.{os.getpid()}.tmp"  # unique per process, even across nodes
    outputs, width = {}, None
    first = next(pf.iter_batches(batch_size=1, columns=["input_ids"])).column("input_ids")
    rows = max(1, SIDECAR_BATCH_BYTES // (4 * len(COLUMNS) * max(1, len(first[0]))))  # bounded at any window
    try:
        row = 0
        for batch in pf.iter_batches(batch_size=rows, columns=list(COLUMNS)):
            for c in COLUMNS:
                col = batch.column(c)
                offs = np.asarray(col.offsets, dtype=np.int64)
                lengths = np.diff(offs)
                if width is None:
                    width = int(lengths[0]) if len(lengths) else 0
                    if width < 1:
                        raise RopeextError(f"{path}: empty windows in column {c!r}")
                if len(lengths) and (lengths != width).any():
                    raise RopeextError(
                        f"{path}: column {c!r} has rows of {sorted(set(lengths.tolist()))[:4]} tokens; "
                        f"every window must have the same width ({width})"
                    )
                if c not in outputs:
                    outputs[c] = np.lib.format.open_memmap(
                        folder / f"{c}.{tag}.npy", mode="w+", dtype=np.int32, shape=(n, width)
                    )
                values = col.values.to_numpy(zero_copy_only=False)[offs[0] : offs[-1]]
                outputs[c][row : row + batch.num_rows] = values.reshape(batch.num_rows, width)
            row += batch.num_rows
        for c in COLUMNS:
            outputs[c].flush()
            del outputs[c]
            os.replace(folder / f"{c}.{tag}.npy", folder / f"{c}.npy")
        meta_tmp = folder / f"source.{tag}.json"
        meta_tmp.write_text(json.dumps(key | {"windows": n, "window": width}) + "\n")
        os.replace(meta_tmp, folder / "source.json")
    finally:
        outputs.clear()
        for stray in folder.glob(f"*.{tag}.*"):
            stray.unlink(missing_ok=True)


def _map_sidecar(folder: Path, key: dict) -> dict[str, np.ndarray] | None:
    """The memory-mapped columns if the sidecar is complete and belongs to the current Parquet file."""
    try:
        meta = json.loads((folder / "source.json").read_text())
    except (OSError, ValueError):
        return None
    if {k: meta.get(k) for k in key} != key:
        return None
    arrays = {}
    for c in COLUMNS:
        try:
            a = np.load(folder / f"{c}.npy", mmap_mode="r")
        except (OSError, ValueError):
            return None
        if a.dtype != np.int32 or a.shape != (meta["windows"], meta["window"]):
            return None
        arrays[c] = a
    return arrays


def _load_in_memory(pf) -> dict[str, np.ndarray]:
    table = pf.read(columns=list(COLUMNS))
    arrays = {}
    for c in COLUMNS:
        col = table.column(c).combine_chunks()
        offs = np.asarray(col.offsets, dtype=np.int64)
        arrays[c] = np.asarray(col.values.to_numpy(zero_copy_only=False)[offs[0] : offs[-1]], dtype=np.int32).reshape(
            len(col), -1
        )
    return arrays


def load_packed(path: str | Path, mmap: bool = True) -> PackedData:
    """The packed windows of ``path``: memory-mapped int32 sidecars (written on first use), or in memory.

    If the sidecar cannot be written (a read-only folder), the table is read into memory as int32
    and a warning says so.
    """
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"packed data not found: {path}")
    pf = _read_meta(path)
    if not mmap:
        return PackedData(_load_in_memory(pf))
    folder, key = sidecar_dir(path), _source_key(path)
    arrays = _map_sidecar(folder, key)
    if arrays is None:
        try:
            _write_sidecar(path, pf, folder, key)
        except OSError as exc:
            job_warnings.note(
                f"cannot write the memory-map sidecar of {path} ({exc.strerror or exc}); reading it into memory instead"
            )
            return PackedData(_load_in_memory(pf))
        arrays = _map_sidecar(folder, key)
        if arrays is None:
            raise RopeextError(
                f"{folder}: the memory-map sidecar of {path} changed while it was written; "
                "is the packed file being rewritten?"
            )
    return PackedData(arrays)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Window indices of the batch at ``step``: epochs of seeded permutations, a pure function of step.

    Because the order depends on nothing but (step, seed), resuming at step k visits exactly the
    batches an uninterrupted run would have visited.
    """
    start = step * batch_size
    out = np.empty(batch_size, dtype=np.int64)
    for j in range(batch_size):
        epoch, pos = divmod(start + j, n)
        out[j] = _permutation(n, seed, epoch)[pos]
    return out


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)
