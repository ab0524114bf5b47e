"""Building, loading and RoPE-extending Hugging Face causal LMs."""

from __future__ import annotations

from pathlib import Path

from ropeext.errors import RopeextError


def build_tiny_llama(vocab_size: int, train_length: int, *, hidden_size: int = 128, num_hidden_layers: int = 4,
                     num_attention_heads: int = 4, intermediate_size: int = 384, rope_theta: float = 10000.0,
                     bos_token_id: int = 1, eos_token_id: int = 2, pad_token_id: int = 0, seed: int = 0):
    """A small Llama with tied embeddings, randomly initialised under ``seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=train_length,
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def apply_scaling(model_config, scaling: dict) -> None:
    """Put a ``scaling.json``'s RoPE extension into a transformers config (in place).

    Checks that the scaling was solved for this model's head dimension and RoPE base.
    """
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
    params = dict(getattr(model_config, "rope_parameters", None) or {})
    theta = params.get("rope_theta", getattr(model_config, "rope_theta", None))
    if int(scaling["head_dim"]) != int(head_dim):
        raise RopeextError(
            f"scaling.json was solved for head_dim {scaling['head_dim']}, but the model has head_dim {head_dim}")
    if theta is not None and scaling.get("method") != "base_change" and abs(float(scaling["rope_theta"]) - float(theta)) > 1e-6 * float(theta):
        raise RopeextError(
            f"scaling.json was solved for rope_theta {scaling['rope_theta']}, but the model has rope_theta {theta}")
    model_config.rope_parameters = dict(scaling["rope_parameters"])
    # Some configs (Phi-3 style) carry their own original_max_position_embeddings, which transformers
    # prefers over the one in rope_parameters: make it agree with the scaling's pre-training length.
    if getattr(model_config, "original_max_position_embeddings", None) is not None:
        model_config.original_max_position_embeddings = int(scaling["train_length"])
    model_config.max_position_embeddings = int(scaling.get("max_position_embeddings", scaling["target_length"]))


def load_model_config(path: str | Path, option: str = "model"):
    """The transformers config of a model directory or hub id, or a clear error naming ``option``."""
    from transformers import AutoConfig

    path = str(path)
    if not (Path(path).is_dir() or "/" in path):
        raise RopeextError(f"{option}: {path} is neither a model directory nor a hub id like org/name")
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001
        raise RopeextError(f"{option}: cannot load a model config from {path}: {exc}") from None


def load_causal_lm(path: str | Path, *, scaling: dict | None = None, dtype=None, attn_implementation: str = "sdpa"):
    """Load a model directory (or hub id), optionally with a RoPE extension applied."""
    import torch
    from transformers import AutoModelForCausalLM

    path = str(path)
    config = load_model_config(path)
    if scaling is not None:
        apply_scaling(config, scaling)
    config.use_cache = False
    model = AutoModelForCausalLM.from_pretrained(
        path, config=config, dtype=dtype or torch.float32, attn_implementation=attn_implementation
    )
    return model
