"""Document sources and the deterministic train / validation / test split.

Every source yields ``Document(id, text, kind)``; ``id`` is stable (a relative path, a record
index) and decides the split through a hash, so adding documents never moves existing ones.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ropeext.errors import RopeextError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    kind: str = "file"


def split_of(doc_id: str, validation: float, test: float) -> str:
    """Deterministic split from a hash of the document id (the same id always lands in the same split)."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2**64
    if h < test:
        return "test"
    if h < test + validation:
        return "validation"
    return "train"


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The interpreter's standard-library .py files, without site-packages and test folders."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = [p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files)


def top_level_definitions(source: str) -> list[tuple[str, str]]:
    """(name, source text) of each top-level function and class of a module; [] if it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.end_lineno:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out.append((node.name, "".join(lines[start - 1:node.end_lineno])))
    return out


def iter_stdlib(definitions: bool = True, root: Path | None = None) -> Iterator[Document]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    for path in stdlib_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        yield Document(rel, text, "file")
        if definitions:
            for name, src in top_level_definitions(text):
                yield Document(f"{rel}::{name}", src, "definition")


def iter_text_files(pattern: str) -> Iterator[Document]:
    base = Path(pattern)
    paths = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else sorted(map(Path, glob.glob(pattern, recursive=True)))
    if not paths:
        raise RopeextError(f"corpus.path: no text files found at {pattern!r}")
    for p in paths:
        try:
            yield Document(p.as_posix(), p.read_text(encoding="utf-8"), "file")
        except UnicodeDecodeError:
            continue


def _records_field(rec: dict, field: str, where: str) -> str:
    if field not in rec:
        raise RopeextError(f"{where}: record has no field {field!r} (corpus.text_field); fields: {sorted(rec)}")
    return str(rec[field])


def iter_jsonl(pattern: str, field: str) -> Iterator[Document]:
    paths = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).is_file() else [])
    if not paths:
        raise RopeextError(f"corpus.path: no JSONL file at {pattern!r}")
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RopeextError(f"{path}:{n}: malformed JSON line ({exc.msg})") from None
                yield Document(f"{path}:{n}", _records_field(rec, field, f"{path}:{n}"))


def iter_parquet(pattern: str, field: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    paths = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).is_file() else [])
    if not paths:
        raise RopeextError(f"corpus.path: no Parquet file at {pattern!r}")
    for path in paths:
        table = pq.read_table(path)
        if field not in table.column_names:
            raise RopeextError(f"{path}: no column {field!r} (corpus.text_field); columns: {table.column_names}")
        for i, text in enumerate(table.column(field).to_pylist()):
            yield Document(f"{path}:{i}", str(text))


def iter_hf(name: str, field: str, split: str) -> Iterator[Document]:
    """A Hugging Face dataset: a directory saved with ``save_to_disk`` or a hub id (cache/offline aware)."""
    import datasets

    try:
        local = Path(name)
        if local.is_dir() and any((local / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001
        raise RopeextError(f"corpus.path: cannot load dataset {name!r} (split {split!r}): {exc}") from None
    if field not in ds.column_names:
        raise RopeextError(f"dataset {name}: no column {field!r} (corpus.text_field); columns: {ds.column_names}")
    for i, text in enumerate(ds[field]):
        yield Document(f"{name}:{i}", str(text))


def iter_documents(corpus_cfg: dict) -> Iterator[Document]:
    source, path, field = corpus_cfg["source"], corpus_cfg.get("path"), corpus_cfg.get("text_field", "text")
    if source == "stdlib":
        yield from iter_stdlib(definitions=corpus_cfg.get("definitions_as_documents", True),
                               root=Path(path) if path else None)
        return
    if not path:
        raise RopeextError(f"corpus.path: required when corpus.source is {source!r}")
    if source == "text":
        yield from iter_text_files(path)
    elif source == "jsonl":
        yield from iter_jsonl(path, field)
    elif source == "parquet":
        yield from iter_parquet(path, field)
    elif source == "hf":
        yield from iter_hf(path, field, corpus_cfg.get("hf_split", "train"))
    else:
        raise RopeextError(f"corpus.source: unknown source {source!r}")


def build_splits(corpus_cfg: dict) -> tuple[dict[str, list[Document]], dict]:
    """Read the source, drop short documents, split; return the splits and a manifest."""
    fr = corpus_cfg.get("split_fractions", {})
    val, test = fr.get("validation", 0.05), fr.get("test", 0.1)
    min_chars = corpus_cfg.get("min_chars", 64)
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    fingerprint = hashlib.sha256()
    for doc in iter_documents(corpus_cfg):
        if len(doc.text) < min_chars:
            continue
        # definitions follow the split of their file, so no test code leaks into training
        split_key = doc.id.split("::", 1)[0]
        splits[split_of(split_key, val, test)].append(doc)
        fingerprint.update(doc.id.encode() + b"\0")
    cap = corpus_cfg.get("max_documents")
    if cap:
        splits = {s: docs[:cap] for s, docs in splits.items()}
    if not splits["train"]:
        raise RopeextError("corpus: the train split is empty (check corpus.path and corpus.min_chars)")
    manifest = {
        "source": corpus_cfg["source"],
        "path": corpus_cfg.get("path"),
        "python_version": sys.version.split()[0],
        "file_list_sha256": fingerprint.hexdigest(),
        "split_fractions": {"validation": val, "test": test},
        "documents": {s: len(d) for s, d in splits.items()},
        "characters": {s: sum(len(x.text) for x in d) for s, d in splits.items()},
        "kinds": {s: {k: sum(1 for x in d if x.kind == k) for k in sorted({x.kind for x in d})} for s, d in splits.items()},
    }
    return splits, manifest


def write_split(docs: list[Document], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [d.id for d in docs], "kind": [d.kind for d in docs], "text": [d.text for d in docs]})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_split(path: str | Path) -> list[Document]:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"corpus split not found: {path}")
    t = pq.read_table(path).to_pydict()
    return [Document(i, x, k) for i, x, k in zip(t["id"], t["text"], t["kind"])]
