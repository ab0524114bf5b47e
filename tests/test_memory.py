"""The training-memory estimate (ropeext.train.memory) against what autograd really saves, and by hand."""

import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ropeext.config import load_config
from ropeext.train.memory import GIB, PAPER_MODELS, PAPER_ROWS, ModelShape, step_memory, table
from tests.conftest import REPO


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
    assert len(rows) == 2 + len(PAPER_ROWS) and "| sequence_parallel |" in rows[0]
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


@pytest.mark.parametrize("gradient_checkpointing", [True, False])
@pytest.mark.parametrize("model", ["meta-llama/Llama-2-7b-hf", "meta-llama/Meta-Llama-3-8B"])
def test_sequence_parallel_divides_the_token_terms(model, gradient_checkpointing):
    shape = PAPER_MODELS[model]
    kw = dict(tokens=131072, gpus=8, sharded=True, gradient_checkpointing=gradient_checkpointing)
    one = step_memory(shape, loss_chunk_tokens=None, **kw)
    eight = step_memory(shape, loss_chunk_tokens=None, sequence_parallel=8, **kw)
    assert one["all_to_all"] == 0 and one == step_memory(shape, loss_chunk_tokens=None, sequence_parallel=1, **kw)
    assert eight["model_states"] == one["model_states"]  # sharded over all 8 GPUs either way
    assert eight["activations"] == one["activations"] / 8  # 16384 tokens per GPU instead of 131072
    assert eight["logits"] == one["logits"] / 8 == 16384 * shape.vocab * 14
    # head-sharded q, k, v and output (as many values as the local slice's) and their gradients
    kv = shape.hidden * shape.kv_heads // shape.heads
    a2a = 2 * 16384 * (2 * shape.hidden + 2 * kv) * 2
    if not gradient_checkpointing:  # every layer's kernel also keeps its head-sharded output
        a2a += shape.layers * 16384 * shape.hidden * 2
    assert eight["all_to_all"] == a2a
    assert eight["total"] == sum(eight[k] for k in ("model_states", "activations", "all_to_all", "logits"))
    # a loss chunk shorter than the local slice bounds the logits as before
    chunked = step_memory(shape, loss_chunk_tokens=4096, sequence_parallel=8, **kw)
    assert chunked["logits"] == step_memory(shape, loss_chunk_tokens=4096, **kw)["logits"] == 4096 * shape.vocab * 14


def _configs_at_128k() -> list[str]:
    names = []
    for path in sorted((REPO / "config").glob("*.yaml")):
        cfg = load_config(path) if "extension:" in path.read_text() else None
        if cfg and 131072 in cfg["extension"]["target_lengths"]:
            names.append(path.name)
    return names


@pytest.mark.parametrize("config", _configs_at_128k())
def test_the_128k_configs_fit_80_gb_with_their_sequence_parallel_degree(config):
    """Each 128k paper config has a table row with its own model, GPUs, loss chunk and sequence_parallel,
    and that row fits an 80 GB GPU; the 7-8B models would not without sequence parallelism."""
    cfg = load_config(REPO / "config" / config)
    ft, gpus = cfg["finetune"], cfg["resources"]["finetune"]["gpu"]
    key = (cfg["model"]["path"], 131072, gpus, ft["loss_chunk_tokens"], ft["sequence_parallel"])
    assert key in [row[1:] for row in PAPER_ROWS], key
    shape = PAPER_MODELS[cfg["model"]["path"]]
    assert (shape.heads, shape.hidden) == (
        cfg["model"]["architecture"]["num_attention_heads"],
        cfg["model"]["architecture"]["hidden_size"],
    )
    kw = dict(tokens=131072, gpus=gpus, sharded=True, gradient_checkpointing=ft["gradient_checkpointing"])
    usable = 0.9 * 80  # GiB of an 80 GB GPU, leaving the share the estimate does not count
    configured = step_memory(
        shape, loss_chunk_tokens=ft["loss_chunk_tokens"], sequence_parallel=ft["sequence_parallel"], **kw
    )
    assert configured["total"] / GIB < usable
    without = step_memory(shape, loss_chunk_tokens=ft["loss_chunk_tokens"], **kw)
    if shape.params > 5e9:
        assert ft["sequence_parallel"] == 8 and without["total"] / GIB > 80
        # one data-parallel group: the global batch runs one window per micro-batch
        assert ft["batch_size"] == ft["grad_accum"] * gpus // ft["sequence_parallel"]
    else:  # Qwen1.5-1.8B fits without it
        assert ft["sequence_parallel"] == 1 and without["total"] / GIB < usable


@pytest.mark.parametrize(
    "model,gpus,tokens,sp,what",
    [
        ("meta-llama/Llama-2-7b-hf", 8, 131072, 3, "the gpus (8)"),
        ("meta-llama/Llama-2-7b-hf", 8, 131070, 8, "the tokens (131070)"),
        ("Qwen/Qwen1.5-1.8B", 32, 131072, 32, "the attention heads (16)"),
        ("meta-llama/Meta-Llama-3-8B", 16, 131072, 16, "the kv heads (8)"),
    ],
)
def test_sequence_parallel_must_divide(model, gpus, tokens, sp, what):
    with pytest.raises(ValueError, match=re.escape(f"sequence_parallel {sp} must divide {what}")):
        step_memory(
            PAPER_MODELS[model],
            tokens=tokens,
            gpus=gpus,
            sharded=True,
            gradient_checkpointing=True,
            loss_chunk_tokens=None,
            sequence_parallel=sp,
        )


@pytest.mark.parametrize("sp", [0, -2])
def test_sequence_parallel_must_be_positive(sp):
    with pytest.raises(ValueError, match=f"sequence_parallel must be a positive integer, got {sp}"):
        step_memory(
            PAPER_MODELS["Qwen/Qwen1.5-1.8B"],
            tokens=8192,
            gpus=8,
            sharded=True,
            gradient_checkpointing=True,
            loss_chunk_tokens=None,
            sequence_parallel=sp,
        )
