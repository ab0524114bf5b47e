"""Deterministic word material: pronounceable syllable words, numbers, UUIDs, coded words.

Nothing here is a shipped word list: the vocabulary is generated from syllables under a fixed
seed, so every run (and every machine) draws the same words for the same sample seed.
"""

from __future__ import annotations

import random
import string
import uuid
from functools import lru_cache

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kl", "pl", "st", "tr", "ch", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "", "n", "r", "l", "s", "m"]

VOCAB_SEED = "ropeext-ruler-vocabulary"


@lru_cache(maxsize=4)
def syllable_vocabulary(size: int = 8000, seed: str = VOCAB_SEED) -> tuple[str, ...]:
    """``size`` distinct lowercase words of two or three syllables, in a seeded order."""
    rng = random.Random(seed)
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < size:
        n = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return tuple(words)


def random_number(rng: random.Random, digits: int = 7) -> str:
    return str(rng.randint(10 ** (digits - 1), 10 ** digits - 1))


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def random_key_word(rng: random.Random) -> str:
    """A two-part key such as ``brona-telis`` (the role RULER gives an adjective-noun pair)."""
    vocab = syllable_vocabulary()
    return f"{rng.choice(vocab)}-{rng.choice(vocab)}"


def random_item(rng: random.Random, kind: str) -> str:
    """One key or value of ``kind`` (``words``, ``numbers`` or ``uuids``)."""
    if kind == "words":
        return random_key_word(rng)
    if kind == "numbers":
        return random_number(rng)
    if kind == "uuids":
        return random_uuid(rng)
    raise ValueError(f"unknown item kind {kind!r}")


def distinct_items(rng: random.Random, kind: str, n: int, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct items of ``kind``, none of them in ``exclude``."""
    out: list[str] = []
    taken = set(exclude or ())
    while len(out) < n:
        item = random_item(rng, kind)
        if item not in taken:
            taken.add(item)
            out.append(item)
    return out


def coded_words(rng: random.Random, n: int, length: int = 6) -> list[str]:
    """``n`` distinct random lowercase strings of ``length`` letters (frequent-words extraction)."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        w = "".join(rng.choices(string.ascii_lowercase, k=length))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def variable_names(rng: random.Random, n: int, length: int = 5) -> list[str]:
    """``n`` distinct upper-case variable names (variable tracking)."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        w = "".join(rng.choices(string.ascii_uppercase, k=length))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out
