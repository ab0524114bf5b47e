"""The training-memory estimate (ropeext.train.memory) against what autograd really saves, and by hand."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ropeext.train.memory import GIB, PAPER_MODELS, PAPER_ROWS, ModelShape, step_memory, table


def _saved_bytes_per_token(config: LlamaConfig, tokens: int) -> float:
    """Bytes of non-parameter tensors one bf16 decoder layer saves for backward, per token."""
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.set_attn_implementation("sdpa")
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, config.vocab_size, (1, tokens))
    hidden = model.model.embed_tokens(ids).detach().requires_grad_()
    positions = torch.arange(tokens)[None]
    rope = model.model.rotary_emb(hidden, positions)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model.layers[0](hidden, position_embeddings=rope, attention_mask=None, position_ids=positions)
    return sum(saved.values()) / tokens


@pytest.mark.parametrize("heads,kv_heads", [(8, 8), (8, 2)])
def test_layer_activations_match_what_autograd_saves(heads, kv_heads):
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=704,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        num_hidden_layers=1,
        vocab_size=1000,
    )
    measured = _saved_bytes_per_token(config, tokens=512)
    shape = ModelShape(0, 1, 256, 704, heads, kv_heads, 1000)
    assert shape.layer_activation_bytes() == pytest.approx(measured, rel=0.05)


def test_terms_by_hand():
    shape = PAPER_MODELS["meta-llama/Llama-2-7b-hf"]
    per_token_layer = 2 * (6 * 4096 + 2 * 4096 + 4 * 11008) + 8 * 4096
    plain = step_memory(shape, tokens=8192, gpus=1, sharded=False, gradient_checkpointing=False, loss_chunk_tokens=None)
    assert plain["model_states"] == 16 * 6.74e9
    assert plain["activations"] == 32 * 8192 * per_token_layer
    assert plain["logits"] == 8192 * 32000 * 14
    assert plain["total"] == plain["model_states"] + plain["activations"] + plain["logits"]

    ckpt = step_memory(shape, tokens=8192, gpus=8, sharded=True, gradient_checkpointing=True, loss_chunk_tokens=1024)
    assert ckpt["model_states"] == 16 * 6.74e9 / 8 + 4 * 6.74e9 / 32
    assert ckpt["activations"] == 32 * 8192 * 4096 * 2 + 2 * 8192 * per_token_layer
    assert ckpt["logits"] == 1024 * 32000 * 14
    # a chunk longer than the sequence is the whole sequence
    assert (
        step_memory(shape, tokens=512, gpus=1, sharded=False, gradient_checkpointing=True, loss_chunk_tokens=4096)[
            "logits"
        ]
        == 512 * 32000 * 14
    )


def test_the_issue_figures_and_the_docs_table():
    # 64k positions x 32k vocabulary of fp32 logits: 8 GB (the figure behind loss_chunk_tokens)
    assert 65536 * 32000 * 4 / 1e9 == pytest.approx(8.4, abs=0.05)
    rows = table(PAPER_ROWS).splitlines()
    assert len(rows) == 2 + len(PAPER_ROWS)
    anchor_64k = step_memory(
        PAPER_MODELS["meta-llama/Llama-2-7b-hf"],
        tokens=65536,
        gpus=8,
        sharded=True,
        gradient_checkpointing=True,
        loss_chunk_tokens=None,
    )
    chunked = step_memory(
        PAPER_MODELS["meta-llama/Llama-2-7b-hf"],
        tokens=65536,
        gpus=8,
        sharded=True,
        gradient_checkpointing=True,
        loss_chunk_tokens=4096,
    )
    usable = 0.9 * 80  # GiB of an 80 GB GPU, leaving the share the estimate does not count
    assert anchor_64k["total"] / GIB > usable > chunked["total"] / GIB


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="tokens and gpus"):
        step_memory(
            PAPER_MODELS["Qwen/Qwen1.5-1.8B"],
            tokens=0,
            gpus=8,
            sharded=True,
            gradient_checkpointing=True,
            loss_chunk_tokens=None,
        )
