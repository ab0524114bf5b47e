"""File output every layer shares: atomic writes, JSON, figures, one writer per output.

Everything a stage writes goes through ``atomic_path``: the content is written under a temporary
sibling name and renamed into place only when complete, so an interrupted job never leaves a
file that looks finished. A command holds ``lock_output`` on each output it names while it runs,
so a second process on the same output stops at once, naming the first. This module sits at the
bottom of the package: it imports nothing from ropeext but the error type.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ropeext.errors import RopeextError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it onto ``path`` on success, remove it on failure.

    The temporary name keeps the suffix (``.name.<pid>.tmp.parquet``) so writers that pick a format
    from the extension still work.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RopeextError(f"cannot create the folder of {path}: {exc.strerror or exc}") from None
    if path.parent.exists() and not path.parent.is_dir():
        raise RopeextError(f"cannot write {path}: {path.parent} is a file, not a folder")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except PermissionError as exc:
        raise RopeextError(f"cannot write {path}: permission denied ({exc.filename or path.parent})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def output_problem(path: str | Path, kind: str = "file") -> str | None:
    """Why ``path`` cannot be written as a ``kind`` ("file" or "folder"), or None; creates nothing.

    Looks at the path itself (a folder where a file is expected, or a file where a folder is), the
    nearest existing ancestor (a file there blocks every folder below it) and write permission where
    the new entry would be made.
    """
    path = Path(path).expanduser()
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
    if path.exists():
        if kind == "folder" and not path.is_dir():
            return f"{path} is a file, expected a folder"
        if kind == "file" and path.is_dir():
            return f"{path} is a folder, expected a file"
        if kind == "folder" and not os.access(path, os.W_OK | os.X_OK):
            return f"cannot write in {path} (permission denied)"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder, so {path} cannot be made"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot write in {ancestor} (permission denied)"
    return None


def check_output(path: str | Path, kind: str = "file", what: str = "--output") -> Path:
    """``path`` when it can be written as a ``kind``; otherwise a RopeextError naming ``what`` and why."""
    problem = output_problem(path, kind)
    if problem:
        raise RopeextError(f"{what} {path}: {problem}")
    return Path(path)


LOCK_SUFFIX = ".lock"
LOCK_MARK = "ropeext output lock"  # the first line of every lock file this module writes


def lock_file(path: str | Path) -> Path:
    """The lock file of an output: beside it, its name with ``.lock`` added (``models/x`` -> ``models/x.lock``)."""
    path = Path(path).expanduser()
    return path.with_name(path.name + LOCK_SUFFIX)


@dataclass
class OutputLock:
    """An exclusive ``flock`` on an output's lock file, held while the file stays open. The kernel drops it
    when the holder exits, however it exits (SIGKILL and out-of-memory kills included)."""

    output: Path
    path: Path
    fd: int

    def release(self) -> None:
        """Remove the lock file while still holding it, then let go (a waiter that opened the old file finds
        it unlinked and tries again; see ``lock_output``)."""
        if self.fd < 0:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


def lock_holder(fd_or_path: int | str | Path) -> str:
    """Who holds a lock, from what the holder wrote in the file: "pid 123 on host (ropeext finetune, since
    12:00:01 UTC)", or "a process that has not written its pid yet"."""
    try:
        if isinstance(fd_or_path, int):
            text = os.pread(fd_or_path, 4096, 0).decode("utf-8", "replace")
        else:
            text = Path(fd_or_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    lines = text.splitlines()
    if len(lines) < 2 or lines[0] != LOCK_MARK:
        return "a process that has not written its pid yet"
    try:
        info = json.loads(lines[1])
        return f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"


def lock_output(path: str | Path, what: str = "--output", command: str | None = None) -> OutputLock:
    """Take the exclusive lock of ``path`` (``lock_file``) without waiting: an ``OutputLock`` to release when
    the work is done, or a RopeextError naming the output, the lock file and the holder's pid when another
    process holds it. Makes the output's folder when missing; writes nothing else."""
    path = Path(path).expanduser()
    lock = lock_file(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RopeextError(f"{what} {path}: cannot create its folder ({exc.strerror or exc})") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RopeextError(f"{what} {path}: cannot make its lock file {lock} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(fd)
            os.close(fd)
            raise RopeextError(
                f"{what} {path}: another process is writing it: {holder}; lock file {lock}. "
                "Wait for it to end or stop it, then run again"
            ) from None
        try:  # the holder we raced may have removed the file it held: the lock must be on the file at the path
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or " ".join(["ropeext", *sys.argv[1:2]]),
        "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{LOCK_MARK}\n{json.dumps(info)}\n".encode(), 0)
    return OutputLock(path, lock, fd)


def held_outputs(root: str | Path) -> list[tuple[Path, str]]:
    """(output, holder) for every output under ``root`` whose lock (``lock_output``) some process holds now;
    reads the lock files, takes no lock that it keeps."""
    held = []
    root = Path(root).expanduser()
    if not root.is_dir():
        return held
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(LOCK_SUFFIX)):
            lock = Path(folder) / name
            try:
                fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if os.pread(fd, len(LOCK_MARK), 0).decode("utf-8", "replace") not in ("", LOCK_MARK):
                    continue  # another program's lock file (an empty one: a holder about to write its pid)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    held.append((lock.with_name(name[: -len(LOCK_SUFFIX)]), lock_holder(fd)))
            finally:
                os.close(fd)
    return held


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: str | Path, rows) -> Path:
    """Write one JSON object per line atomically (UTF-8, non-ASCII kept as is)."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows))


def write_csv(path: str | Path, rows, columns) -> Path:
    """Write dict rows as CSV with a header of ``columns`` atomically (keys outside ``columns`` are dropped)."""
    columns = list(columns)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k) for k in columns})
    return path


def write_json(path: str | Path, obj) -> Path:
    """Write JSON atomically (2-space indent, numpy values and paths converted)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path, what: str = "file"):
    """Parsed JSON, or a RopeextError naming ``what`` and the path when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"{what} not found: {path}")
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise RopeextError(f"{path}: not valid JSON ({exc})") from None


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    # heavy: matplotlib loads only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg")
    # heavy: matplotlib loads only when a figure is drawn
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120, **savefig) -> Path:
    """Save a matplotlib figure atomically and close it."""
    plt = pyplot()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png", **savefig)
    finally:
        plt.close(fig)
    return path


def is_hub_id(name: str | Path) -> bool:
    """Whether ``name`` reads as a Hugging Face hub id (``org/name``) rather than a local path: nothing of
    that name exists here, and it is two names around one slash."""
    text = str(name)
    return bool(HUB_ID.fullmatch(text)) and not Path(text).expanduser().exists()
