"""The prediction loop: one task's samples through the protocol, one JSONL line per sample.

A rerun continues where an interrupted run stopped (``ResumableJsonl`` keyed by the sample's
``_key``) and never duplicates a line.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ropeext.errors import RopeextError
from ropeext.eval.common import ResumableJsonl, greedy_generate
from ropeext.eval.longbench import protocol


def max_input_length(window: int, max_new_tokens: int, override: int | None, task: str) -> int:
    """The protocol's input budget: the model's window minus the generation length, unless given."""
    if override is not None:
        if override < 2:
            raise RopeextError(f"--max-input-length: {override} is too small (need >= 2 tokens)")
        return int(override)
    budget = int(window) - int(max_new_tokens)
    if budget < 2:
        raise RopeextError(
            f"task {task!r}: a prompt cannot fit: max_new_tokens {max_new_tokens} leaves {budget} of the model's "
            f"{window}-token window (max_position_embeddings) for the input; set --max-input-length or use a "
            f"model with a longer window"
        )
    return budget


def newline_token_id(tokenizer) -> int:
    """The token the official script stops samsum at: the last id of ``encode('\\n')``."""
    ids = tokenizer.encode("\n", add_special_tokens=False)
    if not ids:
        raise RopeextError("the tokenizer encodes '\\n' to nothing; cannot stop at a newline")
    return int(ids[-1])


def select_samples(samples: Sequence[dict], limit: int | None, bucket_of: Callable[[dict], int] | None) -> list[dict]:
    """The first ``limit`` samples (per bucket where buckets apply), in file order."""
    if limit is None:
        return list(samples)
    if bucket_of is None:
        return list(samples[:limit])
    taken: dict[int, int] = {}
    out = []
    for s in samples:
        b = bucket_of(s)
        if taken.get(b, 0) < limit:
            taken[b] = taken.get(b, 0) + 1
            out.append(s)
    return out


def predict_task(
    model,
    tokenizer,
    spec: protocol.TaskSpec,
    samples: Sequence[dict],
    store: ResumableJsonl,
    *,
    max_length: int,
    chat: bool,
    add_bos: bool,
    where: str = "",
    generate: Callable | None = None,
    progress: bool = True,
) -> dict:
    """Predict every sample not yet in ``store``; return counts over all of ``samples`` (those predicted by an
    earlier, interrupted invocation included) and what this invocation predicted."""
    # heavy: tqdm (with asyncio) adds ~0.1 s to --help and the workflow parse; only a run draws a bar
    from tqdm.auto import tqdm

    generate = generate or greedy_generate
    stop_ids = [newline_token_id(tokenizer)] if spec.stop_at_newline else None
    todo = [s for s in samples if s["_key"] not in store]
    predicted = 0
    bar = tqdm(todo, desc=spec.name, unit="sample", disable=not progress, dynamic_ncols=True)
    for s in bar:
        prompt = protocol.format_prompt(spec.prompt, s, where=f"{where}:{s.get('_line', '?')}")
        ids, info = protocol.encode_prompt(tokenizer, prompt, max_length, chat=chat, add_bos=add_bos)
        if stop_ids:
            pred = generate(model, tokenizer, ids, spec.max_new_tokens, stop_token_ids=stop_ids, min_new_tokens=1)
        else:
            pred = generate(model, tokenizer, ids, spec.max_new_tokens)
        store.append(
            {
                "_id": s["_key"],
                "pred": pred,
                "answers": s["answers"],
                "all_classes": s.get("all_classes"),
                "length": s["length"],
                "input_tokens": info["input_tokens"],
                "prompt_tokens": info["prompt_tokens"],
                "truncated": info["truncated"],
                "recut": info["recut"],
            }
        )
        predicted += 1
    keys = {s["_key"] for s in samples}
    done = [r for r in store if r["_id"] in keys]
    return {
        "samples": len(samples),
        "done_before": len(samples) - len(todo),
        "predicted": predicted,
        "truncated": sum(bool(r.get("truncated")) for r in done),
        "recut": sum(bool(r.get("recut")) for r in done),
    }
