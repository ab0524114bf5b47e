"""Deterministic word material: word keys, common words, numbers, UUIDs, coded words.

Word keys are adjective-noun pairs drawn from the word lists of the ``wonderwords`` package (the
version pinned in requirements.lock), as RULER draws them: RULER picks uniformly among the
distinct strings ``f"{adjective}-{noun}"`` of its deduplicated adjective and noun lists; no two
pairs of those lists spell the same string, so drawing the adjective and the noun independently
and uniformly gives the same distribution without building the six-million-entry list. The
common-words task draws from the nouns, adjectives and verbs together (RULER's list for it) and,
when a sample needs more distinct words than those lists hold, from pronounceable syllable words
(where RULER switches to a larger English word list). The lists are read from the installed
package's files; every draw uses the sample's own seeded ``random.Random``, so every run and
every machine draws the same words for the same seed, offline.
"""

from __future__ import annotations

import random
import string
import uuid
from functools import lru_cache
from importlib.resources import files

from ropeext.errors import RopeextError

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gr",
    "kl",
    "pl",
    "st",
    "tr",
    "ch",
    "sh",
]
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
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


WORD_LISTS = {"nouns": "nounlist.txt", "adjectives": "adjectivelist.txt", "verbs": "verblist.txt"}


@lru_cache(maxsize=None)
def wonderwords_list(category: str) -> tuple[str, ...]:
    """The sorted distinct entries of one of wonderwords' word lists (``nouns``, ``adjectives``, ``verbs``)."""
    name = WORD_LISTS[category]
    try:
        text = files("wonderwords.assets").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise RopeextError(
            f"cannot read the wonderwords word list {name} ({exc}); install the wonderwords "
            "version pinned in requirements.lock"
        ) from None
    words = tuple(sorted({w.rstrip() for w in text.splitlines() if w.strip()}))
    if not words:
        raise RopeextError(f"the wonderwords word list {name} is empty")
    return words


def random_key_word(rng: random.Random) -> str:
    """An adjective-noun key such as ``ancient-harbor``, uniform over RULER's key strings."""
    return f"{rng.choice(wonderwords_list('adjectives'))}-{rng.choice(wonderwords_list('nouns'))}"


@lru_cache(maxsize=1)
def common_words() -> tuple[str, ...]:
    """RULER's common-words vocabulary: wonderwords' nouns, adjectives and verbs, distinct and sorted."""
    return tuple(
        sorted(set(wonderwords_list("nouns")) | set(wonderwords_list("adjectives")) | set(wonderwords_list("verbs")))
    )


def cwe_vocabulary(need: int) -> tuple[str, ...]:
    """A vocabulary holding at least ``need`` distinct words: RULER's list, or syllable words beyond it."""
    english = common_words()
    if need <= len(english):
        return english
    size = 8192
    while size < need:
        size *= 2
    return syllable_vocabulary(size)


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
