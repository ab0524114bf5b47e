"""Long texts cut into pieces of bounded size at pre-token boundaries (stdlib only: spawned workers load it).

The cut rule: a piece ends just before a space (U+0020) that follows a character that is not
whitespace, the last such space within ``max_chars`` characters of the piece's start. Byte-level BPE
tokenizers split text into pre-tokens with a GPT-2 style regex (the BPE ``ropeext tokenizer``
trains, GPT-2, Llama 3, Qwen 2, ...), and no pre-token of theirs holds a non-space character followed
by a space: a space after a word always starts a pre-token (`` word``). Each piece therefore gives
exactly the ids of its stretch of the whole text, and the pieces' ids joined are the ids of the
whole text; a tokenizer that treats the start of every text specially (a SentencePiece-style
``Prepend("▁")`` normalizer, say) can differ by a token at each cut.

A stretch of ``max_chars`` characters without such a space (a long base64 string, CJK text with no
spaces) is cut at ``max_chars`` exactly; there a pre-token is split in two and the ids of the next
few characters may differ from those of the whole text.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

_LAST_CUT = re.compile(r"(?s).*\S ")  # greedy: matches up to the last space that follows a non-whitespace character


def cut_points(text: str, max_chars: int) -> list[int]:
    """Start offsets of the pieces of ``text`` (the first is 0; ``[0]`` for a text that needs no cut)."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    starts, start, n = [0], 0, len(text)
    while n - start > max_chars:
        limit = start + max_chars  # the next piece may start at most here
        m = _LAST_CUT.match(text, start, limit + 1)
        start = m.end() - 1 if m else limit
        starts.append(start)
    return starts


def text_pieces(text: str, max_chars: int) -> list[str]:
    """``text`` cut into pieces of at most ``max_chars`` characters by the rule above; ``[text]`` if short enough."""
    if len(text) <= max_chars:
        return [text]
    starts = cut_points(text, max_chars)
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def piece_batches(batches: Iterable[list[str]], max_chars: int) -> Iterator[list[str]]:
    """Lists of texts regrouped as lists of pieces of about ``max_chars`` characters in all (tokenizer training)."""
    out, chars = [], 0
    for texts in batches:
        for text in texts:
            for piece in text_pieces(text, max_chars):
                if out and chars + len(piece) > max_chars:
                    yield out
                    out, chars = [], 0
                out.append(piece)
                chars += len(piece)
    if out:
        yield out
