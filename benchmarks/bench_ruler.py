"""RULER sample construction: length fitting from the previous sample's size vs from scratch.

Builds samples of several tasks at several lengths with a 2048-token byte-level BPE trained on
standard-library text (also the essay haystack), once with each search starting cold (a small
hint, as for the first sample) and once starting from the previous sample's unit count (what
``generate_samples`` does). Prints tokenizer calls and seconds per sample and their ratios.

    .venv/bin/python benchmarks/bench_ruler.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from pathlib import Path

from ropeext.data.tokenizer import train_bpe
from ropeext.eval.ruler import fit as fit_mod
from ropeext.eval.ruler.generate import Sources, make_sample
from ropeext.eval.ruler.haystack import WordStream


def stdlib_text(max_chars: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for f in sorted(root.glob("*.py")):
        text = f.read_text(errors="replace")
        docs.append(text)
        total += len(text)
        if total > max_chars:
            break
    return docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    lengths = [1024, 4096] if args.quick else [1024, 4096, 16384]
    samples = 3 if args.quick else 5
    tasks = ["niah_single_1", "niah_single_2", "niah_multikey_2", "vt", "fwe"]
    docs = stdlib_text(3_000_000)
    tok = train_bpe(docs, vocab_size=2048)
    sources = Sources(essay=WordStream("\n\n".join(docs), joiner="\n\n"))

    calls = {"n": 0}
    real_encode = fit_mod.encode

    def counting_encode(tokenizer, text):
        calls["n"] += 1
        return real_encode(tokenizer, text)

    fit_mod.encode = counting_encode
    rows = []
    for task in tasks:
        for L in lengths:
            stats = {}
            for mode in ("cold", "hinted"):
                calls["n"] = 0
                t0 = time.perf_counter()
                hint = None
                for i in range(samples):
                    s = make_sample(task, L, i, tok, seed=0, sources=sources, hint=hint if mode == "hinted" else 1)
                    hint = s["n_units"] or None
                    assert L - int(0.02 * L) <= s["total_tokens"] <= L
                stats[mode] = (calls["n"] / samples, (time.perf_counter() - t0) / samples)
            rows.append((task, L, *stats["cold"], *stats["hinted"]))
    fit_mod.encode = real_encode

    print(
        f"{'task':16s} {'length':>6s} | {'calls cold':>10s} {'s cold':>8s} | {'calls hint':>10s} "
        f"{'s hint':>8s} | {'calls x':>7s} {'time x':>7s}"
    )
    for task, L, cc, sc, ch, sh in rows:
        print(f"{task:16s} {L:6d} | {cc:10.1f} {sc:8.4f} | {ch:10.1f} {sh:8.4f} | {cc / ch:7.2f} {sc / sh:7.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
