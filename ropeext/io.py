"""File output every layer shares: atomic writes, JSON, figures.

Everything a stage writes goes through ``atomic_path``: the content is written under a temporary
sibling name and renamed into place only when complete, so an interrupted job never leaves a
file that looks finished. This module sits at the bottom of the package: it imports nothing
from ropeext but the error type.
"""

from __future__ import annotations

import csv
import json
import os
import re
from contextlib import contextmanager
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
