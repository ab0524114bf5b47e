"""GPU slots on a shared node: jobs get disjoint devices, a job never starts on busy ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ropeext.gpu_slots import SlotError, acquire, release, try_acquire

PROBE = (
    "import json, os, sys, time; t0 = time.time(); time.sleep(float(sys.argv[2])); "
    "json.dump({'devices': os.environ['CUDA_VISIBLE_DEVICES'], 'start': t0, 'end': time.time()}, "
    "open(sys.argv[1], 'w'))"
)


def _launch(tmp_path, name: str, gpus: int, seconds: float, node_gpus: int = 8) -> subprocess.Popen:
    env = dict(os.environ, ROPEEXT_NODE_GPUS=str(node_gpus))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ropeext.gpu_slots",
            "--gpus",
            str(gpus),
            "--lock-dir",
            str(tmp_path / "locks"),
            "--",
            sys.executable,
            "-c",
            PROBE,
            str(tmp_path / f"{name}.json"),
            str(seconds),
        ],
        env=env,
    )


def _result(tmp_path, name):
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_two_whole_node_jobs_never_overlap(tmp_path):
    jobs = [_launch(tmp_path, name, 8, 1.5) for name in ("a", "b")]
    assert [j.wait(60) for j in jobs] == [0, 0]
    a, b = sorted((_result(tmp_path, n) for n in ("a", "b")), key=lambda r: r["start"])
    assert a["devices"] == b["devices"] == "0,1,2,3,4,5,6,7"
    assert b["start"] >= a["end"]  # the second waited for every device of the first


def test_one_gpu_jobs_share_the_node_on_distinct_devices(tmp_path):
    names = [f"e{i}" for i in range(4)]
    jobs = [_launch(tmp_path, n, 1, 2.0, node_gpus=4) for n in names]
    assert [j.wait(60) for j in jobs] == [0] * 4
    results = [_result(tmp_path, n) for n in names]
    assert sorted(r["devices"] for r in results) == ["0", "1", "2", "3"]
    assert max(r["start"] for r in results) < min(r["end"] for r in results)  # all four ran at once


def test_devices_assigned_by_the_scheduler_are_kept(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="5", ROPEEXT_NODE_GPUS="0")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropeext.gpu_slots",
            "--gpus",
            "1",
            "--lock-dir",
            str(tmp_path),
            "--",
            sys.executable,
            "-c",
            "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "5"


def test_exit_status_of_the_command_is_returned(tmp_path):
    env = dict(os.environ, ROPEEXT_NODE_GPUS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    code = subprocess.call(
        [
            sys.executable,
            "-m",
            "ropeext.gpu_slots",
            "--gpus",
            "1",
            "--lock-dir",
            str(tmp_path),
            "--",
            sys.executable,
            "-c",
            "raise SystemExit(3)",
        ],
        env=env,
        timeout=60,
    )
    assert code == 3


def test_partial_sets_are_never_held(tmp_path):
    held, handles = try_acquire(tmp_path, 3, 4)
    assert held == [0, 1, 2]
    assert try_acquire(tmp_path, 2, 4) == ([], [])  # only device 3 is free: take nothing
    more, more_handles = try_acquire(tmp_path, 1, 4)
    assert more == [3]
    release(handles + more_handles)


def test_more_gpus_than_the_node_has_is_a_clear_error(tmp_path):
    with pytest.raises(SlotError, match="asks for 4 GPUs .* this node has 2"):
        acquire(tmp_path, 4, 2)
    env = dict(os.environ, ROPEEXT_NODE_GPUS="0")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = subprocess.run(
        [sys.executable, "-m", "ropeext.gpu_slots", "--gpus", "1", "--lock-dir", str(tmp_path), "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "asks for 1 GPUs" in out.stderr and "Traceback" not in out.stderr
