"""Packed windows read memory-mapped through int32 sidecars: same batches as an in-memory read,
sidecars written once, rebuilt when the packed file changes, safe when processes race."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ropeext.errors import RopeextError
from ropeext.train.data import COLUMNS, batch_indices, load_packed, sidecar_dir


def _write_packed(path, n=37, w=12, seed=0, row_group_size=5):
    rng = np.random.default_rng(seed)
    cols = {c: rng.integers(-100, 50_000, size=(n, w)) for c in COLUMNS}
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * w)
    table = pa.table(
        {c: pa.ListArray.from_arrays(offsets, pa.array(v.reshape(-1).astype(np.int32))) for c, v in cols.items()}
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return cols


def test_memory_mapped_batches_equal_the_packed_table(tmp_path, monkeypatch):
    from ropeext.train import data as data_mod

    monkeypatch.setattr(data_mod, "SIDECAR_BATCH_BYTES", 4 * len(COLUMNS) * 12 * 3)  # 3 windows per step
    cols = _write_packed(tmp_path / "train.parquet")
    data = load_packed(tmp_path / "train.parquet")
    assert isinstance(data.arrays["input_ids"], np.memmap) and data.arrays["labels"].dtype == np.int32
    assert (data.windows, data.window) == (37, 12)
    for step in range(12):  # crosses epochs
        idx = batch_indices(step, 8, data.windows, seed=1)
        batch = data.batch(idx)
        for c in COLUMNS:
            assert batch[c].dtype == np.int64 and batch[c].flags.writeable
            np.testing.assert_array_equal(batch[c], cols[c][idx])
    mem = load_packed(tmp_path / "train.parquet", mmap=False)
    for c in COLUMNS:
        np.testing.assert_array_equal(mem.arrays[c], cols[c])


def test_sidecar_is_reused_and_rebuilt_when_the_packed_file_changes(tmp_path):
    path = tmp_path / "train.parquet"
    _write_packed(path, seed=0)
    load_packed(path)
    marker = sidecar_dir(path) / "input_ids.npy"
    first = marker.stat().st_mtime_ns
    load_packed(path)
    assert marker.stat().st_mtime_ns == first  # reused, not rewritten
    time.sleep(0.01)
    cols = _write_packed(path, n=20, seed=1)
    data = load_packed(path)
    assert data.windows == 20
    np.testing.assert_array_equal(data.batch(np.arange(20))["doc_ids"], cols["doc_ids"])
    names = sorted(p.name for p in sidecar_dir(path).iterdir())
    assert names == sorted([f"{c}.npy" for c in COLUMNS] + ["source.json"])


_RACE = """
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from ropeext.train.data import load_packed
d = load_packed(sys.argv[1])
print(int(d.batch(np.arange(d.windows))["input_ids"].sum()))
"""


def test_ranks_racing_to_write_the_sidecar_agree(tmp_path):
    from tests.conftest import REPO

    path = tmp_path / "train.parquet"
    cols = _write_packed(path, n=3000, w=64, row_group_size=100)
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACE, str(path), str(REPO)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert set(outs) == {str(int(cols["input_ids"].sum()))}
    assert not [p for p in sidecar_dir(path).iterdir() if ".tmp" in p.name]


def test_bad_packed_files_are_named(tmp_path):
    with pytest.raises(RopeextError, match="packed data not found"):
        load_packed(tmp_path / "none.parquet")
    pq.write_table(pa.table({"input_ids": [[1, 2]]}), tmp_path / "a.parquet")
    with pytest.raises(RopeextError, match="missing packed columns"):
        load_packed(tmp_path / "a.parquet")
    ragged = {c: pa.array([[1, 2, 3], [4, 5]], pa.list_(pa.int32())) for c in COLUMNS}
    pq.write_table(pa.table(ragged), tmp_path / "b.parquet")
    with pytest.raises(RopeextError, match="same width"):
        load_packed(tmp_path / "b.parquet")
    assert not [p for p in sidecar_dir(tmp_path / "b.parquet").iterdir()]


def test_unwritable_sidecar_falls_back_to_memory(tmp_path, capsys):
    cols = _write_packed(tmp_path / "train.parquet")
    sidecar_dir(tmp_path / "train.parquet").write_text("in the way")  # a file where the folder would go
    data = load_packed(tmp_path / "train.parquet")
    assert not isinstance(data.arrays["labels"], np.memmap)
    np.testing.assert_array_equal(data.batch(np.arange(5))["labels"], cols["labels"][:5])
    assert "reading it into memory" in capsys.readouterr().err
