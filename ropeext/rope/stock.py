"""The bridge to stock transformers: the frequencies a stock model runs for given ``rope_parameters``.

transformers computes inverse frequencies in float32 with torch's ``pow``, which numpy does not
reproduce bit for bit; so the frequencies a stock model runs are taken from transformers' own
``ROPE_INIT_FUNCTIONS`` (imported here, lazily). ``default`` is computed as ``linear`` with factor
1.0, which is the same float32 computation (a division by 1.0 is exact).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np

from ropeext.errors import RopeextError

NATIVE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


@contextmanager
def _quiet_transformers():
    log = logging.getLogger("transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def stock_config(rope_parameters: dict, head_dim: int, max_position_embeddings: int):
    """The smallest config transformers' RoPE init functions accept, carrying ``rope_parameters``.

    It goes through the same standardisation a model config applies (``convert_rope_params_to_dict``,
    from transformers' own mixin), without importing a model's configuration module, which costs about
    a second of start-up. tests/test_rope_stock.py checks it against ``LlamaConfig``.
    """
    # heavy: transformers (and torch) load only when stock RoPE is computed
    from transformers.modeling_rope_utils import RotaryEmbeddingConfigMixin

    class RopeConfig(RotaryEmbeddingConfigMixin):
        def __init__(self):
            self.hidden_size = self.head_dim = int(head_dim)
            self.num_attention_heads = 1
            self.max_position_embeddings = int(max_position_embeddings)
            self.rope_parameters = dict(rope_parameters)

    config = RopeConfig()
    with _quiet_transformers():
        config.convert_rope_params_to_dict()
    return config


def stock_inv_freq(
    rope_parameters: dict, head_dim: int, max_position_embeddings: int, seq_len: int | None = None
) -> tuple[np.ndarray, float]:
    """(inv_freq as float32 numpy, attention factor) that stock transformers computes.

    ``seq_len`` is the sequence length the model runs at; it matters for ``dynamic`` (frequencies
    grow with the length) and ``longrope`` (short or long factors).
    """
    # heavy: transformers (and torch) load only when stock RoPE is computed
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(rope_parameters)
    rope_type = params.get("rope_type", "default")
    if rope_type not in NATIVE_TYPES:
        raise RopeextError(f"rope_parameters.rope_type must be one of {', '.join(NATIVE_TYPES)}, got {rope_type!r}")
    if rope_type == "default":
        params = {"rope_type": "linear", "factor": 1.0, "rope_theta": params["rope_theta"]}
    config = stock_config(params, head_dim, max_position_embeddings)
    with _quiet_transformers():
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, None, seq_len=seq_len)
    return inv_freq.detach().cpu().numpy().astype(np.float32), float(attention_factor)


def default_inv_freq(rope_theta: float, head_dim: int) -> np.ndarray:
    """The unscaled frequencies theta_i as a stock model computes them (float32)."""
    return stock_inv_freq({"rope_type": "default", "rope_theta": float(rope_theta)}, head_dim, 1)[0]
