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

Weights of the embedding and head, the optimizer's temporary buffers, allocator fragmentation and
communication buffers are not counted: leave 10-20 % of the GPU free.
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
) -> dict[str, float]:
    """Bytes per GPU of one micro-batch of ``tokens`` positions, by term, and their ``total``."""
    if tokens < 1 or gpus < 1:
        raise ValueError(f"tokens and gpus must be positive, got {tokens} and {gpus}")
    states = STATE_BYTES_PER_PARAM * shape.params / (gpus if sharded else 1)
    if sharded:
        states += 2 * ACTIVATION_BYTES * shape.params / shape.layers
    per_layer = tokens * shape.layer_activation_bytes()
    if gradient_checkpointing:
        activations = shape.layers * tokens * shape.hidden * ACTIVATION_BYTES + 2 * per_layer
    else:
        activations = shape.layers * per_layer
    scored = tokens if loss_chunk_tokens is None else min(tokens, loss_chunk_tokens)
    logits = scored * shape.vocab * LOGIT_BYTES_PER_VOCAB
    terms = {"model_states": states, "activations": activations, "logits": logits}
    terms["total"] = sum(terms.values())
    return terms


def table(rows: list[tuple[str, str, int, int, int | None]]) -> str:
    """A Markdown table of (label, model, tokens per GPU, GPUs, loss_chunk_tokens) rows: sharded
    states, gradient checkpointing on, GiB per term."""
    lines = [
        "| config | tokens/GPU | loss_chunk_tokens | states | activations | logits | total (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, model, tokens, gpus, chunk in rows:
        m = step_memory(
            PAPER_MODELS[model],
            tokens=tokens,
            gpus=gpus,
            sharded=True,
            gradient_checkpointing=True,
            loss_chunk_tokens=chunk,
        )
        lines.append(
            f"| {label} | {tokens} | {chunk if chunk is not None else '—'} | "
            + " | ".join(f"{m[k] / GIB:.1f}" for k in ("model_states", "activations", "logits", "total"))
            + " |"
        )
    return "\n".join(lines)


PAPER_ROWS = [
    ("llama2-dprope (8k)", "meta-llama/Llama-2-7b-hf", 8192, 8, None),
    ("llama2-dprope (16k)", "meta-llama/Llama-2-7b-hf", 16384, 8, None),
    ("llama2-dprope (16k)", "meta-llama/Llama-2-7b-hf", 16384, 8, 4096),
    ("llama2-anchor (64k)", "meta-llama/Llama-2-7b-hf", 65536, 8, None),
    ("llama2-anchor (64k)", "meta-llama/Llama-2-7b-hf", 65536, 8, 4096),
    ("llama2-anchor-128k", "meta-llama/Llama-2-7b-hf", 131072, 8, 4096),
    ("llama3-anchor (128k)", "meta-llama/Meta-Llama-3-8B", 131072, 8, None),
    ("llama3-anchor (128k)", "meta-llama/Meta-Llama-3-8B", 131072, 8, 4096),
    ("mistral-anchor (128k)", "mistralai/Mistral-7B-v0.3", 131072, 8, 4096),
    ("qwen15-anchor (128k)", "Qwen/Qwen1.5-1.8B", 131072, 8, 4096),
]


if __name__ == "__main__":
    print(table(PAPER_ROWS))
