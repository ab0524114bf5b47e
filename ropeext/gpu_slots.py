"""Give a job its own GPUs on a shared multi-GPU node.

Snakemake counts a job's ``gpu`` resource against ``--resources gpu=N`` but does not say WHICH
devices a job may use: eight one-GPU evaluations started side by side would all land on device 0.
This wrapper picks free devices by taking an exclusive lock on one file per device, sets
``CUDA_VISIBLE_DEVICES`` to them, runs the command, and releases the locks when it exits:

    python -m ropeext.gpu_slots --gpus 1 -- python -m ropeext.cli eval ppl ...

Inside a scheduler's allocation (``SLURM_JOB_ID`` set: SLURM confines the job to the devices it
asked for with ``--gpus``) or where ``CUDA_VISIBLE_DEVICES`` is already set, the command runs
unchanged. The node's device count comes from
``ROPEEXT_NODE_GPUS`` or from ``nvidia-smi -L``. The lock files live in one folder per user and
machine (under the temporary directory), so two workflows on one node share them. A job never holds
part of its devices while waiting for the rest, so two waiting jobs cannot block each other.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_SECONDS = 2.0


class SlotError(RuntimeError):
    pass


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"ropeext-gpu-locks-{os.getuid()}"


def node_gpus() -> int:
    """Devices on this machine: ROPEEXT_NODE_GPUS, else the lines of ``nvidia-smi -L``, else 0."""
    forced = os.environ.get("ROPEEXT_NODE_GPUS")
    if forced is not None:
        if not forced.isdigit():
            raise SlotError(f"ROPEEXT_NODE_GPUS={forced!r}: expected a number of devices")
        return int(forced)
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def try_acquire(lock_dir: Path, count: int, total: int) -> tuple[list[int], list]:
    """Lock ``count`` free devices out of ``total`` at once, or none: (device ids, open lock files)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    ids, handles = [], []
    for device in range(total):
        fh = open(lock_dir / f"gpu{device}.lock", "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        ids.append(device)
        handles.append(fh)
        if len(ids) == count:
            return ids, handles
    release(handles)
    return [], []


def release(handles: list) -> None:
    for fh in handles:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def acquire(lock_dir: Path, count: int, total: int, poll: float = POLL_SECONDS) -> tuple[list[int], list]:
    if count > total:
        raise SlotError(
            f"the job asks for {count} GPUs (resources.<group>.gpu) but this node has {total} "
            "(nvidia-smi -L, or ROPEEXT_NODE_GPUS)"
        )
    while True:
        ids, handles = try_acquire(lock_dir, count, total)
        if ids:
            return ids, handles
        time.sleep(poll)


def run(command: list[str], count: int, lock_dir: Path) -> int:
    """Run ``command`` on ``count`` devices of its own; its exit status."""
    if count <= 0 or os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get("SLURM_JOB_ID"):
        return subprocess.call(command)
    ids, handles = acquire(lock_dir, count, node_gpus())
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(map(str, ids)))
    child = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    try:
        return child.wait()
    finally:
        release(handles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ropeext.gpu_slots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, required=True, help="devices the command needs")
    parser.add_argument(
        "--lock-dir",
        default=None,
        help="folder of the per-device lock files (default: one per user and machine in the temp dir)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    try:
        return run(command, args.gpus, Path(args.lock_dir) if args.lock_dir else default_lock_dir())
    except SlotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
