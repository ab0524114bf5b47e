"""Analyses of trained models: BF16 breaking RoPE's relative-position invariance (``bf16``)."""
