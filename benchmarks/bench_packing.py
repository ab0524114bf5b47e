"""Packing throughput on pre-tokenized documents (tokens/s), against plain array work.

The documents are the embedded default corpus: the interpreter's standard library, whole files
plus each module's top-level definitions as documents of their own (``ropeext.data.corpus``),
tokenized with a byte-level BPE of 2048 tokens trained on them (``train_bpe``). The corpus is
repeated to reach a size where timings are stable.

Baseline (same run): gathering the shuffled documents into one stream and reshaping it into
windows, i.e. the least array work any packer must do. Goal: at least 20 million tokens/s.

All seven layouts are timed. The interleaved layouts use the schema's ``packing.interleave``
defaults; ``anchor_tag`` tags each document with its top-level module (``json``, ``email``, ...)
through the schema's ``packing.tag_template``, tokenized with the same BPE (tokenizing the tags is
not timed: it happens once per distinct domain). Tokens/s counts document tokens placed.

    .venv/bin/python benchmarks/bench_packing.py [--quick] [--window 1024] [--repeat 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def stdlib_documents(vocab_size: int = 2048, max_files: int | None = None):
    """Token ids (flat) and offsets of the standard-library documents, a short description, each
    document's domain (its top-level module) and the tokenizer."""
    from ropeext.data.corpus import iter_stdlib
    from ropeext.data.tokenizer import train_bpe

    t0 = time.perf_counter()
    docs = list(iter_stdlib(definitions=True))
    if max_files:
        files = sorted({d.id.split("::")[0] for d in docs})[:max_files]
        keep = set(files)
        docs = [d for d in docs if d.id.split("::")[0] in keep]
    texts = [d.text for d in docs]
    tok = train_bpe(texts, vocab_size=vocab_size)
    enc = tok._tokenizer.encode_batch(texts, add_special_tokens=False)
    lengths = np.array([len(e.ids) for e in enc], dtype=np.int64)
    flat = np.fromiter((i for e in enc for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    desc = {
        "documents": len(docs),
        "tokens": int(lengths.sum()),
        "median": int(np.median(lengths)),
        "p90": int(np.percentile(lengths, 90)),
        "max": int(lengths.max()),
        "seconds": time.perf_counter() - t0,
    }
    domains = [d.id.split("::")[0].split("/")[0].removesuffix(".py") for d in docs]
    return flat, offsets, desc, domains, tok


def _baseline(tokens, offsets, window, seed):
    lengths = np.diff(offsets)
    keep = np.flatnonzero(lengths > 2)
    order = keep[np.random.default_rng(seed).permutation(len(keep))]
    parts = [tokens[offsets[i] : offsets[i + 1]] for i in order]
    stream = np.concatenate(parts)
    n = len(stream) // (window - 1)
    return stream[: n * (window - 1)].reshape(n, window - 1)


def _best(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def layout_kwargs(layout: str, domains: list, tokenizer, copies: int) -> dict:
    """The interleave settings or the tags a layout needs (schema defaults), for ``copies`` copies."""
    from ropeext.commands.pack import document_tags, packing_settings
    from ropeext.data.packing import INTERLEAVED, TAGGED, Tags

    settings = packing_settings(None)
    if layout in INTERLEAVED:
        return {"interleave": settings["interleave"]}
    if layout in TAGGED:
        tags, _ = document_tags(domains, settings["tag_template"], tokenizer)
        return {"tags": Tags(np.tile(tags.index, copies), tags.table)}
    return {}


def main(argv=None) -> None:
    from ropeext.data.packing import LAYOUTS, pack_documents, pack_flat, packing_stats

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a third of the standard library, fewer repeats")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=None, help="copies of the corpus to pack (default 8, quick 4)")
    args = ap.parse_args(argv)
    reps = 2 if args.quick else 3
    copies = args.repeat or (4 if args.quick else 8)

    flat, offsets, desc, domains, tok = stdlib_documents(max_files=300 if args.quick else None)
    print(
        f"corpus: {desc['documents']} documents (files + top-level definitions), {desc['tokens']:,} tokens, "
        f"length median {desc['median']}, p90 {desc['p90']}, max {desc['max']} "
        f"(BPE 2048 trained and applied in {desc['seconds']:.1f} s)"
    )
    lengths = np.diff(offsets)
    big_len = np.tile(lengths, copies)
    big_flat = np.tile(flat, copies)
    big_off = np.concatenate([[0], np.cumsum(big_len)])
    n_tok = int(big_len[big_len > 2].sum())
    W = args.window
    print(f"packing {n_tok:,} tokens ({copies} copies) into windows of {W}, best of {reps}\n")

    base = _best(lambda: _baseline(big_flat, big_off, W, 0), reps)
    rows = [("baseline: gather + reshape", base, n_tok)]
    notes = []
    for layout in LAYOUTS:
        kw = layout_kwargs(layout, domains, tok, copies)
        sec = _best(lambda: pack_flat(big_flat, big_off, W, layout, 1, 0, **kw), reps)
        cols, info = pack_flat(big_flat, big_off, W, layout, 1, 0, **kw)
        placed = info.tokens_kept + info.tokens_dropped_last  # document tokens (tags apart)
        rows.append((f"pack_flat {layout}", sec, placed))
        t = packing_stats(cols, info, per_window=False)["totals"]
        if "frac_documents_interleaved" in t:
            notes.append(
                f"{layout}: {t['frac_documents_interleaved']:.0%} of documents cut into {t['chunks']:,} "
                f"chunks in all; {t['frac_windows_with_gapped_docs']:.0%} of windows hold a document "
                f"split by a gap"
            )
        if "tag_tokens" in t:
            notes.append(
                f"{layout}: {len(kw['tags'].table)} domains, tags are {t['frac_tag_tokens']:.1%} of the "
                f"document tokens, {t['retagged_pieces']:,} continuation pieces tagged again"
            )
    docs = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(lengths))]
    small = int(lengths[lengths > 2].sum())
    t_lists = _best(lambda: pack_documents(docs, W, "anchor", 1, 0), reps)

    print(f"{'method':<34} {'seconds':>9} {'Mtok/s':>9} {'time / baseline':>16}")
    for name, sec, n in rows:
        print(f"{name:<34} {sec:9.3f} {n / sec / 1e6:9.1f} {sec / base:16.2f}")
    print(
        f"{'pack_documents anchor (lists)':<34} {t_lists:9.3f} {small / t_lists / 1e6:9.1f} "
        f"{'(1 copy, from Python lists)':>16}"
    )
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
