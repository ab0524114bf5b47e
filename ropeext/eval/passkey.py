"""Passkey retrieval: a number hidden at a chosen depth of repeated filler text.

The prompt is the filler sentence block repeated, the key line inserted after a fraction
``depth`` of the filler blocks, then the question. Its length is measured in the model's own
tokens: the number of filler blocks is the largest whose whole prompt fits the requested
length. A sample is correct when the first integer in the greedy continuation equals the key.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ropeext.errors import RopeextError
from ropeext.eval.common import encode_prompt as encode  # noqa: F401 (re-exported)
from ropeext.io import pyplot, read_json, save_figure

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"

_INT = re.compile(r"\d+")


@dataclass(frozen=True)
class PasskeyPrompt:
    text: str
    input_ids: list[int]
    key: int
    filler_blocks: int
    blocks_before_key: int


def build_text(n_blocks: int, depth: float, key: int) -> tuple[str, int]:
    """The prompt text with ``n_blocks`` filler blocks and the key after ``round(depth * n)`` of them."""
    if not 0.0 <= depth <= 1.0:
        raise RopeextError(f"passkey depth {depth} is outside [0, 1]")
    before = int(round(depth * n_blocks))
    parts = [FILLER] * before + [KEY_LINE.format(key=key)] + [FILLER] * (n_blocks - before) + [QUESTION]
    return " ".join(parts), before


def make_prompt(tokenizer, length: int, depth: float, key: int) -> PasskeyPrompt:
    """The prompt with the most filler blocks whose token count is at most ``length``."""

    def count(n: int) -> int:
        return len(encode(tokenizer, build_text(n, depth, key)[0]))

    if count(0) > length:
        raise RopeextError(
            f"passkey length {length} is too short: the key line and question alone take {count(0)} tokens"
        )
    per_block = max(1, len(tokenizer(FILLER + " ", add_special_tokens=False)["input_ids"]))
    lo, hi = 0, max(1, (length // per_block) + 1)
    while count(hi) <= length:  # the estimate can be low where blocks merge into fewer tokens
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # count(lo) <= length < count(hi)
        mid = (lo + hi) // 2
        if count(mid) <= length:
            lo = mid
        else:
            hi = mid
    text, before = build_text(lo, depth, key)
    return PasskeyPrompt(text, encode(tokenizer, text), key, lo, before)


def sample_key(seed: int, length: int, depth: float, index: int, digits: int = 5) -> int:
    """A key of ``digits`` digits fixed by the seed and the cell, so a resumed run asks the same question."""
    rng = random.Random(f"passkey:{seed}:{length}:{depth:.6f}:{index}")
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def first_integer(text: str) -> int | None:
    match = _INT.search(text)
    return int(match.group()) if match else None


def sample_id(length: int, depth: float, index: int) -> str:
    return f"L{length}_d{depth:.4f}_s{index}"


def check_grid(
    lengths: Iterable[int], depths: Iterable[float], samples: int, max_length: int | None, max_new_tokens: int
) -> None:
    lengths, depths = list(lengths), list(depths)
    if not lengths:
        raise RopeextError("passkey: no lengths given")
    if not depths:
        raise RopeextError("passkey: no depths given")
    for n in lengths:
        if n <= 0:
            raise RopeextError(f"passkey length {n} must be a positive number of tokens")
        if max_length is not None and n + max_new_tokens > max_length:
            raise RopeextError(
                f"passkey length {n} (+ {max_new_tokens} generated tokens) exceeds --max-length {max_length}; "
                f"drop the length or raise the limit"
            )
    for d in depths:
        if not 0.0 <= d <= 1.0:
            raise RopeextError(f"passkey depth {d} is outside [0, 1]")
    if samples <= 0:
        raise RopeextError(f"passkey samples per cell must be positive, got {samples}")


def evaluate(
    generate: Callable[[list[int]], str],
    tokenizer,
    *,
    lengths: list[int],
    depths: list[float],
    samples: int,
    seed: int,
    digits: int,
    store,
    progress=None,
) -> list[dict]:
    """Run every (length, depth, sample) cell not yet in ``store`` (a ResumableJsonl keyed by ``_id``).

    ``generate`` maps prompt ids to the decoded continuation. Returns all records, in grid order.
    """
    records = []
    for length in lengths:
        for depth in depths:
            for i in range(samples):
                sid = sample_id(length, depth, i)
                if sid not in store:
                    key = sample_key(seed, length, depth, i, digits)
                    prompt = make_prompt(tokenizer, length, depth, key)
                    out = generate(prompt.input_ids)
                    pred = first_integer(out)
                    store.append(
                        {
                            "_id": sid,
                            "length": length,
                            "depth": depth,
                            "sample": i,
                            "key": key,
                            "prompt_tokens": len(prompt.input_ids),
                            "filler_blocks": prompt.filler_blocks,
                            "blocks_before_key": prompt.blocks_before_key,
                            "generation": out,
                            "predicted": pred,
                            "correct": pred == key,
                        }
                    )
                records.append(store.records[sid])
                if progress is not None:
                    progress.update(1)
    return records


def summarize(records: list[dict], lengths: list[int], depths: list[float]) -> dict:
    """Accuracy per cell, per length, per depth and overall, with the counts behind it."""
    cells = []
    grid = []
    for length in lengths:
        row = []
        for depth in depths:
            rs = [r for r in records if r["length"] == length and abs(r["depth"] - depth) < 1e-9]
            acc = sum(r["correct"] for r in rs) / len(rs) if rs else math.nan
            row.append(acc)
            cells.append(
                {
                    "length": length,
                    "depth": depth,
                    "n": len(rs),
                    "correct": sum(r["correct"] for r in rs),
                    "accuracy": acc,
                    "mean_prompt_tokens": sum(r["prompt_tokens"] for r in rs) / len(rs) if rs else math.nan,
                }
            )
        grid.append(row)

    def acc_of(rs):
        return sum(r["correct"] for r in rs) / len(rs) if rs else math.nan

    def of_length(L):
        return [r for r in records if r["length"] == L]

    return {
        "accuracy": acc_of(records),
        "accuracy_by_length": {str(L): acc_of(of_length(L)) for L in lengths},
        # the counts behind each accuracy (an interval needs them): keys found and prompts asked
        "correct": int(sum(r["correct"] for r in records)),
        "n": len(records),
        "correct_by_length": {str(L): int(sum(r["correct"] for r in of_length(L))) for L in lengths},
        "n_by_length": {str(L): len(of_length(L)) for L in lengths},
        "accuracy_by_depth": {f"{d:g}": acc_of([r for r in records if abs(r["depth"] - d) < 1e-9]) for d in depths},
        "grid": grid,
        "cells": cells,
    }


def plot_heatmap(metrics: dict, path: str | Path, title: str | None = None) -> Path:
    """Accuracy heat map: depth down, length across."""
    plt = pyplot()

    lengths, depths = metrics["lengths"], metrics["depths"]
    data = np.array(metrics["grid"], dtype=float).T  # depths x lengths
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(lengths), 1.0 + 0.5 * len(depths)))
    im = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("key depth")
    for (y, x), v in np.ndenumerate(data):
        ax.text(x, y, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(title or "passkey retrieval")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def summary_table(metrics: Iterable[dict | str | Path]):
    """Variants as rows, accuracy (x100) per length as columns plus the mean: a pandas DataFrame.

    ``metrics`` are passkey metrics JSONs (dicts or paths). Lengths a variant was not run at are NaN.
    """
    # heavy: pandas loads only when tables are built
    import pandas as pd

    rows = {}
    for m in metrics:
        if not isinstance(m, dict):
            m = read_json(m, "passkey metrics JSON")
        if m.get("task") != "passkey":
            raise RopeextError(f"not a passkey metrics JSON (task={m.get('task')!r}): {m.get('variant')}")
        name = m.get("variant") or m.get("model", "?")
        row = {f"{L}": 100.0 * v for L, v in m["accuracy_by_length"].items()}
        row["Avg"] = 100.0 * m["accuracy"]
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    length_cols = sorted((c for c in df.columns if c != "Avg"), key=int)
    df = df[length_cols + ["Avg"]].round(2)
    df.index.name = "variant"
    return df
