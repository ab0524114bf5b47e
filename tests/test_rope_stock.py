"""The light config behind ``stock_inv_freq`` gives transformers' RoPE init functions exactly what a
``LlamaConfig`` gives them: the same float32 frequencies and attention factor, bit for bit, for every
native rope type, at lengths on both sides of the pre-training window."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ropeext.rope.stock import stock_config

CASES = [
    {"rope_type": "linear", "factor": 1.0},
    {"rope_type": "linear", "factor": 8.0},
    {"rope_type": "dynamic", "factor": 4.0},
    {
        "rope_type": "yarn",
        "factor": 32.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "truncate": True,
    },
    {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 256,
        "beta_fast": 16.0,
        "beta_slow": 2.0,
        "truncate": False,
    },
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "original_max_position_embeddings": 8192,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    },
]


def _longrope(head_dim):
    rng = np.random.default_rng(head_dim)
    factors = (1.0 + rng.random(head_dim // 2) * 7).tolist()
    return {
        "rope_type": "longrope",
        "short_factor": factors,
        "long_factor": factors,
        "factor": 8.0,
        "original_max_position_embeddings": 1024,
    }


@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_light_config_matches_llama_config(head_dim, theta):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    logging.getLogger("transformers").setLevel(logging.ERROR)
    for case in [*CASES, _longrope(head_dim)]:
        params = {**case, "rope_theta": theta}
        for max_pos in (1024, 32768):
            for seq_len in (None, 512, 65536):
                ref_cfg = LlamaConfig(
                    hidden_size=head_dim,
                    num_attention_heads=1,
                    num_key_value_heads=1,
                    head_dim=head_dim,
                    intermediate_size=4,
                    num_hidden_layers=1,
                    vocab_size=8,
                    max_position_embeddings=max_pos,
                    rope_parameters=dict(params),
                )
                fn = ROPE_INIT_FUNCTIONS[params["rope_type"]]
                ref, ref_att = fn(ref_cfg, None, seq_len=seq_len)
                got, got_att = fn(stock_config(params, head_dim, max_pos), None, seq_len=seq_len)
                assert got.dtype == ref.dtype
                assert np.array_equal(got.numpy(), ref.numpy()), (case["rope_type"], max_pos, seq_len)
                assert got_att == ref_att
