import pytest

from ropeext.errors import RopeextError
from ropeext.modeling import apply_scaling


def _config(**extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=64,
        num_attention_heads=2,
        num_hidden_layers=1,
        intermediate_size=64,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        **extra,
    )


def _scaling(**over):
    s = {
        "method": "pi",
        "head_dim": 32,
        "rope_theta": 10000.0,
        "train_length": 64,
        "target_length": 256,
        "max_position_embeddings": 256,
        "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    }
    return s | over


def test_apply_scaling_sets_rope_parameters_and_window():
    cfg = _config()
    apply_scaling(cfg, _scaling())
    assert cfg.rope_parameters["rope_type"] == "linear" and cfg.max_position_embeddings == 256


def test_apply_scaling_refuses_another_geometry():
    with pytest.raises(RopeextError, match="head_dim 128, but the model has head_dim 32"):
        apply_scaling(_config(), _scaling(head_dim=128))
    with pytest.raises(RopeextError, match="rope_theta 500000.0, but the model has rope_theta 10000.0"):
        apply_scaling(_config(), _scaling(rope_theta=500000.0))


def test_config_level_original_window_follows_the_scaling():
    cfg = _config()
    cfg.original_max_position_embeddings = 4096  # a Phi-3 style attribute transformers would prefer
    apply_scaling(cfg, _scaling())
    assert cfg.original_max_position_embeddings == 64
