"""Word material as RULER draws it: adjective-noun keys and common words from wonderwords, seeded."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ropeext.eval.ruler import words as W


@pytest.fixture(scope="module")
def lists():
    """wonderwords' own lists, through its public API (independent of the files ropeext reads)."""
    from wonderwords import RandomWord

    r = RandomWord()
    return {c: set(r.filter(include_categories=[c])) for c in ("adjectives", "nouns", "verbs")}


def test_lists_are_wonderwords_lists(lists):
    for category, expected in lists.items():
        got = W.wonderwords_list(category)
        assert set(got) == expected and list(got) == sorted(got) and len(got) == len(expected)
    assert len(W.wonderwords_list("adjectives")) == 910 and len(W.wonderwords_list("nouns")) == 6782
    assert set(W.common_words()) == lists["adjectives"] | lists["nouns"] | lists["verbs"]


def test_keys_are_adjective_noun_pairs_and_seeded(lists):
    keys = W.distinct_items(random.Random("ruler:0:niah_single_1:4096:0"), "words", 300)
    again = W.distinct_items(random.Random("ruler:0:niah_single_1:4096:0"), "words", 300)
    other = W.distinct_items(random.Random("ruler:1:niah_single_1:4096:0"), "words", 300)
    assert keys == again and keys != other and len(set(keys)) == 300
    for key in keys:
        splits = [(key[:i], key[i + 1 :]) for i, c in enumerate(key) if c == "-"]
        assert any(a in lists["adjectives"] and n in lists["nouns"] for a, n in splits), key


def test_no_two_pairs_spell_the_same_key(lists):
    """RULER draws uniformly among the distinct strings adjective-noun; with no string spelled by two
    pairs, independent uniform draws of the two words give exactly that distribution."""
    adjs, nouns = lists["adjectives"], lists["nouns"]
    clashes = []
    for a2 in adjs:  # a2-n2 == a1-n1 with a1 != a2 needs a1 = p, a2 = p-r, n1 = r-n2
        for i in [i for i, c in enumerate(a2) if c == "-"]:
            p, r = a2[:i], a2[i + 1 :]
            if p in adjs:
                clashes += [(p, n1) for n1 in nouns if n1.startswith(r + "-") and n1[len(r) + 1 :] in nouns]
    assert clashes == []


def test_keys_are_uniform_over_both_lists():
    from scipy.stats import chisquare

    rng = random.Random("uniformity")
    draws = [W.random_key_word(rng) for _ in range(60_000)]
    adjs, nouns = W.wonderwords_list("adjectives"), W.wonderwords_list("nouns")
    adj_set, noun_set = set(adjs), set(nouns)
    by_adj: Counter = Counter()
    by_noun: Counter = Counter()
    for key in draws:
        a, n = next(
            (key[:i], key[i + 1 :])
            for i, c in enumerate(key)
            if c == "-" and key[:i] in adj_set and key[i + 1 :] in noun_set
        )
        by_adj[a] += 1
        by_noun[n] += 1
    assert chisquare([by_adj[a] for a in adjs]).pvalue > 1e-3
    assert chisquare([by_noun[n] for n in nouns]).pvalue > 1e-3
    # a skewed draw (say, the first half of the adjectives only) would fail the same test
    assert chisquare([by_adj[a] if i % 2 else 2 * by_adj[a] for i, a in enumerate(adjs)]).pvalue < 1e-6


def test_cwe_vocabulary_switches_beyond_the_word_lists():
    english = W.common_words()
    assert W.cwe_vocabulary(len(english)) is english
    bigger = W.cwe_vocabulary(len(english) + 1)
    assert len(bigger) >= len(english) + 1 and not set(bigger) & {"apple", "run"}
