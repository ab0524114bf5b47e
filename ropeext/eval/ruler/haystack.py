"""Haystack material: the repeated noise filler and essay text read from a local corpus.

A haystack is a stream of words cut from a text that repeats cyclically: the noise filler (the
five filler sentences, repeated) or an essay corpus (documents one after another, repeated
when the corpus is shorter than the context). Cutting keeps the text's own whitespace, and
needles go in at sentence ends where there is one near the requested depth.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

from ropeext.errors import RopeextError

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NOISE_SENTENCES = tuple(s.strip() + "." for s in NOISE.split(".") if s.strip())

_WORD = re.compile(r"\S+")
_SENTENCE_END = (".", "!", "?", '."', '?"', '!"', ".)")


class WordStream:
    """The words of ``text``, repeated without end (copies joined by ``joiner``)."""

    def __init__(self, text: str, joiner: str = " "):
        spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        if not spans:
            raise RopeextError("haystack text has no words")
        self.text = text
        self.joiner = joiner
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]
        n = len(spans)
        # word i ends a sentence when it ends with terminal punctuation or a line break follows it
        self._sentence_ends = [
            i
            for i in range(n)
            if text[spans[i][0] : spans[i][1]].endswith(_SENTENCE_END)
            or (i + 1 < n and "\n" in text[spans[i][1] : spans[i + 1][0]])
            or i == n - 1
        ]

    def __len__(self) -> int:
        return len(self.starts)

    def span(self, a: int, b: int) -> str:
        """Text of the words with global indices [a, b) (indices past the end wrap around)."""
        if b <= a:
            return ""
        n = len(self)
        pieces = []
        while a < b:
            i = a % n
            take = min(b - a, n - i)
            pieces.append(self.text[self.starts[i] : self.ends[i + take - 1]])
            a += take
        return self.joiner.join(pieces)

    def is_sentence_end(self, i: int) -> bool:
        j = i % len(self)
        k = bisect.bisect_left(self._sentence_ends, j)
        return k < len(self._sentence_ends) and self._sentence_ends[k] == j

    def boundary_near(self, start: int, n: int, depth: float, window: int = 64) -> int:
        """A cut point in [0, n] (words after ``start``) near ``depth * n``, at a sentence end if one is close."""
        target = int(round(depth * n))
        if target <= 0 or target >= n:
            return min(max(target, 0), n)
        for d in range(0, window + 1):
            for cut in (target - d, target + d):
                if 0 < cut < n and self.is_sentence_end(start + cut - 1):
                    return cut
        return target

    def with_insertions(self, start: int, n: int, inserts: list[tuple[int, str]]) -> str:
        """The ``n`` words after ``start`` with each (cut point, text) inserted, joined by spaces."""
        parts: list[str] = []
        prev = 0
        for cut, piece in sorted(inserts, key=lambda t: t[0]):
            seg = self.span(start + prev, start + cut)
            if seg:
                parts.append(seg)
            parts.append(piece)
            prev = cut
        tail = self.span(start + prev, start + n)
        if tail:
            parts.append(tail)
        return " ".join(parts)


def noise_stream() -> WordStream:
    return WordStream(NOISE, joiner=" ")


def filler_words(p: int) -> str:
    """The first ``p`` words of the repeated noise filler (padding that carries no information)."""
    return noise_stream().span(0, p)


def _decode_parquet(path: Path, tokenizer, max_tokens: int | None) -> list[str]:
    try:
        # heavy: pyarrow loads only when parquet is read or written
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - turned into a clear message
        raise RopeextError(f"essay source {path}: cannot read Parquet ({exc})") from None
    if "input_ids" not in table.column_names:
        raise RopeextError(
            f"essay source {path}: no 'input_ids' column "
            f"(columns: {', '.join(table.column_names)}); expected list<int32> token ids"
        )
    if tokenizer is None:
        raise RopeextError(f"essay source {path}: a tokenizer is needed to decode its input_ids")
    docs, total = [], 0
    for ids in table.column("input_ids").to_pylist():
        if not ids:
            continue
        docs.append(tokenizer.decode(ids, skip_special_tokens=True))
        total += len(ids)
        if max_tokens is not None and total >= max_tokens:
            break
    return docs


def load_essay_texts(source: str | Path, tokenizer=None, max_tokens: int | None = None) -> list[str]:
    """Documents from a folder of ``.txt`` files (sorted by path) or a Parquet of ``input_ids``."""
    path = Path(source)
    if not path.exists():
        raise RopeextError(
            f"essay source not found: {path} (expected a folder of .txt files or a "
            f"Parquet file with an input_ids column)"
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise RopeextError(f"essay source {path}: the folder holds no .txt files")
        docs, chars = [], 0
        for f in files:
            try:
                text = f.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise RopeextError(f"essay source {f}: cannot read ({exc})") from None
            if text.strip():
                docs.append(text.strip())
                chars += len(text)
            if max_tokens is not None and chars >= 8 * max_tokens:
                break
    elif path.suffix == ".parquet":
        docs = _decode_parquet(path, tokenizer, max_tokens)
    else:
        raise RopeextError(f"essay source {path}: expected a folder of .txt files or a .parquet file")
    if not docs:
        raise RopeextError(f"essay source {path}: no non-empty documents")
    return docs


def essay_stream(source: str | Path, tokenizer=None, max_tokens: int | None = None) -> WordStream:
    """The essay haystack: the source's documents one after another, separated by blank lines."""
    return WordStream("\n\n".join(load_essay_texts(source, tokenizer, max_tokens)), joiner="\n\n")
