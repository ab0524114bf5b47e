"""Byte-level BPE training, saved as a standard Hugging Face tokenizer directory."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ropeext.errors import RopeextError

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_bpe(texts: Iterable[str], vocab_size: int = 2048, seed: int = 0):
    """Train a byte-level BPE with BOS/EOS/PAD and return a ``PreTrainedTokenizerFast``.

    Tokenizing a string (``tok(text)``) puts BOS first, as every window the model trains on starts
    with BOS, so evaluation prompts that follow the tokenizer get it too; document tokenization
    passes ``add_special_tokens=False`` and packing places BOS/EOS explicitly.
    """
    # heavy: tokenizers loads only when a tokenizer is built
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    # heavy: transformers loads only when a tokenizer is built or loaded
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 260:
        raise RopeextError(f"tokenizer.vocab_size: {vocab_size} is too small (need >= 260: 256 bytes + specials)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        add_bos_token=True,
    )


def load_tokenizer(path: str | Path):
    """Load a tokenizer (local directory or hub id) and check it has what packing needs."""
    # heavy: transformers loads only when a tokenizer is built or loaded
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - turned into a clear message
        raise RopeextError(f"cannot load tokenizer from {path}: {exc}") from None
    if tok.bos_token_id is None and tok.eos_token_id is None:
        raise RopeextError(f"tokenizer {path} has neither a BOS nor an EOS token; packing needs one as the anchor")
    return tok


def anchor_token_id(tokenizer) -> int:
    """The AnchorAttention anchor: BOS, or EOS where the tokenizer has no BOS (as Qwen's)."""
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise RopeextError("tokenizer has neither a BOS nor an EOS token; the anchor layout needs one")
