"""Seeded sample generators for the RULER tasks, fitted to a length in the model's tokens.

Every sample is a pure function of (seed, task, length, index) and the sources (its draws come from
``random.Random`` seeded with a string naming the sample). The length is counted as RULER counts it,
prompt tokens (BOS included) plus the generation budget; every sample lands in [length - 2%, length].
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ropeext.errors import RopeextError
from ropeext.eval.ruler import words as W
from ropeext.eval.ruler.fit import TooShort, encode, fit_prompt, tolerance
from ropeext.eval.ruler.haystack import NOISE_SENTENCES, WordStream, filler_words, noise_stream
from ropeext.eval.ruler.qa import QASource
from ropeext.eval.ruler.tasks import METRICS, ROPEEXT_TEMPLATES, TASKS

NEEDLE = "One of the special magic {type_v} for {key} is: {value}."


@dataclass
class Sources:
    """What the generators read: the essay haystack and the QA sources by dataset name."""

    essay: WordStream | None = None
    qa: dict[str, QASource] = field(default_factory=dict)


@dataclass
class _Plan:
    build: Callable[[int, int], str]
    answers: list[str]
    depth: float | None = None
    hint: int = 16
    max_units: int | None = None
    max_pad: int = 256
    extra: dict = field(default_factory=dict)


def sample_key(seed: int, task: str, length: int, index: int) -> str:
    return f"ruler:{seed}:{task}:{length}:{index}"


def _fill(text: str, fields: dict, what: str) -> str:
    try:
        return text.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise RopeextError(
            f"{what}: cannot fill the template ({exc!r}); placeholders available: {', '.join(sorted(fields))}"
        ) from None


def render(tpl: dict, kind: str, context: str, fields: dict, *, single: bool = False) -> str:
    """The filled template, then the answer prefix (joined by the templates' ``delimiter``, if any, where neither
    side has whitespace at the seam); ``single`` selects a one-needle wording where the templates have one."""
    template = tpl.get("template_single", tpl["template"]) if single else tpl["template"]
    prefix = tpl.get("answer_prefix_single", tpl["answer_prefix"]) if single else tpl["answer_prefix"]
    text = _fill(template, {**fields, "context": context}, f"{kind} template")
    answer = _fill(prefix, fields, f"{kind} answer_prefix")
    delim = tpl.get("delimiter")
    if delim and text and answer and not text[-1].isspace() and not answer[0].isspace():
        return text + delim + answer
    return text + answer


def render_example(tpl: dict, kind: str, context: str, fields: dict, answer: str) -> str:
    """A worked example as RULER's generators write one: template, raw answer prefix, a space, the answer."""
    prefix = tpl.get("example_answer_prefix", tpl["answer_prefix"])
    return (
        _fill(tpl["template"], {**fields, "context": context}, f"{kind} template")
        + _fill(prefix, fields, f"{kind} answer_prefix")
        + " "
        + answer
    )


def niah_fields(value_kind: str, queries: list[str], num_values: int) -> dict:
    """The fields of a needle question; one value asked about reads in the singular."""
    single = len(queries) * num_values == 1
    type_v = value_kind[:-1] if single else value_kind
    query = queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]
    return {
        "type_v": type_v,
        "type_needle_v": type_v,
        "verb": "is" if single else "are",
        "them": "it" if single else "them",
        "query": query,
    }


def _insert_units(units: list[str], inserts: list[tuple[float, str]]) -> list[str]:
    """``units`` with each (fraction, text) placed after round(fraction * len(units)) units, in order."""
    n = len(units)
    placed = sorted(((int(round(f * n)), i, text) for i, (f, text) in enumerate(inserts)))
    out: list[str] = []
    prev = 0
    for cut, _, text in placed:
        out.extend(units[prev:cut])
        out.append(text)
        prev = cut
    out.extend(units[prev:])
    return out


def _with_pad(text: str, p: int) -> str:
    return f"{text} {filler_words(p)}" if p else text


# ---------------------------------------------------------------- needle in a haystack


def _plan_niah(spec: dict, key: str, rng: random.Random, tpl: dict, sources: Sources, budget: int, tokenizer) -> _Plan:
    nk = max(spec["k"], spec["q"])
    keys = W.distinct_items(rng, spec["key"], nk)
    used = set(keys)
    values: dict[str, list[str]] = {}
    for k in keys:
        values[k] = W.distinct_items(rng, spec["value"], spec["v"], exclude=used)
        used |= set(values[k])
    needles = [(k, NEEDLE.format(type_v=spec["value"], key=k, value=v)) for k in keys for v in values[k]]
    depths = [rng.random() for _ in needles]
    queries = rng.sample(keys, spec["q"])
    answers = [v for q in queries for v in values[q]]
    single = spec["q"] * spec["v"] == 1
    fields = niah_fields(spec["value"], queries, spec["v"])
    depth = depths[[k for k, _ in needles].index(queries[0])]

    if spec["haystack"] in ("noise", "essay"):
        if spec["haystack"] == "essay":
            if sources.essay is None:
                raise RopeextError(
                    "the essay haystack needs an essay source (--essay-source: a folder of "
                    ".txt files or a Parquet of input_ids)"
                )
            stream = sources.essay
            ends = stream._sentence_ends
            start = (rng.choice(ends) + 1) % len(stream)
        else:
            stream, start = noise_stream(), 0

        def context(n: int, p: int) -> str:
            inserts = [(stream.boundary_near(start, n, d), text) for d, (_, text) in zip(depths, needles)]
            return _with_pad(stream.with_insertions(start, n, inserts), p)

        hint = max(1, budget // 2)
    else:  # a haystack of distractor needles with other keys
        drng = random.Random(key + ":distractors")
        distractors: list[str] = []

        def context(n: int, p: int) -> str:
            while len(distractors) < n:
                dk = W.random_item(drng, spec["key"])
                if dk in used:
                    continue
                used.add(dk)
                distractors.append(
                    NEEDLE.format(type_v=spec["value"], key=dk, value=W.random_item(drng, spec["value"]))
                )
            units = _insert_units(distractors[:n], [(d, text) for d, (_, text) in zip(depths, needles)])
            return _with_pad(" ".join(units), p)

        hint = max(1, budget // 20)

    return _Plan(lambda n, p: render(tpl, "niah", context(n, p), fields, single=single), answers, depth, hint)


# ---------------------------------------------------------------- variable tracking


def _vt_context(chains: list[list[str]], fracs: list[list[float]], n: int, p: int) -> str:
    sentences = [NOISE_SENTENCES[i % len(NOISE_SENTENCES)] for i in range(n)]
    inserts = [(f, stmt) for chain, fs in zip(chains, fracs) for f, stmt in zip(fs, chain)]
    return _with_pad(" ".join(_insert_units(sentences, inserts)), p)


def _vt_chains(rng: random.Random, num_chains: int, hops: int, name_len: int):
    names = W.variable_names(rng, num_chains * (hops + 1), name_len)
    chains, groups = [], []
    for c in range(num_chains):
        vs = names[c * (hops + 1) : (c + 1) * (hops + 1)]
        value = str(rng.randint(10000, 99999))
        chains.append([f"VAR {vs[0]} = {value}"] + [f"VAR {vs[j + 1]} = VAR {vs[j]}" for j in range(hops)])
        groups.append((vs, value))
    fracs = [sorted(rng.random() for _ in chain) for chain in chains]
    return chains, groups, fracs


def _plan_vt(spec: dict, key: str, rng: random.Random, tpl: dict, sources: Sources, budget: int, tokenizer) -> _Plan:
    chains, groups, fracs = _vt_chains(rng, spec["chains"], spec["hops"], 5)
    names, value = groups[0]
    fields = {"query": value, "num_v": spec["hops"] + 1}
    # one worked example before the question, as RULER adds; left out where it would take over a
    # quarter of the budget (short targets)
    erng = random.Random(key + ":example")
    e_chains, e_groups, e_fracs = _vt_chains(erng, spec["chains"], min(10, spec["hops"]), 3)
    e_names, e_value = e_groups[0]
    # the example's answer, then a blank line twice (as RULER)
    example = (
        render_example(
            tpl,
            "vt",
            _vt_context(e_chains, e_fracs, 2 * len(NOISE_SENTENCES), 0),
            {"query": e_value, "num_v": len(e_names)},
            " ".join(e_names),
        )
        + "\n\n\n\n"
    )
    use_example = len(encode(tokenizer, example)) <= budget // 4
    prefix = example if use_example else ""
    return _Plan(
        lambda n, p: prefix + render(tpl, "vt", _vt_context(chains, fracs, n, p), fields),
        names,
        fracs[0][0],
        max(1, budget // 8),
        extra={"fewshot": use_example},
    )


# ---------------------------------------------------------------- common words extraction


def _numbered(entries: list[str], first: int = 1) -> str:
    return " ".join(f"{i}. {w}" for i, w in enumerate(entries, first))


def _cwe_list(r: random.Random, num_words: int, freq_cw: int, freq_ucw: int, num_cw: int):
    chosen = r.sample(W.cwe_vocabulary(num_words), num_words)
    common, uncommon = chosen[:num_cw], chosen[num_cw:]
    entries = common * freq_cw + uncommon * freq_ucw
    r.shuffle(entries)
    return entries, common


def _plan_cwe(
    spec: dict, key: str, rng: random.Random, tpl: dict, sources: Sources, budget: int, tokenizer, length: int = 0
) -> _Plan:
    num_cw = spec["num_cw"]
    if length < 4096:  # RULER's settings for short contexts
        freq_cw, freq_ucw, ex = 6, 1, (20, 3, 1)
    else:
        freq_cw, freq_ucw, ex = spec["freq_cw"], spec["freq_ucw"], (40, 10, 3)
    fields = {"num_cw": num_cw, "query": ""}
    e_entries, e_common = _cwe_list(random.Random(key + ":example"), ex[0], ex[1], ex[2], num_cw)
    example = render_example(tpl, "cwe", _numbered(e_entries), fields, _numbered(e_common)) + "\n"
    common = _cwe_list(random.Random(key + ":common"), num_cw, 1, 0, num_cw)[1]

    def build(n: int, p: int) -> str:
        r = random.Random(f"{key}:{n}:{p}")
        others = [w for w in r.sample(W.cwe_vocabulary(num_cw + n + p), num_cw + n + p) if w not in common][: n + p]
        uncommon, singles = others[:n], others[n:]
        entries = common * freq_cw + uncommon * freq_ucw
        r.shuffle(entries)
        entries += singles  # padding: words seen once, never among the most common
        return example + render(tpl, "cwe", _numbered(entries), fields)

    return _Plan(
        build,
        list(common),
        None,
        max(0, budget // (8 * freq_ucw)),
        max_units=1_000_000,
        extra={"freq_cw": freq_cw, "freq_ucw": freq_ucw},
    )


# ---------------------------------------------------------------- frequent words extraction


def zeta(alpha: float, terms: int = 10_000) -> float:
    """Riemann zeta(alpha) for alpha > 1: a partial sum plus the Euler-Maclaurin tail."""
    if alpha <= 1:
        raise ValueError("zeta needs alpha > 1")
    s = math.fsum(k**-alpha for k in range(1, terms))
    return s + terms ** (1 - alpha) / (alpha - 1) + 0.5 * terms**-alpha + alpha / 12 * terms ** (-alpha - 1)


def zipf_counts(num_words: int, vocab_size: int, alpha: float) -> list[int]:
    """floor(num_words * k^-alpha / zeta(alpha)) for ranks k = 1..vocab_size (RULER's word counts)."""
    z = zeta(alpha)
    return [int(num_words * k**-alpha / z) for k in range(1, vocab_size + 1)]


def _plan_fwe(
    spec: dict, key: str, rng: random.Random, tpl: dict, sources: Sources, budget: int, tokenizer, length: int = 0
) -> _Plan:
    vocab = W.coded_words(rng, max(5, length // 50))
    vocab[0] = "..."  # the most frequent "word" is noise
    fields = {"query": ""}

    def build(n: int, p: int) -> str:
        counts = zipf_counts(n, len(vocab), spec["alpha"])
        text = [w for w, c in zip(vocab, counts) for _ in range(c)]
        random.Random(f"{key}:{n}").shuffle(text)
        text += ["..."] * p
        return render(tpl, "fwe", " ".join(text), fields)

    return _Plan(build, vocab[1:4], None, max(1, budget // 3), max_units=10_000_000, extra={"vocab_size": len(vocab)})


# ---------------------------------------------------------------- question answering


def _plan_qa(
    spec: dict,
    key: str,
    rng: random.Random,
    tpl: dict,
    sources: Sources,
    budget: int,
    tokenizer,
    index: int = 0,
    seed: int = 0,
    task: str = "",
) -> _Plan:
    src = sources.qa.get(spec["dataset"])
    if src is None:
        raise RopeextError(f"{task} needs a {spec['dataset']} source file")
    order = list(range(len(src.items)))
    random.Random(f"ruler:{seed}:{task}:questions").shuffle(order)
    item = src.items[order[index % len(order)]]
    gold = set(item.gold)
    pool = [i for i in range(len(src.documents)) if i not in gold]
    rng.shuffle(pool)
    gold_fracs = [(rng.random(), src.documents[g]) for g in item.gold]
    fields = {"query": item.question}

    def build(n: int, p: int) -> str:
        docs = _insert_units([src.documents[pool[i % len(pool)]] for i in range(n)] if pool else [], gold_fracs)
        if p and pool:
            docs.append(" ".join(src.documents[pool[n % len(pool)]].split()[:p]))
        ctx = "\n\n".join(f"Document {j}:\n{d}" for j, d in enumerate(docs, 1))
        return render(tpl, "qa", ctx, fields)

    first = sorted(gold_fracs, key=lambda t: t[0])[0][0]
    return _Plan(
        build,
        list(item.answers),
        first,
        max(0, budget // 200),
        max_units=None if pool else 0,
        max_pad=100_000,
        extra={"question": item.question},
    )


_PLANNERS = {"niah": _plan_niah, "vt": _plan_vt, "cwe": _plan_cwe, "fwe": _plan_fwe, "qa": _plan_qa}


def make_sample(
    task: str,
    length: int,
    index: int,
    tokenizer,
    *,
    seed: int = 0,
    sources: Sources | None = None,
    templates: dict | None = None,
    hint: int | None = None,
) -> dict:
    """One sample of ``task`` whose prompt plus generation budget is within 2% below ``length``."""
    if task not in TASKS:
        raise RopeextError(f"unknown RULER task {task!r}")
    spec = TASKS[task]
    kind = spec["kind"]
    tpl = (templates or ROPEEXT_TEMPLATES)[kind]
    max_new = int(tpl["max_new_tokens"])
    budget = length - max_new
    what = f"{task} at length {length}"
    if budget <= 0:
        raise TooShort(f"{what}: the length does not exceed the {max_new} tokens reserved for the answer")
    key = sample_key(seed, task, length, index)
    rng = random.Random(key)
    sources = sources or Sources()
    extra_args = {
        "cwe": {"length": length},
        "fwe": {"length": length},
        "qa": {"index": index, "seed": seed, "task": task},
    }.get(kind, {})
    plan = _PLANNERS[kind](spec, key, rng, tpl, sources, budget, tokenizer, **extra_args)
    fitted = fit_prompt(
        plan.build,
        tokenizer,
        budget,
        tolerance(length),
        hint=hint or plan.hint,
        max_units=plan.max_units,
        max_pad=plan.max_pad,
        what=what,
    )
    return {
        "_id": f"{task}/{length}/{index}",
        "task": task,
        "length": length,
        "index": index,
        "prompt": fitted.text,
        "answers": plan.answers,
        "max_new_tokens": max_new,
        "prompt_tokens": fitted.tokens,
        "total_tokens": fitted.tokens + max_new,
        "depth": plan.depth,
        "n_units": fitted.n_units,
        "n_pad": fitted.n_pad,
        "metric": METRICS[kind],
        **plan.extra,
    }


def generate_samples(
    task: str,
    length: int,
    num_samples: int,
    tokenizer,
    *,
    seed: int = 0,
    sources: Sources | None = None,
    templates: dict | None = None,
) -> Iterator[dict]:
    """``num_samples`` samples of ``task`` at ``length`` (each one's size search starts from the last)."""
    hint = None
    for index in range(num_samples):
        sample = make_sample(task, length, index, tokenizer, seed=seed, sources=sources, templates=templates, hint=hint)
        hint = sample["n_units"] or None
        yield sample
