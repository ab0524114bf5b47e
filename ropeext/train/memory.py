"""Per-GPU memory of one fine-tuning step: an estimate from published memory models, not a measurement.

The estimate adds four terms, in bytes:

- **model states**: 16 bytes per parameter with AdamW in mixed precision (bf16 weights and gradients,
  fp32 master weights, momentum and variance; Rajbhandari et al. 2020, "ZeRO", arXiv:1910.02054,
  section 3.1), divided by the number of GPUs when sharded (FSDP / ZeRO-3), plus two decoder layers
  of bf16 weights gathered at a time (the current one and the prefetched next one).
- **activations** of the decoder layers, bf16, with an attention kernel that never stores the s x s
  scores (FlashAttention, Dao et al. 2022, arXiv:2205.14135). Per token a Llama layer keeps its two
  norm inputs, the two normed inputs, Q/K/V, the attention output, the MLP's gate and up projections
  and the two products feeding the down projection: 6h + 2·kv + 4·I bf16 values (kv =
  h·kv_heads/heads), plus the fp32 copies of the two norm inputs that the RMSNorm of transformers'
  Llama keeps (8h bytes): the Llama form of Korthikanti et al. 2022 (arXiv:2205.05198) eq. 1
  without its s² and dropout terms (tests/test_memory.py checks it against the tensors autograd
  saves). With gradient checkpointing only each layer's input (h values) is kept, and the backward
  pass recomputes one layer at a time: that layer's activations and their gradients are alive.
- **logits**: per scored position, vocab x (2 bytes bf16 logits + 4 fp32 copy + 4 log-softmax + 4
  its gradient). Over the whole sequence without ``loss_chunk_tokens``; over one chunk with it.
- **all_to_all** (sequence parallelism only): with ``sequence_parallel`` = N (DeepSpeed-Ulysses,
  Jacobs et al. 2023, arXiv:2309.14509) N processes share one window: each holds s/N of
  its tokens through the embeddings, norms, projections, MLP and loss, so the activations and logits
  above are those of s/N tokens. Around attention an all-to-all turns each process's q, k, v
  (s/N tokens x all heads) into s tokens x 1/N of the heads, and another turns the attention output
  back: in either layout a tensor holds the same number of elements. The term counts the second
  layout's copies in full: q, k, v and the output in the head-sharded layout, and their gradients,
  for the layer being recomputed (2 x (2h + 2·kv) bf16 values per local token; an upper bound, as
  not all of them are alive at once); without gradient
  checkpointing every layer also keeps the head-sharded output its attention kernel saved, beside
  the sequence-sharded one the output projection saved (h values per local token and layer; the
  kernel's head-sharded q, k, v take the place of the sequence-sharded ones already counted). The
  loss is computed by each process on its own tokens and reduced, as in Arctic Long Sequence
  Training's Ulysses for Hugging Face models (ALST, Bekman et al. 2025, arXiv:2506.13996).
  Model states are unchanged: FSDP / ZeRO-3 shard them over all GPUs, whatever the split.

Weights of the embedding and head, the optimizer's temporary buffers, allocator fragmentation and
the communication library's own buffers are not counted: leave 10-20 % of the GPU free.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
STATE_BYTES_PER_PARAM = 16
ACTIVATION_BYTES = 2  # bf16
LOGIT_BYTES_PER_VOCAB = 2 + 4 + 4 + 4


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder-only Llama-style model (its config.json)."""

    params: float
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def kv_width(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    def layer_activation_bytes(self) -> int:
        """Bytes one decoder layer keeps per token for its backward pass (bf16 compute)."""
        bf16_values = 6 * self.hidden + 2 * self.kv_width + 4 * self.intermediate
        return ACTIVATION_BYTES * bf16_values + 2 * 4 * self.hidden


# The base models of the paper configs, from each model's config.json on the Hugging Face hub
# (parameter counts as their model cards state them).
PAPER_MODELS = {
    "meta-llama/Llama-2-7b-hf": ModelShape(6.74e9, 32, 4096, 11008, 32, 32, 32000),
    "meta-llama/Meta-Llama-3-8B": ModelShape(8.03e9, 32, 4096, 14336, 32, 8, 128256),
    "mistralai/Mistral-7B-v0.3": ModelShape(7.25e9, 32, 4096, 14336, 32, 8, 32768),
    "Qwen/Qwen1.5-1.8B": ModelShape(1.84e9, 24, 2048, 5504, 16, 16, 151936),
}


def step_memory(
    shape: ModelShape,
    *,
    tokens: int,
    gpus: int,
    sharded: bool,
    gradient_checkpointing: bool,
    loss_chunk_tokens: int | None,
    sequence_parallel: int = 1,
) -> dict[str, float]:
    """Bytes per GPU of one micro-batch of a ``tokens``-position window, by term, and their ``total``.

    ``sequence_parallel`` processes share the window (each holds ``tokens / sequence_parallel`` of
    its positions); it must divide ``gpus``, ``tokens`` and the model's attention and key/value heads.
    """
    if tokens < 1 or gpus < 1:
        raise ValueError(f"tokens and gpus must be positive, got {tokens} and {gpus}")
    sp = sequence_parallel
    if sp < 1:
        raise ValueError(f"sequence_parallel must be a positive integer, got {sp}")
    for what, n in (("gpus", gpus), ("tokens", tokens), ("attention heads", shape.heads), ("kv heads", shape.kv_heads)):
        if n % sp:
            raise ValueError(f"sequence_parallel {sp} must divide the {what} ({n})")
    local = tokens // sp  # positions each process holds through the decoder layers and the loss
    states = STATE_BYTES_PER_PARAM * shape.params / (gpus if sharded else 1)
    if sharded:
        states += 2 * ACTIVATION_BYTES * shape.params / shape.layers
    per_layer = local * shape.layer_activation_bytes()
    if gradient_checkpointing:
        activations = shape.layers * local * shape.hidden * ACTIVATION_BYTES + 2 * per_layer
    else:
        activations = shape.layers * per_layer
    all_to_all = 0
    if sp > 1:
        # head-sharded q, k, v and attention output, and their gradients, of the layer in backward
        all_to_all = 2 * local * (2 * shape.hidden + 2 * shape.kv_width) * ACTIVATION_BYTES
        if not gradient_checkpointing:  # every layer's kernel keeps its head-sharded output
            all_to_all += shape.layers * local * shape.hidden * ACTIVATION_BYTES
    scored = local if loss_chunk_tokens is None else min(local, loss_chunk_tokens)
    logits = scored * shape.vocab * LOGIT_BYTES_PER_VOCAB
    terms = {"model_states": states, "activations": activations, "all_to_all": all_to_all, "logits": logits}
    terms["total"] = sum(terms.values())
    return terms


TERMS = ("model_states", "activations", "all_to_all", "logits", "total")


def table(rows: list[tuple[str, str, int, int, int | None, int]]) -> str:
    """A Markdown table of (label, model, window tokens, GPUs, loss_chunk_tokens, sequence_parallel)
    rows: sharded states, gradient checkpointing on, GiB per term."""
    lines = [
        "| config | window | sequence_parallel | tokens/GPU | loss_chunk_tokens "
        "| states | activations | all-to-all | logits | total (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, model, tokens, gpus, chunk, sp in rows:
        m = step_memory(
            PAPER_MODELS[model],
            tokens=tokens,
            gpus=gpus,
            sharded=True,
            gradient_checkpointing=True,
            loss_chunk_tokens=chunk,
            sequence_parallel=sp,
        )
        lines.append(
            f"| {label} | {tokens} | {sp} | {tokens // sp} | {chunk if chunk is not None else '—'} | "
            + " | ".join(f"{m[k] / GIB:.1f}" for k in TERMS)
            + " |"
        )
    return "\n".join(lines)


# (label, model, window, GPUs, loss_chunk_tokens, sequence_parallel): the paper configs on 8 GPUs.
# The 128k rows without sequence parallelism show why the 7-8B configs set finetune.sequence_parallel.
PAPER_ROWS = [
    ("llama2-dprope (8k)", "meta-llama/Llama-2-7b-hf", 8192, 8, None, 1),
    ("llama2-dprope (16k)", "meta-llama/Llama-2-7b-hf", 16384, 8, None, 1),
    ("llama2-dprope (16k)", "meta-llama/Llama-2-7b-hf", 16384, 8, 4096, 1),
    ("llama2-anchor (64k)", "meta-llama/Llama-2-7b-hf", 65536, 8, None, 1),
    ("llama2-anchor (64k)", "meta-llama/Llama-2-7b-hf", 65536, 8, 4096, 1),
    ("llama2-anchor-128k, -upmix128k", "meta-llama/Llama-2-7b-hf", 131072, 8, 4096, 1),
    ("llama2-anchor-128k, -upmix128k", "meta-llama/Llama-2-7b-hf", 131072, 8, 4096, 8),
    ("llama3-anchor (128k)", "meta-llama/Meta-Llama-3-8B", 131072, 8, None, 1),
    ("llama3-anchor (128k)", "meta-llama/Meta-Llama-3-8B", 131072, 8, 4096, 1),
    ("llama3-anchor (128k)", "meta-llama/Meta-Llama-3-8B", 131072, 8, 4096, 8),
    ("mistral-anchor (128k)", "mistralai/Mistral-7B-v0.3", 131072, 8, 4096, 1),
    ("mistral-anchor (128k)", "mistralai/Mistral-7B-v0.3", 131072, 8, 4096, 8),
    ("qwen15-anchor (128k)", "Qwen/Qwen1.5-1.8B", 131072, 8, 4096, 1),
]


if __name__ == "__main__":
    print(table(PAPER_ROWS))
