"""The bottom-layer file helpers: atomic writes never leave a partial file, errors name the path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ropeext.errors import RopeextError
from ropeext.io import atomic_path, is_hub_id, read_json, write_json


def test_write_json_round_trip_with_numpy(tmp_path):
    path = write_json(tmp_path / "sub" / "m.json", {"a": np.float32(1.5), "b": np.arange(3)})
    assert read_json(path) == {"a": 1.5, "b": [0, 1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_failed_write_leaves_neither_file_nor_temp(tmp_path):
    target = tmp_path / "out.json"
    target.write_text('{"old": true}')
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_parent_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RopeextError, match="f"):
        write_json(tmp_path / "f" / "m.json", {})


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(RopeextError, match="metrics file not found"):
        read_json(tmp_path / "missing.json", "metrics file")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(RopeextError, match="bad.json: not valid JSON"):
        read_json(bad)


def test_is_hub_id_tells_a_hub_id_from_a_path(tmp_path, monkeypatch):
    assert is_hub_id("org/name") and is_hub_id("meta-llama/Llama-2-7b-hf")
    for text in ("name", "./org/name", "~/org/name", "/abs/path", "a/b/c", "org\\name", "org/", "/name", ""):
        assert not is_hub_id(text), text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not is_hub_id("org/name")  # a local folder of that name is a path
