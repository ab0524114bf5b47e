"""Document sources, the deterministic train / validation / test split, and the split files.

Every source yields ``Document(id, text, kind, domain)`` lazily, so memory stays flat in the size of
the corpus. ``id`` is stable and decides the split through a hash, so adding documents never moves
existing ones. ``domain`` is a stdlib file's top-level package, the record field
``corpus.domain_field`` (a dotted path), else ``corpus.domain``. Unreadable input is never dropped
silently: ``SourceLog`` counts and names it for the manifest and a warning.

A document is never divided between splits. With ``corpus.segment_chars`` set, a longer document
is first cut into segments of at most that many characters (at spaces, ``ropeext.data.pieces``),
each a document of its own (id ``<id>#<k>``, k from 0) that the hash places independently: a corpus
of one long document then fills every split, and no later stage holds more than a segment at once.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import sys
import sysconfig
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ropeext import job_warnings
from ropeext.data.pieces import text_pieces
from ropeext.data.shards import iter_rows, shard_file
from ropeext.errors import RopeextError
from ropeext.io import atomic_path

SPLITS = ("train", "validation", "test")
SKIPPED_NAMES = 20  # how many skipped inputs the manifest names (all are counted)
ROW_GROUP_DOCS = 4096  # a split file's row group closes at this many documents ...
ROW_GROUP_CHARS = 32 << 20  # ... or at this many characters of text, whichever comes first
READ_BATCH_ROWS = 1024  # records per batch when reading Parquet / saved datasets


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    kind: str = "file"
    domain: str = ""


@dataclass
class SourceLog:
    """What reading a source skipped (counted by reason, the first names kept) and how often the domain fell back."""

    limit: int = SKIPPED_NAMES
    skipped: int = 0
    reasons: dict = field(default_factory=dict)
    names: list = field(default_factory=list)
    domain_fallbacks: int = 0

    def skip(self, name: str, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.names) < self.limit:
            self.names.append(f"{name} ({reason})")

    def as_dict(self) -> dict:
        return {"count": self.skipped, "by_reason": dict(self.reasons), "first": list(self.names)}

    def message(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.reasons.items()))
        more = f" (first {len(self.names)} named)" if self.skipped > len(self.names) else ""
        return f"skipped {self.skipped} unreadable input(s) [{reasons}]{more}: " + "; ".join(self.names)


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


def stdlib_domain(rel: str) -> str:
    """Top-level package or module of a stdlib path: ``json/decoder.py`` -> ``json``, ``os.py`` -> ``os``."""
    return rel.split("/", 1)[0].removesuffix(".py")


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
            out.append((node.name, "".join(lines[start - 1 : node.end_lineno])))
    return out


def _read_text(path: Path, name: str, log: SourceLog | None) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        reason = "not UTF-8"
    except OSError as exc:
        reason = f"unreadable: {exc.strerror or type(exc).__name__}"
    if log is not None:
        log.skip(name, reason)
    return None


def iter_stdlib(definitions: bool = True, root: Path | None = None, log: SourceLog | None = None) -> Iterator[Document]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    for path in stdlib_files(root):
        rel = path.relative_to(root).as_posix()
        text = _read_text(path, rel, log)
        if text is None:
            continue
        domain = stdlib_domain(rel)
        yield Document(rel, text, "file", domain)
        if definitions:
            for name, src in top_level_definitions(text):
                yield Document(f"{rel}::{name}", src, "definition", domain)


def iter_text_files(pattern: str, domain: str = "", log: SourceLog | None = None) -> Iterator[Document]:
    base = Path(pattern)
    if base.is_dir():
        paths = sorted(p for p in base.rglob("*") if p.is_file())
    else:
        paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not paths:
        raise RopeextError(f"corpus.path: no text files found at {pattern!r}")
    for p in paths:
        text = _read_text(p, p.as_posix(), log)
        if text is not None:
            yield Document(p.as_posix(), text, "file", domain)


def _paths(pattern: str, what: str) -> list[str]:
    paths = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).is_file() else [])
    if not paths:
        raise RopeextError(f"corpus.path: no {what} file at {pattern!r}")
    return paths


def field_value(rec, dotted: str):
    """``rec[dotted]``, or the value at a dotted path into nested records; None if absent."""
    if isinstance(rec, dict) and dotted in rec:
        return rec[dotted]
    value = rec
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class _Domains:
    """The domain of each record: a (dotted) field when configured, else the fixed value; fallbacks counted."""

    def __init__(self, domain_field: str | None, default: str, log: SourceLog | None):
        self.field, self.default, self.log = domain_field, default, log

    def __call__(self, rec) -> str:
        if not self.field:
            return self.default
        value = field_value(rec, self.field)
        if value is None:
            if self.log is not None:
                self.log.domain_fallbacks += 1
            return self.default
        return str(value)

    def column(self) -> str | None:
        """The top-level column a columnar source must read for the domain."""
        return self.field.split(".", 1)[0] if self.field else None


def _text(value) -> str:
    return "" if value is None else str(value)


def _text_field(rec: dict, field_name: str, where: str) -> str:
    if field_name not in rec:
        raise RopeextError(f"{where}: record has no field {field_name!r} (corpus.text_field); fields: {sorted(rec)}")
    return _text(rec[field_name])


def iter_jsonl(
    pattern: str, field: str, domain_field: str | None = None, domain: str = "", log: SourceLog | None = None
) -> Iterator[Document]:
    domains = _Domains(domain_field, domain, log)
    for path in _paths(pattern, "JSONL"):
        n = 0
        with open(path, encoding="utf-8", errors="strict") as fh:
            try:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise RopeextError(f"{path}:{n}: malformed JSON line ({exc.msg})") from None
                    if not isinstance(rec, dict):
                        raise RopeextError(f"{path}:{n}: expected a JSON object per line, got {type(rec).__name__}")
                    yield Document(f"{path}:{n}", _text_field(rec, field, f"{path}:{n}"), "file", domains(rec))
            except UnicodeDecodeError:
                raise RopeextError(f"{path}: not UTF-8 text (near line {n + 1})") from None


def _check_columns(names: list[str], where: str, field_name: str, domains: _Domains) -> list[str]:
    if field_name not in names:
        raise RopeextError(f"{where}: no column {field_name!r} (corpus.text_field); columns: {names}")
    cols = [field_name]
    dcol = domains.column()
    if dcol is not None and dcol != field_name:
        if dcol not in names:
            raise RopeextError(
                f"{where}: no column {dcol!r} for corpus.domain_field {domains.field!r}; columns: {names}"
            )
        cols.append(dcol)
    return cols


def _batch_documents(
    batch_rows: list[dict], prefix: str, start: int, field_name: str, domains: _Domains
) -> Iterator[Document]:
    for i, rec in enumerate(batch_rows, start):
        yield Document(f"{prefix}:{i}", _text(rec[field_name]), "file", domains(rec))


def iter_parquet(
    pattern: str,
    field: str,
    domain_field: str | None = None,
    domain: str = "",
    log: SourceLog | None = None,
    batch_rows: int = READ_BATCH_ROWS,
) -> Iterator[Document]:
    domains = _Domains(domain_field, domain, log)
    for path in _paths(pattern, "Parquet"):
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable Parquet
            raise RopeextError(f"{path}: not a readable Parquet file ({exc})") from None
        cols = _check_columns(pf.schema_arrow.names, path, field, domains)
        i = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
            rows = batch.to_pylist()
            yield from _batch_documents(rows, path, i, field, domains)
            i += len(rows)


def iter_hf(
    name: str,
    field: str,
    split: str,
    domain_field: str | None = None,
    domain: str = "",
    log: SourceLog | None = None,
    streaming: bool = True,
    batch_rows: int = READ_BATCH_ROWS,
) -> Iterator[Document]:
    """A Hugging Face dataset: a ``save_to_disk`` directory (memory-mapped, read batch by batch) or a
    hub id (streamed when ``streaming``, else prepared in the local cache and memory-mapped)."""
    import datasets  # heavy (pandas, fsspec): only the hf source needs it

    domains = _Domains(domain_field, domain, log)
    try:
        local = Path(name)
        saved = ("dataset_info.json", "state.json", "dataset_dict.json")
        if local.is_dir() and any((local / f).exists() for f in saved):
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise RopeextError(f"corpus.hf_split: {name} has no split {split!r}; splits: {sorted(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, split=split, streaming=streaming)
    except RopeextError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RopeextError(f"corpus.path: cannot load dataset {name!r} (split {split!r}): {exc}") from None
    names = list(ds.column_names or [])
    if names:  # a streamed dataset may not know its columns before the first record
        cols = _check_columns(names, f"dataset {name}", field, domains)
        ds = ds.select_columns(cols)
    i = 0
    for batch in ds.iter(batch_size=batch_rows):
        if field not in batch:
            raise RopeextError(f"dataset {name}: no column {field!r} (corpus.text_field); columns: {sorted(batch)}")
        keys = list(batch)
        rows = [dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys))]
        yield from _batch_documents(rows, name, i, field, domains)
        i += len(rows)


def iter_documents(corpus_cfg: dict, log: SourceLog | None = None) -> Iterator[Document]:
    source, path, text_field = corpus_cfg["source"], corpus_cfg.get("path"), corpus_cfg.get("text_field", "text")
    domain_field, domain = corpus_cfg.get("domain_field"), corpus_cfg.get("domain", "")
    if source == "stdlib":
        yield from iter_stdlib(
            definitions=corpus_cfg.get("definitions_as_documents", True), root=Path(path) if path else None, log=log
        )
        return
    if not path:
        raise RopeextError(f"corpus.path: required when corpus.source is {source!r}")
    if source == "text":
        yield from iter_text_files(path, domain, log)
    elif source == "jsonl":
        yield from iter_jsonl(path, text_field, domain_field, domain, log)
    elif source == "parquet":
        yield from iter_parquet(path, text_field, domain_field, domain, log)
    elif source == "hf":
        yield from iter_hf(
            path,
            text_field,
            corpus_cfg.get("hf_split", "train"),
            domain_field,
            domain,
            log,
            streaming=corpus_cfg.get("hf_streaming", True),
        )
    else:
        raise RopeextError(f"corpus.source: unknown source {source!r}")


def _fractions(corpus_cfg: dict) -> tuple[float, float]:
    fr = corpus_cfg.get("split_fractions", {})
    return fr.get("validation", 0.05), fr.get("test", 0.1)


class _Tally:
    """Running manifest numbers of one pass over the source."""

    def __init__(self):
        self.fingerprint = hashlib.sha256()
        self.documents = {s: 0 for s in SPLITS}
        self.characters = {s: 0 for s in SPLITS}
        self.kinds: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
        self.domains: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
        self.stopped_early = False
        self.read = 0  # documents read from the source, before min_chars (and before segmenting)
        self.kept = 0  # documents (segments) at least min_chars long, before max_documents
        self.segmented = 0  # documents cut into segments (corpus.segment_chars)

    def add(self, split: str, doc: Document) -> None:
        self.documents[split] += 1
        self.characters[split] += len(doc.text)
        self.kinds[split][doc.kind] = self.kinds[split].get(doc.kind, 0) + 1
        self.domains[split][doc.domain] = self.domains[split].get(doc.domain, 0) + 1


def segments(doc: Document, segment_chars: int | None) -> list[Document]:
    """``doc`` cut into documents ``<id>#<k>`` of at most ``segment_chars`` characters; ``[doc]`` if short enough."""
    if not segment_chars or len(doc.text) <= segment_chars:
        return [doc]
    return [
        Document(f"{doc.id}#{k}", text, doc.kind, doc.domain)
        for k, text in enumerate(text_pieces(doc.text, segment_chars))
    ]


def _segmented(source: Iterator[Document], segment_chars: int | None, tally: _Tally) -> Iterator[Document]:
    for doc in source:
        tally.read += 1
        parts = segments(doc, segment_chars)
        tally.segmented += len(parts) > 1
        yield from parts


def iter_split_documents(corpus_cfg: dict, log: SourceLog, tally: _Tally) -> Iterator[tuple[str, Document]]:
    """(split, document) in source order after ``segment_chars``, ``min_chars`` and ``max_documents``; stops
    reading the source as soon as every split that can receive documents holds ``max_documents``."""
    val, test = _fractions(corpus_cfg)
    min_chars = corpus_cfg.get("min_chars", 64)
    cap = corpus_cfg.get("max_documents")
    open_splits = {s for s, frac in (("train", 1 - val - test), ("validation", val), ("test", test)) if frac > 0}
    source = iter_documents(corpus_cfg, log)
    try:
        for doc in _segmented(source, corpus_cfg.get("segment_chars"), tally):
            if len(doc.text) < min_chars:
                continue
            # definitions follow the split of their file, so no test code leaks into training
            split = split_of(doc.id.split("::", 1)[0], val, test)
            tally.kept += 1
            tally.fingerprint.update(doc.id.encode() + b"\0")
            if cap and tally.documents[split] >= cap:
                continue
            tally.add(split, doc)
            yield split, doc
            if cap and all(tally.documents[s] >= cap for s in open_splits):
                tally.stopped_early = True
                return
    finally:
        source.close()


def _manifest(corpus_cfg: dict, tally: _Tally, log: SourceLog, shards: int, files: dict) -> dict:
    val, test = _fractions(corpus_cfg)
    return {
        "source": corpus_cfg["source"],
        "path": corpus_cfg.get("path"),
        "python_version": sys.version.split()[0],
        "file_list_sha256": tally.fingerprint.hexdigest(),
        "split_fractions": {"validation": val, "test": test},
        "documents": dict(tally.documents),
        "characters": dict(tally.characters),
        "kinds": {s: dict(sorted(k.items())) for s, k in tally.kinds.items()},
        "domains": {s: dict(sorted(d.items())) for s, d in tally.domains.items()},
        "domain_field": corpus_cfg.get("domain_field"),
        "domain_fallbacks": log.domain_fallbacks,
        "max_documents": corpus_cfg.get("max_documents"),
        "segment_chars": corpus_cfg.get("segment_chars"),
        "segmented": tally.segmented,
        "stopped_early": tally.stopped_early,
        "skipped": log.as_dict(),
        "shards": shards,
        "files": files,
    }


def _check_train(corpus_cfg: dict, tally: _Tally, log: SourceLog) -> None:
    """Stop with the reason when no document reached the train split."""
    if tally.documents["train"]:
        return
    min_chars = corpus_cfg.get("min_chars", 64)
    where = f"corpus.source {corpus_cfg['source']!r}" + (
        f", corpus.path {corpus_cfg['path']!r}" if corpus_cfg.get("path") else ""
    )
    if not tally.kept:
        skipped = f"; {log.message()}" if log.skipped else ""
        raise RopeextError(
            f"corpus: the train split is empty: {tally.read} document(s) read from {where}, none with at least "
            f"corpus.min_chars ({min_chars}) characters{skipped}"
        )
    val, test = _fractions(corpus_cfg)
    held = ", ".join(f"{s} {tally.documents[s]}" for s in ("validation", "test"))
    hint = (
        "set corpus.segment_chars (e.g. 1000000) to cut long documents into segments placed one by one, or "
        if not corpus_cfg.get("segment_chars")
        else "lower corpus.segment_chars for more, shorter segments, or "
    )
    raise RopeextError(
        f"corpus: the train split is empty: the {tally.kept} document(s) of {where} all went to validation/test "
        f"({held}); each document goes whole to the split a hash of its id picks (split_fractions: validation "
        f"{val}, test {test}), so a corpus of one or a few documents can leave train empty. To fix: {hint}"
        "give more documents (several files, or one JSONL record per document)"
    )


def _warn_skipped(log: SourceLog) -> None:
    if log.skipped:
        job_warnings.note(f"corpus: {log.message()}")


def build_splits(corpus_cfg: dict) -> tuple[dict[str, list[Document]], dict]:
    """Read the source and split it in memory (small corpora and tests); ``write_splits`` streams to disk."""
    log, tally = SourceLog(), _Tally()
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for split, doc in iter_split_documents(corpus_cfg, log, tally):
        splits[split].append(doc)
    _check_train(corpus_cfg, tally, log)
    _warn_skipped(log)
    return splits, _manifest(corpus_cfg, tally, log, 1, {s: [f"{s}.parquet"] for s in SPLITS})


class SplitWriter:
    """Documents to one Parquet file, a row group at a time (bounded by ROW_GROUP_DOCS / ROW_GROUP_CHARS)."""

    def __init__(self, path: Path, max_docs: int | None = None, max_chars: int | None = None):
        self.schema = pa.schema(
            [("id", pa.string()), ("kind", pa.string()), ("domain", pa.string()), ("text", pa.large_string())]
        )
        self.writer = pq.ParquetWriter(path, self.schema)
        self.max_docs = max_docs or ROW_GROUP_DOCS
        self.max_chars = max_chars or ROW_GROUP_CHARS
        self.buffer: list[Document] = []
        self.chars = 0

    def add(self, doc: Document) -> None:
        self.buffer.append(doc)
        self.chars += len(doc.text)
        if len(self.buffer) >= self.max_docs or self.chars >= self.max_chars:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        b = self.buffer
        self.writer.write_table(
            pa.table(
                {
                    "id": [d.id for d in b],
                    "kind": [d.kind for d in b],
                    "domain": [d.domain for d in b],
                    "text": [d.text for d in b],
                },
                schema=self.schema,
            )
        )
        self.buffer, self.chars = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def write_splits(corpus_cfg: dict, out_dir: str | Path) -> dict:
    """Stream the source into ``out_dir/<split>.parquet`` (or ``corpus.shards`` files per split) and
    return the manifest. Document ``k`` of a split goes to shard ``k % shards``. Every file is written
    under a temporary name and renamed only once the whole pass has succeeded."""
    out = Path(out_dir)
    shards = int(corpus_cfg.get("shards", 1) or 1)
    if shards < 1:
        raise RopeextError(f"corpus.shards: must be >= 1, got {shards}")
    files = {s: [shard_file(s, i, shards) for i in range(shards)] for s in SPLITS}
    log, tally = SourceLog(), _Tally()
    with ExitStack() as stack:
        writers = {}
        for s in SPLITS:
            for name in files[s]:
                tmp = stack.enter_context(atomic_path(out / name))
                writers[s, name] = SplitWriter(tmp)
        try:
            for split, doc in iter_split_documents(corpus_cfg, log, tally):
                writers[split, files[split][(tally.documents[split] - 1) % shards]].add(doc)
        finally:
            for w in writers.values():
                w.close()
        _check_train(corpus_cfg, tally, log)
    _warn_skipped(log)
    return _manifest(corpus_cfg, tally, log, shards, files)


def iter_texts(paths: list[Path], batch_rows: int = READ_BATCH_ROWS) -> Iterator[list[str]]:
    """The ``text`` column of a split, as lists of strings one batch at a time (tokenizer training input)."""
    for batch in iter_rows(paths, ["text"], batch_rows):
        yield batch.column("text").to_pylist()
