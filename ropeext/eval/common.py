"""Pieces every generative evaluation shares: prompt encoding, greedy decoding, resumable prediction files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator

from ropeext.errors import RopeextError


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids as the model reads a raw prompt: whatever special tokens the tokenizer itself adds.

    A model trained with BOS in front of every sequence has a tokenizer that adds it (this
    project's own tokenizers do, see ``data.tokenizer.train_bpe``); a tokenizer that adds nothing
    (SmolLM2, whose BOS is the chat marker ``<|im_start|>``) gets nothing prepended. This is how the
    official LongBench prediction script tokenizes.
    """
    return list(tokenizer(text)["input_ids"])


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether tokenizing a plain string puts the tokenizer's BOS token first."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == bos and tokenizer("x", add_special_tokens=False)["input_ids"][:1] != [bos]


def greedy_generate(
    model,
    tokenizer,
    prompt_ids: list[int],
    max_new_tokens: int,
    stop_strings: list[str] | None = None,
    *,
    stop_token_ids: list[int] | None = None,
    min_new_tokens: int = 0,
) -> str:
    """Greedy ``model.generate`` with a KV cache; returns the decoded continuation only.

    Generation ends at the tokenizer's EOS (dropped), after one of ``stop_token_ids`` (kept, as
    ``generate(eos_token_id=[...])`` keeps it) or once a stop string is generated (the text is cut
    before it). For the first ``min_new_tokens`` steps EOS and the stop tokens are suppressed. As
    ``generate`` matches stop strings on the sequence's end, one begun by the prompt's last characters
    and completed by the first generated ones stops it too.
    """
    import torch  # heavy: only the evaluations that generate load it

    eos = tokenizer.eos_token_id
    ends = ([eos] if eos is not None else []) + [t for t in stop_token_ids or () if t != eos]
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=next(model.parameters()).device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=ends or None,
            pad_token_id=pad,
            stop_strings=stop_strings or None,
            tokenizer=tokenizer if stop_strings else None,
            use_cache=True,
        )
    generated = out[0, len(prompt_ids) :].tolist()
    if generated and generated[-1] == eos:
        generated.pop()
    text = tokenizer.decode(generated, skip_special_tokens=True)
    cuts = [text.find(s) for s in stop_strings or () if s in text]
    return text[: min(cuts)] if cuts else text


class ResumableJsonl:
    """Append-only JSONL of per-sample records keyed by ``key``.

    A rerun after an interruption skips the keys already written and never duplicates a line; a
    last line cut off mid-write is dropped on open.
    """

    def __init__(self, path: str | Path, key: str = "_id"):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            good_lines = []
            with open(self.path) as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # torn final line from a crash
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    if rec.get(key) not in self.records:
                        self.records[rec[key]] = rec
                        good_lines.append(line)
            with open(self.path, "w") as fh:
                fh.writelines(good_lines)

    def __contains__(self, k) -> bool:
        return k in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict) -> None:
        k = record.get(self.key)
        if k is None:
            raise RopeextError(f"record without key {self.key!r}: {record}")
        if k in self.records:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records[k] = record

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records.values())


def read_jsonl(
    path: str | Path, *, on_error: str = "fail", on_skip: Callable[[int, str], None] | None = None
) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record); a malformed line fails naming file and line, or is skipped
    (then ``on_skip(line_number, reason)`` is called, if given)."""
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                if on_error == "skip":
                    if on_skip is not None:
                        on_skip(n, f"malformed JSON line ({exc.msg})")
                    continue
                raise RopeextError(f"{path}:{n}: malformed JSON line ({exc.msg})") from None
