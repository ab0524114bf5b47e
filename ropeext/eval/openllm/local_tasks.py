"""Offline lm-eval tasks built from held-out documents (a Parquet of tokenized documents).

Two tasks, each a folder with its JSONL data and an lm-eval YAML (``dataset_path: json`` with
absolute ``data_files``), so that ``TaskManager(include_path=folder)`` finds them without a hub:

- ``ropeext_nextline`` (multiple choice, acc / acc_norm): a few lines of code, and four candidate
  next lines: the real one and lines drawn from other documents, re-indented like the real one so
  the indentation gives nothing away;
- ``ropeext_code_ppl`` (rolling log-likelihood: word/byte perplexity, bits per byte): the start of
  held-out documents.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import yaml

from ropeext.errors import RopeextError
from ropeext.eval.openllm.presets import CODE_PPL_TASK, NEXTLINE_TASK
from ropeext.io import write_text

MIN_LINE_CHARS = 8


def read_documents(parquet: str | Path, tokenizer, max_documents: int | None = None) -> list[str]:
    """Decode the ``input_ids`` column of a tokenized-documents Parquet (one row per document)."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow.parquet as pq

    parquet = Path(parquet)
    if not parquet.is_file():
        raise RopeextError(f"held-out documents not found: {parquet} (expected a Parquet with an input_ids column)")
    try:
        schema = pq.read_schema(parquet)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise RopeextError(f"{parquet}: not a readable Parquet file ({exc})") from None
    if "input_ids" not in schema.names:
        raise RopeextError(f"{parquet}: no column 'input_ids' (columns: {', '.join(schema.names)})")
    column = pq.read_table(parquet, columns=["input_ids"]).column("input_ids").to_pylist()
    if max_documents is not None:
        column = column[:max_documents]
    docs = [tokenizer.decode(ids, skip_special_tokens=True) for ids in column if ids]
    if not docs:
        raise RopeextError(f"{parquet}: no documents")
    return docs


def _usable(line: str) -> bool:
    return len(line.strip()) >= MIN_LINE_CHARS


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _short_lines(lines_per_doc: list[list[str]], tokenizer, max_line_tokens: int) -> set[str]:
    """The usable lines (stripped) that take at most ``max_line_tokens`` tokens."""
    usable = sorted({line.strip() for lines in lines_per_doc for line in lines if _usable(line)})
    if not usable:
        return set()
    counts = [len(x) for x in tokenizer(usable, add_special_tokens=False)["input_ids"]]
    return {line for line, n in zip(usable, counts) if n <= max_line_tokens}


def nextline_items(
    docs: list[str],
    tokenizer,
    *,
    n_items: int,
    context_lines: int,
    n_choices: int,
    max_context_tokens: int,
    seed: int,
    max_line_tokens: int = 32,
) -> list[dict]:
    """Multiple-choice items: ``context`` (lines joined by newlines), ``choices`` (lines), ``label``.

    The task joins context and choice with a newline (its ``target_delimiter``).

    Items are spread over documents (at most one per document per pass), positions and the place
    of the right answer are drawn from ``seed``. Answer and distractor lines take at most
    ``max_line_tokens`` tokens (their indentation aside), so a continuation always fits the window.
    """
    if n_choices < 2:
        raise RopeextError(f"next-line task: n_choices {n_choices} must be at least 2")
    rng = random.Random(seed)
    lines_per_doc = [d.split("\n") for d in docs]
    short = _short_lines(lines_per_doc, tokenizer, max_line_tokens)
    pool = [(i, line) for i, lines in enumerate(lines_per_doc) for line in lines if line.strip() in short]
    candidates = []
    for i, lines in enumerate(lines_per_doc):
        # the line before the answer is not blank and ends in no whitespace (lm-eval would move that
        # whitespace from the context into every choice)
        spots = [
            j
            for j in range(context_lines, len(lines))
            if lines[j].strip() in short and lines[j - 1].strip() and lines[j - 1] == lines[j - 1].rstrip()
        ]
        rng.shuffle(spots)
        candidates.append(spots)
    order = list(range(len(docs)))
    rng.shuffle(order)
    items: list[dict] = []
    depth = 0
    while len(items) < n_items and any(depth < len(c) for c in candidates):
        for i in order:
            if len(items) >= n_items:
                break
            if depth >= len(candidates[i]):
                continue
            j = candidates[i][depth]
            lines = lines_per_doc[i]
            answer = lines[j]
            others = [line for k, line in pool if k != i and line.strip() != answer.strip()]
            distinct = sorted({line.strip() for line in others})
            if len(distinct) < n_choices - 1:
                raise RopeextError(
                    f"next-line task: only {len(distinct)} distinct candidate lines outside one document; "
                    f"need {n_choices - 1} distractors (use more held-out documents or fewer choices)"
                )
            wrong = [_indent(answer) + s for s in rng.sample(distinct, n_choices - 1)]
            context_part = lines[j - context_lines : j]
            while len(context_part) > 1 and len(tokenizer("\n".join(context_part))["input_ids"]) > max_context_tokens:
                context_part = context_part[1:]
            label = rng.randrange(n_choices)
            choices = wrong[:label] + [answer] + wrong[label:]
            items.append(
                {
                    "id": len(items),
                    "context": "\n".join(context_part),
                    "choices": choices,
                    "label": label,
                    "doc_index": i,
                    "line": j,
                }
            )
        depth += 1
    if len(items) < n_items:
        raise RopeextError(
            f"next-line task: the held-out documents give only {len(items)} items with {context_lines} "
            f"context lines; {n_items} were asked for"
        )
    return items


def ppl_items(docs: list[str], tokenizer, *, n_docs: int, max_tokens: int) -> list[dict]:
    """The first ``max_tokens`` tokens of the first ``n_docs`` non-blank documents, as text."""
    out = []
    for i, doc in enumerate(docs):
        if not doc.strip():
            continue
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"][:max_tokens]
        out.append({"id": len(out), "text": tokenizer.decode(ids, skip_special_tokens=True), "doc_index": i})
        if len(out) >= n_docs:
            break
    if len(out) < n_docs:
        raise RopeextError(f"perplexity task: only {len(out)} non-blank held-out documents; {n_docs} were asked for")
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_text(path, blob)
    return hashlib.sha256(blob.encode()).hexdigest()


def _write_yaml(path: Path, cfg: dict) -> None:
    write_text(path, yaml.safe_dump(cfg, sort_keys=False))


def nextline_yaml(train: Path, test: Path) -> dict:
    return {
        "task": NEXTLINE_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": str(train.resolve()), "test": str(test.resolve())}},
        "training_split": "train",
        "fewshot_split": "train",
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": "\n",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def code_ppl_yaml(test: Path) -> dict:
    return {
        "task": CODE_PPL_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(test.resolve())}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "text",
        "metric_list": [
            {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
        ],
        "metadata": {"version": 1.0},
    }


# One process evaluating several variants (`ropeext each`) draws the items once per held-out file, tokenizer
# and settings: the draw is a function of them alone, and on a large held-out split it takes seconds.
_DRAWS: dict[tuple, tuple[int, list[dict], list[dict]]] = {}


def _draw_key(parquet: str | Path, tokenizer, settings) -> tuple | None:
    """What the items are drawn from: the file (path, size, mtime), the tokenizer (its serialized vocabulary and
    rules) and the settings; None (no reuse) for a tokenizer without a serialized form."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    path = Path(parquet).resolve()
    if backend is None or not path.is_file():
        return None
    stat = path.stat()
    vocab = hashlib.sha256(backend.to_str().encode()).hexdigest()
    return str(path), stat.st_size, stat.st_mtime_ns, vocab, repr(settings)


def build_local_tasks(
    parquet: str | Path,
    tokenizer,
    folder: str | Path,
    *,
    n_items: int = 40,
    n_fewshot_items: int = 5,
    context_lines: int = 6,
    n_choices: int = 4,
    max_context_tokens: int = 192,
    max_line_tokens: int = 32,
    ppl_docs: int = 8,
    ppl_tokens: int = 512,
    seed: int = 0,
) -> dict:
    """Write both local tasks under ``folder`` (one sub-folder each); return a manifest.

    The next-line items for few-shot examples (``train``) come from the same draw as the test
    items but never coincide with them.
    """
    folder = Path(folder)
    options = dict(context_lines=context_lines, n_choices=n_choices, max_context_tokens=max_context_tokens, seed=seed)
    options |= dict(n_items=n_items + n_fewshot_items, max_line_tokens=max_line_tokens)
    key = _draw_key(parquet, tokenizer, (sorted(options.items()), ppl_docs, ppl_tokens))
    drawn = _DRAWS.get(key) if key is not None else None
    if drawn is None:
        docs = read_documents(parquet, tokenizer)
        nextline = nextline_items(docs, tokenizer, **options)
        drawn = len(docs), nextline, ppl_items(docs, tokenizer, n_docs=ppl_docs, max_tokens=ppl_tokens)
        if key is not None:
            _DRAWS[key] = drawn
    n_docs, items, ppl = drawn
    train, test = items[:n_fewshot_items], items[n_fewshot_items:]

    nl_dir, ppl_dir = folder / NEXTLINE_TASK, folder / CODE_PPL_TASK
    nl_dir.mkdir(parents=True, exist_ok=True)
    ppl_dir.mkdir(parents=True, exist_ok=True)
    sha = {
        "nextline_train": _write_jsonl(nl_dir / "train.jsonl", train),
        "nextline_test": _write_jsonl(nl_dir / "test.jsonl", test),
        "code_ppl_test": _write_jsonl(ppl_dir / "test.jsonl", ppl),
    }
    _write_yaml(nl_dir / f"{NEXTLINE_TASK}.yaml", nextline_yaml(nl_dir / "train.jsonl", nl_dir / "test.jsonl"))
    _write_yaml(ppl_dir / f"{CODE_PPL_TASK}.yaml", code_ppl_yaml(ppl_dir / "test.jsonl"))
    return {
        "source": str(Path(parquet).resolve()),
        "documents": n_docs,
        "tasks": {
            NEXTLINE_TASK: {
                "test_items": len(test),
                "fewshot_items": len(train),
                "choices": n_choices,
                "context_lines": context_lines,
                "max_context_tokens": max_context_tokens,
                "max_line_tokens": max_line_tokens,
            },
            CODE_PPL_TASK: {"documents": len(ppl), "max_tokens": ppl_tokens},
        },
        "seed": seed,
        "sha256": sha,
    }
