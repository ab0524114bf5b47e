"""Capture post-RoPE queries and keys of every attention layer during a normal forward pass.

A capturing attention function is registered with transformers' ``AttentionInterface`` (and the
matching mask builder with ``AttentionMaskInterface``) under ``ropeext_capture_<inner>``. Inside
``capture_qk`` the model is switched to it: each layer hands its rotated query and key to a sink,
then the inner implementation (``sdpa`` or ``eager``) computes the attention output as usual, so
the forward pass itself is unchanged. Nothing in transformers is patched.

``exact_rope_angles`` swaps the model's rotary-embedding modules for wrappers that compute the
rotation angles ``position * inv_freq`` and their cosines in float64 (transformers computes them in
fp32 whatever the model dtype); with a float64 model this makes a position shift exact to rounding.
"""

from __future__ import annotations

import contextvars
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from ropeext.errors import RopeextError

# sink(layer_index, query (batch, heads, T, d), key (batch, kv_heads, T, d), scaling)
Sink = Callable[[int, torch.Tensor, torch.Tensor, float], None]

PREFIX = "ropeext_capture_"
_ACTIVE_SINK: contextvars.ContextVar[Sink | None] = contextvars.ContextVar("ropeext_qk_sink", default=None)


def _inner_function(inner: str, module) -> Callable:
    # heavy: transformers loads only when a model runs
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if inner == "eager":
        # each model family ships its own eager function next to its attention module
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise RopeextError(f"{type(module).__name__} has no eager attention function to delegate to")
        return fn
    return ALL_ATTENTION_FUNCTIONS[inner]


def _make_capture(inner: str) -> Callable:
    def capture_attention(module, query, key, value, attention_mask, **kwargs):
        sink = _ACTIVE_SINK.get()
        if sink is not None:
            scaling = kwargs.get("scaling")
            if scaling is None:
                scaling = getattr(module, "scaling", query.shape[-1] ** -0.5)
            sink(int(module.layer_idx), query, key, float(scaling))
        return _inner_function(inner, module)(module, query, key, value, attention_mask, **kwargs)

    capture_attention.__name__ = f"{PREFIX}{inner}"
    return capture_attention


def register_capture(inner: str) -> str:
    """Register the capturing function that delegates to ``inner``; return its name."""
    # heavy: transformers loads only when a model runs
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface  # (as above)

    if inner not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        known = ", ".join(sorted(ALL_MASK_ATTENTION_FUNCTIONS._global_mapping))
        raise RopeextError(f"attention implementation {inner!r} cannot be captured (expected one of: {known})")
    name = f"{PREFIX}{inner}"
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _make_capture(inner))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[inner])
    return name


@contextmanager
def capture_qk(model, sink: Sink, inner: str | None = None) -> Iterator[None]:
    """Within the block, every attention layer of ``model`` reports its post-RoPE q and k to ``sink``.

    ``inner`` is the implementation that computes the attention output (default: the model's own).
    The model's attention implementation is restored on exit.
    """
    previous = model.config._attn_implementation
    if previous.startswith(PREFIX):
        raise RopeextError("capture_qk blocks cannot be nested on the same model")
    inner = inner or previous
    name = register_capture(inner)
    token = _ACTIVE_SINK.set(sink)
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
        _ACTIVE_SINK.reset(token)


class _Float64Angles(torch.nn.Module):
    """Wraps a rotary-embedding module; recomputes its cos/sin from float64 angles."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x, position_ids, *args, **kwargs):
        # run the wrapped module first: it applies any length-dependent update of inv_freq
        cos, sin = self.inner(x, position_ids, *args, **kwargs)
        inv_freq = self.inner.inv_freq.to(device=position_ids.device, dtype=torch.float64)
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        scaling = float(getattr(self.inner, "attention_scaling", 1.0))
        cos64, sin64 = emb.cos() * scaling, emb.sin() * scaling
        if cos64.shape != cos.shape or not torch.allclose(cos64.to(cos.dtype), cos, atol=1e-2, rtol=0):
            raise RopeextError(
                f"{type(self.inner).__name__}: rotary layout is not the half-split cos/sin that exact angles support"
            )
        return cos64.to(cos.dtype), sin64.to(sin.dtype)


def _rotary_modules(model) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    found = []
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if hasattr(child, "inv_freq") and "rotary" in type(child).__name__.lower():
                found.append((parent, child_name, child))
    return found


@contextmanager
def exact_rope_angles(model) -> Iterator[None]:
    """Compute RoPE angles in float64 inside the block (restores the original modules on exit)."""
    found = _rotary_modules(model)
    if not found:
        raise RopeextError(f"{type(model).__name__}: no rotary-embedding module found")
    for parent, name, child in found:
        setattr(parent, name, _Float64Angles(child))
    try:
        yield
    finally:
        for parent, name, child in found:
            setattr(parent, name, child)
