"""Attention backends for packed windows, registered with transformers' attention interfaces.

``attention.backend`` picks one:

``sdpa_mask``     transformers' SDPA with a dense boolean (B, 1, W, W) mask built from doc_ids: the
                  reference. ``full`` without padding uses SDPA's causal fast path (no mask).
``blockwise``     ``ropeext_blockwise``: only the allowed blocks (each document's causal block, plus
                  the anchor key for the anchor layouts), see ``blockwise.py``. Any device; CPU default.
``flex``          ``ropeext_flex``: FlexAttention with a BlockMask built from doc_ids (GPU; torch has no
                  FlexAttention backward on CPU, so CPU training is refused).
``flash_varlen``  ``ropeext_flash_varlen``: flash-attn's varlen kernel over the segments (GPU,
                  flash-attn imported lazily), see ``flash.py``.

Every backend runs all seven packing layouts exactly, including the interleaved ones whose
documents are not contiguous in a window: the dense mask and FlexAttention's mask_mod compare doc
ids wherever the tokens are, and the segment plan of blockwise / flash_varlen gathers each
document's tokens into one causal segment (``plan.py``). Tested against the dense reference in
tests/test_attention.py (outputs and gradients, float64 on CPU; flex and flash_varlen on a GPU).
No layout is refused; ``check_backend`` and ``ropeext.data.packing.check_layout`` are the checks.

Two calls are all a training or evaluation loop needs::

    set_backend(model, "blockwise")
    logits = model(**model_inputs(batch, layout, "blockwise")).logits

Packed inputs always run with ``use_cache=False``: transformers stops applying packed masks as soon
as a cache exists, so ``model_inputs`` sets it, ``set_backend`` turns the config default off, and
the packed backends refuse a key length that differs from the window (a cache in use).

Without packing information (no ``packed_plan`` keyword, e.g. generation in an evaluator) the
registered backends fall back to transformers' own SDPA path with the mask transformers built.
"""

from __future__ import annotations

from ropeext.attention.blockwise import blockwise_attention
from ropeext.attention.flash import flash_varlen_kernel, varlen_attention
from ropeext.attention.masks import attention_mask_torch, mask_predicate
from ropeext.attention.plan import build_plan
from ropeext.data.packing import LAYOUTS, PAD_DOC, attention_rule, check_layout
from ropeext.errors import RopeextError

BACKENDS = ("sdpa_mask", "blockwise", "flex", "flash_varlen")
IMPLEMENTATION = {
    "sdpa_mask": "sdpa",
    "blockwise": "ropeext_blockwise",
    "flex": "ropeext_flex",
    "flash_varlen": "ropeext_flash_varlen",
}
_PACKED_KWARGS = ("packed_plan", "packed_layout", "doc_ids")
_registered = False

__all__ = ["BACKENDS", "IMPLEMENTATION", "LAYOUTS", "check_backend", "model_inputs", "register", "set_backend"]


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise RopeextError(f"unknown attention backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


_PLAN_CACHE: dict = {}


def _cached_plan(doc_ids, layout: str):
    """The plan of the last doc_ids tensor seen, so the layers of one forward pass share it."""
    key = (doc_ids.data_ptr(), tuple(doc_ids.shape), doc_ids._version, str(doc_ids.device), layout)
    if _PLAN_CACHE.get("key") != key:
        _PLAN_CACHE.clear()
        _PLAN_CACHE.update(key=key, plan=build_plan(doc_ids, layout))
    return _PLAN_CACHE["plan"]


def _plan_from_kwargs(query, key, kwargs):
    plan = kwargs.get("packed_plan")
    if plan is None and kwargs.get("doc_ids") is not None:
        layout = kwargs.get("packed_layout")
        if layout is None:
            raise RopeextError(
                "packed attention got doc_ids without packed_layout; build the inputs with "
                "ropeext.attention.model_inputs"
            )
        plan = _cached_plan(kwargs["doc_ids"], layout)
    if plan is not None and kwargs.get("use_cache"):
        raise RopeextError(
            "packed attention needs use_cache=False (transformers stops applying packed masks "
            "once a cache exists); build the inputs with ropeext.attention.model_inputs"
        )
    if plan is not None and (key.shape[2] != query.shape[2] or query.shape[2] != plan.window):
        raise RopeextError(
            f"packed attention needs use_cache=False: got {query.shape[2]} queries against {key.shape[2]} keys "
            f"for a window of {plan.window}"
        )
    return plan


def _strip(kwargs):
    return {k: v for k, v in kwargs.items() if k not in _PACKED_KWARGS}


def _blockwise_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # heavy: transformers loads only when a model runs
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = _plan_from_kwargs(query, key, kwargs)
    if plan is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **_strip(kwargs)
        )
    return blockwise_attention(query, key, value, plan, scale=scaling, dropout=dropout), None


def _flash_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # heavy: transformers loads only when a model runs
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = _plan_from_kwargs(query, key, kwargs)
    if plan is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **_strip(kwargs)
        )
    return varlen_attention(query, key, value, plan, scale=scaling, dropout=dropout), None


def _flex_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # heavy: torch loads only when a model runs
    import torch

    # heavy: transformers loads only when a model runs
    from transformers.integrations.flex_attention import flex_attention_forward

    if query.device.type == "cpu" and torch.is_grad_enabled() and query.requires_grad:
        raise RopeextError(_FLEX_CPU)
    return flex_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **_strip(kwargs)
    )


_FLEX_CPU = (
    "attention.backend 'flex' cannot train on CPU: FlexAttention has no backward pass on CPU in this "
    "torch version; use 'blockwise' (the CPU default) or 'sdpa_mask', or train on a GPU"
)


def register() -> None:
    """Register the ropeext backends with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    # heavy: transformers loads only when a model runs
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flex_attention_mask, sdpa_mask  # (as above)

    AttentionInterface.register(IMPLEMENTATION["blockwise"], _blockwise_forward)
    AttentionMaskInterface.register(IMPLEMENTATION["blockwise"], sdpa_mask)
    AttentionInterface.register(IMPLEMENTATION["flash_varlen"], _flash_forward)
    AttentionMaskInterface.register(IMPLEMENTATION["flash_varlen"], sdpa_mask)
    AttentionInterface.register(IMPLEMENTATION["flex"], _flex_forward)
    AttentionMaskInterface.register(IMPLEMENTATION["flex"], flex_attention_mask)
    _registered = True


def set_backend(model, backend: str, *, training: bool | None = None) -> None:
    """Switch ``model`` (a transformers PreTrainedModel) to ``backend``; turns the cache default off.

    ``training`` defaults to ``model.training``; ``flex`` refuses to train on CPU.
    """
    check_backend(backend)
    register()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = None
    training = model.training if training is None else training
    if backend == "flex":
        from torch.nn.attention import flex_attention  # noqa: F401 - availability check

        if device is not None and device.type == "cpu" and training:
            raise RopeextError(_FLEX_CPU)
    if backend == "flash_varlen":
        flash_varlen_kernel()
        if device is not None and device.type != "cuda":
            raise RopeextError(f"attention.backend 'flash_varlen' needs a CUDA GPU, the model is on {device}")
    try:
        model.set_attn_implementation(IMPLEMENTATION[backend])
    except (ValueError, ImportError) as exc:
        raise RopeextError(f"attention.backend {backend!r} cannot be used with this model: {exc}") from None
    model.config.use_cache = False


def model_inputs(batch: dict, layout: str, backend: str) -> dict:
    """Keyword arguments for ``model(**kwargs)`` from a packed batch of (B, W) tensors.

    ``batch`` holds ``input_ids``, ``position_ids`` and ``doc_ids`` (other keys, e.g. labels, are
    ignored: the loss is computed outside the model on the already shifted labels).
    """
    # heavy: torch loads only when a model runs
    import torch

    check_layout(layout)
    check_backend(backend)
    missing = [k for k in ("input_ids", "position_ids", "doc_ids") if k not in batch]
    if missing:
        raise RopeextError(f"packed batch lacks {', '.join(missing)} (expected input_ids, position_ids, doc_ids)")
    input_ids = torch.as_tensor(batch["input_ids"]).long()
    position_ids = torch.as_tensor(batch["position_ids"], device=input_ids.device).long()
    doc_ids = torch.as_tensor(batch["doc_ids"], device=input_ids.device)
    if input_ids.ndim != 2 or position_ids.shape != input_ids.shape or doc_ids.shape != input_ids.shape:
        raise RopeextError(
            f"packed batch: input_ids, position_ids and doc_ids must all be (batch, window), got "
            f"{tuple(input_ids.shape)}, {tuple(position_ids.shape)}, {tuple(doc_ids.shape)}"
        )
    if attention_rule(layout) == "anchor" and bool((doc_ids[:, 0] != 0).any()):
        raise RopeextError(f"packed batch: the {layout} layout needs the anchor (doc id 0) at column 0 of every window")
    out = {"input_ids": input_ids, "position_ids": position_ids, "use_cache": False}
    if backend == "sdpa_mask":
        if layout == "full" and not bool((doc_ids == PAD_DOC).any()):
            out["attention_mask"] = None  # plain causal: SDPA's is_causal fast path
        else:
            out["attention_mask"] = attention_mask_torch(doc_ids, layout)
    elif backend in ("blockwise", "flash_varlen"):
        # An all-ones 2-D mask stops transformers from building its own packed mask from
        # restarting position ids; its mask function then returns None (nothing to mask).
        out["attention_mask"] = torch.ones_like(input_ids, dtype=torch.bool)
        out["packed_plan"] = build_plan(doc_ids, layout)
    else:  # flex
        # heavy: torch loads only when a model runs
        from torch.nn.attention.flex_attention import create_block_mask

        B, W = input_ids.shape
        out["attention_mask"] = create_block_mask(
            mask_predicate(doc_ids.long(), layout), B, None, W, W, device=str(input_ids.device)
        )
    return out
