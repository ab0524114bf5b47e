"""Packed windows on disk and the deterministic order in which training visits them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ropeext.errors import RopeextError

COLUMNS = ("input_ids", "labels", "position_ids", "doc_ids")


@dataclass
class PackedData:
    """Arrays of shape (windows, W) under the packing column names."""

    arrays: dict[str, np.ndarray]

    @property
    def windows(self) -> int:
        return int(self.arrays["input_ids"].shape[0])

    @property
    def window(self) -> int:
        return int(self.arrays["input_ids"].shape[1])

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[indices] for k, v in self.arrays.items()}


def load_packed(path: str | Path) -> PackedData:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"packed data not found: {path}")
    table = pq.read_table(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise RopeextError(f"{path}: missing packed columns {missing} (expected {list(COLUMNS)})")
    arrays = {}
    for c in COLUMNS:
        col = table.column(c).combine_chunks()
        flat = col.values.to_numpy(zero_copy_only=False)
        arrays[c] = flat.reshape(len(col), -1).astype(np.int64)
    if arrays["input_ids"].shape[0] == 0:
        raise RopeextError(f"{path}: no packed windows")
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
