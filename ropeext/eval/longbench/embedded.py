"""Build a LongBench-E-style code-completion task (like ``lcc``) from held-out code.

Each sample's context is a run of whole lines of one held-out document; the answer is the next
non-empty line (with its indentation, trailing whitespace removed), as in lcc. Samples are drawn
into length buckets by the token count of context + answer under the model's tokenizer, so that
the buckets can be scaled to a small model's windows (for a model pre-trained at L and extended
to L': context + answer + prompt + generation under about L, 2L and L'). The ``length`` field
holds that token count; ``buckets.json`` records the edges, their unit and how the task was built.

Answer lines that hold a backtick, ``#`` or ``//`` are never chosen: the code_sim metric skips such
lines in a prediction, so a correct prediction of them could not score.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Iterable, Sequence

from ropeext.errors import RopeextError
from ropeext.eval.longbench import protocol
from ropeext.eval.longbench.data import MANIFEST
from ropeext.eval.longbench.results import edge_buckets
from ropeext.io import write_json, write_jsonl

MIN_ANSWER_CHARS = 4


def default_edges(windows: Sequence[int], margin: int) -> list[int]:
    """Edges from windows (e.g. L, 2L, L'): the lowest is a quarter of the first window, each
    upper edge is its window minus ``margin`` (room for the prompt header and the generation)."""
    windows = [int(w) for w in windows]
    if not windows or any(b <= a for a, b in zip(windows, windows[1:])):
        raise RopeextError(f"windows {windows}: expected increasing window lengths, e.g. 256,512,1024")
    edges = [max(1, windows[0] // 4)] + [w - int(margin) for w in windows]
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise RopeextError(
            f"windows {windows} with margin {margin} give edges {edges} that do not increase; "
            f"use a smaller margin or give --bucket-edges"
        )
    return edges


def documents_from_parquet(path: str | Path, tokenizer, column: str = "input_ids") -> list[str]:
    """Decode the held-out documents of a tokens Parquet (one row per document)."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"tokens file not found: {path} (expected a Parquet with one document per row)")
    try:
        table = pq.read_table(path, columns=[column])
    except Exception as exc:  # noqa: BLE001
        raise RopeextError(f"{path}: cannot read column {column!r} ({exc})") from None
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in table.column(column).to_pylist()]


def documents_from_files(root: str | Path, pattern: str = "*.py") -> list[str]:
    """Read every file matching ``pattern`` under ``root`` (sorted, UTF-8, undecodable files skipped)."""
    root = Path(root)
    if not root.exists():
        raise RopeextError(f"source folder not found: {root}")
    files = [root] if root.is_file() else sorted(root.rglob(pattern))
    docs = []
    for f in files:
        try:
            docs.append(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    if not docs:
        raise RopeextError(f"no readable {pattern} files under {root}")
    return docs


def _answer_ok(line: str) -> bool:
    s = line.strip()
    return len(s) >= MIN_ANSWER_CHARS and "`" not in s and "#" not in s and "//" not in s


class _Doc:
    def __init__(self, text: str, tokenizer):
        self.lines = text.splitlines(keepends=True)
        counts = [len(x) for x in tokenizer(self.lines, add_special_tokens=False).input_ids] if self.lines else []
        self.prefix = [0]
        for c in counts:
            self.prefix.append(self.prefix[-1] + c)
        self.counts = counts
        self.answers = [j for j, line in enumerate(self.lines) if j > 0 and _answer_ok(line)]


def _ntok(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def build_samples(
    documents: Sequence[str],
    tokenizer,
    edges: Sequence[int],
    per_bucket: int,
    *,
    seed: int = 0,
    task: str = protocol.EMBEDDED_TASK,
    max_tries: int | None = None,
) -> list[dict]:
    """Draw ``per_bucket`` samples for each bucket ``[edges[i], edges[i+1])`` (tokens of context + answer)."""
    buckets = edge_buckets(edges)
    rng = random.Random(seed)
    docs = [_Doc(t, tokenizer) for t in documents if t.strip()]
    docs = [d for d in docs if d.answers]
    if not docs:
        raise RopeextError("no held-out document has a usable answer line (a non-empty code line)")
    samples: list[dict] = []
    used: set[tuple[int, int]] = set()
    for lo, hi in zip(buckets.edges, buckets.edges[1:]):
        got, tries = 0, 0
        limit = max_tries or per_bucket * 50
        order = list(range(len(docs)))
        while got < per_bucket and tries < limit:
            rng.shuffle(order)
            progressed = False
            for di in order:
                if got >= per_bucket or tries >= limit:
                    break
                tries += 1
                d = docs[di]
                target = rng.randrange(lo, hi)
                cands = [j for j in d.answers if d.prefix[j + 1] >= target and (di, j) not in used]
                if not cands:
                    continue
                j = rng.choice(cands)
                budget = target - d.counts[j]
                i = j
                while i > 0 and d.prefix[j] - d.prefix[i - 1] <= budget:
                    i -= 1
                if i == j:
                    continue
                context = "".join(d.lines[i:j])
                answer = d.lines[j].rstrip()
                length = _ntok(tokenizer, context) + _ntok(tokenizer, answer)
                if not lo <= length < hi:
                    continue
                used.add((di, j))
                got += 1
                progressed = True
                samples.append(_record(task, context, answer, length))
            if not progressed and all(
                not [j for j in docs[k].answers if docs[k].prefix[j + 1] >= lo] for k in range(len(docs))
            ):
                break
        if got == 0:
            raise RopeextError(
                f"bucket {lo}-{hi} tokens: no held-out document is long enough to give a sample; "
                f"lower the bucket edges or provide longer documents"
            )
    return samples


def _record(task: str, context: str, answer: str, length: int) -> dict:
    digest = hashlib.sha256((context + "\x00" + answer).encode("utf-8")).hexdigest()[:48]
    return {
        "input": "",
        "context": context,
        "answers": [answer],
        "length": int(length),
        "all_classes": None,
        "dataset": task,
        "language": "python",
        "_id": digest,
    }


def write_task(out_dir: str | Path, samples: Sequence[dict], *, task: str, edges: Sequence[int], meta: dict) -> dict:
    """Write ``<task>_e.jsonl`` (atomically) and merge the task into ``buckets.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = write_jsonl(out / f"{task}_e.jsonl", samples)
    buckets = edge_buckets(edges)
    counts = {name: 0 for name in buckets.names}
    for s in samples:
        counts[buckets.names[buckets.index(s["length"])]] += 1
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"tasks": {}}
    manifest["tasks"][task] = {
        "file": path.name,
        "unit": "tokens",
        "edges": list(map(int, edges)),
        "buckets": list(buckets.names),
        "counts": counts,
        "metric": "code_sim",
        "prompt": protocol.EMBEDDED_PROMPT,
        "max_new_tokens": protocol.EMBEDDED_MAX_NEW_TOKENS,
        **meta,
    }
    write_json(manifest_path, manifest)
    return manifest


def build_embedded_task(
    documents: Iterable[str],
    tokenizer,
    out_dir: str | Path,
    *,
    edges: Sequence[int],
    per_bucket: int = 20,
    seed: int = 0,
    task: str = protocol.EMBEDDED_TASK,
    meta: dict | None = None,
) -> dict:
    """Draw the samples and write the task folder; returns the manifest."""
    if per_bucket < 1:
        raise RopeextError(f"--per-bucket: {per_bucket} must be >= 1")
    samples = build_samples(list(documents), tokenizer, edges, per_bucket, seed=seed, task=task)
    return write_task(
        out_dir, samples, task=task, edges=edges, meta={"seed": seed, "per_bucket": per_bucket, **(meta or {})}
    )
