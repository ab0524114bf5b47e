"""Perplexity by context length with a sliding window.

For every context length C the same target tokens are scored: windows end at positions
e = max(C) - 1, max(C) - 1 + stride, ... of each held-out document long enough, the model reads
doc[e - C + 1 .. e] with rotary positions 0..C-1, and the last ``stride`` predictions of the
window are scored. So each scored token has between C - stride + 1 and C tokens of context, and
the lengths differ only in how much context the model gets.

Only the scored positions' logits are computed (``logits_to_keep``): a full-window fp32 logits
tensor is C x vocab x 4 bytes per row, 3.2 GB at 16k tokens for a 49k vocabulary.
"""

from __future__ import annotations

import inspect
import math
from fnmatch import fnmatchcase

import numpy as np

from ropeext.errors import RopeextError


def window_ends(doc_len: int, max_context: int, stride: int) -> list[int]:
    """Index of the last input token of each window in a document of ``doc_len`` tokens."""
    return list(range(max_context - 1, doc_len - 1, stride))


def select_windows(
    docs: list[np.ndarray], lengths: list[int], stride: int, max_tokens: int, per_document: int | None = None
) -> list[tuple[int, int]]:
    """(document index, window end) pairs until ``max_tokens`` target tokens are covered.

    ``per_document`` takes at most that many windows from one document, so that a small budget is
    spread over several documents instead of spent on the first long one.
    """
    if stride > min(lengths):
        raise RopeextError(f"eval.ppl.stride: {stride} is larger than the shortest length {min(lengths)}")
    max_c = max(lengths)
    picked: list[tuple[int, int]] = []
    for d, doc in enumerate(docs):
        for e in window_ends(len(doc), max_c, stride)[:per_document]:
            if len(picked) * stride >= max_tokens:
                return picked
            picked.append((d, e))
    if not picked:
        longest = max((len(x) for x in docs), default=0)
        raise RopeextError(
            f"no held-out document is longer than the largest context length {max_c} (longest has {longest} tokens)"
        )
    return picked


def excluded(doc_id: str, patterns) -> bool:
    """Whether a document id (a stdlib path such as ``encodings/cp858.py``, or ``path::Name`` for one of its
    definitions) matches one of the glob ``patterns`` (``fnmatch``, case-sensitive: ``*`` also matches ``/``)."""
    return any(fnmatchcase(doc_id, p) for p in patterns)


def choose_windows(
    docs: list[np.ndarray],
    ids: list[str],
    lengths: list[int],
    stride: int,
    max_tokens: int,
    per_document: int | None = None,
    exclude=(),
) -> list[tuple[int, int]]:
    """``select_windows`` over the documents whose id matches none of ``exclude``; the pairs index ``docs``."""
    keep = [i for i, x in enumerate(ids) if not excluded(x, exclude)]
    try:
        picked = select_windows([docs[i] for i in keep], lengths, stride, max_tokens, per_document)
    except RopeextError as exc:
        if len(keep) == len(docs) or "longer than" not in str(exc):
            raise
        longest = max((len(docs[i]) for i in keep), default=0)
        raise RopeextError(
            f"eval.ppl.exclude: {list(exclude)} leaves no held-out document longer than the largest context length "
            f"{max(lengths)} ({len(docs) - len(keep)} of {len(docs)} excluded; the longest left has {longest} "
            "tokens): remove a pattern or lower eval.ppl.lengths"
        ) from None
    return [(keep[d], e) for d, e in picked]


def scored_documents(windows: list[tuple[int, int]], ids: list[str], docs: list[np.ndarray]) -> list[dict]:
    """Each scored document once, in order: its id, its length in tokens and how many windows it gave."""
    count: dict[int, int] = {}
    for d, _ in windows:
        count[d] = count.get(d, 0) + 1
    return [{"id": ids[d], "tokens": len(docs[d]), "windows": n} for d, n in count.items()]


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward can compute the logits of the last positions only."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def scored_logits(model, ids, pos, keep: int, *, slice_only: bool | None = None):
    """fp32 logits of the last ``keep`` positions, shape (batch, keep, vocab).

    With ``slice_only`` (default: whenever the model supports it) the language-model head runs on
    those positions only; otherwise the whole window's logits are computed and sliced.
    """
    if slice_only is None:
        slice_only = accepts_logits_to_keep(model)
    if slice_only:
        logits = model(input_ids=ids, position_ids=pos, use_cache=False, logits_to_keep=keep).logits
        if logits.shape[1] != keep:
            raise RopeextError(f"{type(model).__name__} returned {logits.shape[1]} positions for logits_to_keep={keep}")
    else:
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits[:, -keep:]
    return logits.float()


def perplexity_by_length(
    model,
    docs: list[np.ndarray],
    lengths: list[int],
    stride: int,
    max_tokens: int,
    per_document: int | None = None,
    tokens_per_batch: int = 8192,
    progress: bool = True,
    slice_only: bool | None = None,
    doc_ids: list[str] | None = None,
    exclude=(),
) -> dict:
    """NLL and perplexity at each context length over the same scored tokens (see the module docstring).

    ``slice_only``: compute only the scored positions' logits (default: when the model supports it).
    ``doc_ids`` name the documents (default ``#<index>``); those matching a glob of ``exclude`` are not scored.
    """
    # heavy: tqdm (with asyncio) adds ~0.1 s to --help and the workflow parse; only a run draws a bar
    # heavy: torch loads only when a model runs
    import torch
    from tqdm import tqdm

    lengths = sorted(set(int(x) for x in lengths))
    names = list(doc_ids) if doc_ids is not None else [f"#{i}" for i in range(len(docs))]
    windows = choose_windows(docs, names, lengths, stride, max_tokens, per_document, exclude)
    device = next(model.parameters()).device
    results = {}
    bar = None
    if progress:
        bar = tqdm(total=len(windows) * len(lengths), desc="ppl", mininterval=5.0)
    model.eval()
    for C in lengths:
        per_batch = max(1, tokens_per_batch // C)
        nll, count, per_window = 0.0, 0, []
        for b in range(0, len(windows), per_batch):
            chunk = windows[b : b + per_batch]
            inputs = np.stack([docs[d][e - C + 1 : e + 1] for d, e in chunk])
            targets = np.stack([docs[d][e - stride + 2 : e + 2] for d, e in chunk])
            ids = torch.from_numpy(inputs).to(device)
            pos = torch.arange(C, device=device).unsqueeze(0).expand(len(chunk), -1)
            with torch.no_grad():
                logits = scored_logits(model, ids, pos, stride, slice_only=slice_only)
            tgt = torch.from_numpy(targets).to(device)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none"
            ).reshape(tgt.shape)
            per_window += [float(x) for x in loss.sum(dim=1, dtype=torch.float64)]
            nll += float(loss.sum(dtype=torch.float64))
            count += tgt.numel()
            if bar is not None:
                bar.update(len(chunk))
        results[C] = {"nll": nll / count, "ppl": math.exp(nll / count), "tokens": count, "window_nll": per_window}
    if bar is not None:
        bar.close()
    return {
        "lengths": lengths,
        "stride": stride,
        "windows": len(windows),
        "documents": len({d for d, _ in windows}),
        "documents_scored": scored_documents(windows, names, docs),
        "exclude": list(exclude),
        "tokens_scored": len(windows) * stride,
        "ppl": {str(C): r["ppl"] for C, r in results.items()},
        "nll": {str(C): r["nll"] for C, r in results.items()},
        # the evidence for an interval over windows: each window's summed nll per length, its scored tokens and
        # its document (the same windows at every length)
        "window_nll": {str(C): r["window_nll"] for C, r in results.items()},
        "window_tokens": [stride] * len(windows),
        "window_documents": [d for d, _ in windows],
    }
