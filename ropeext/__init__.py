"""ropeext: context-window extension of RoPE language models (DPRoPE, AnchorAttention)."""

__version__ = "0.1.0"
