"""Observe, during one real training forward pass, which numeric path RoPE and attention took.

Hooks on the first decoder layer's attention record the dtype of the rotary cos/sin it receives,
the q/k projections' outputs (before RoPE), the query/key/value that reach the attention kernel
(after RoPE, so the dtype the rotation produced), the attention output, and which attention
function ran with or without a packing plan. Nothing is inferred from settings.
"""

from __future__ import annotations

import contextlib


def _attention_module(model):
    for name, module in model.named_modules():
        if name.endswith("self_attn") and hasattr(module, "q_proj") and hasattr(module, "k_proj"):
            return name, module
    return None, None


def _dtype(x) -> str:
    return str(getattr(x, "dtype", type(x).__name__)).replace("torch.", "")


@contextlib.contextmanager
def observe_numeric_path(model, record: dict):
    """Fill ``record`` during the next forward pass of ``model`` (first call only)."""
    # heavy: transformers loads only when a model runs
    from transformers.modeling_utils import AttentionInterface

    name, attn = _attention_module(model)
    if attn is None:
        record["observed"] = False
        yield record
        return
    record["module"] = name
    handles = []

    def pre_hook(module, args, kwargs):
        pe = kwargs.get("position_embeddings")
        if pe is not None and "rope_cos" not in record:
            record["rope_cos"], record["rope_sin"] = _dtype(pe[0]), _dtype(pe[1])
        hs = kwargs.get("hidden_states", args[0] if args else None)
        record.setdefault("hidden_states", _dtype(hs))

    def proj_hook(label):
        def hook(module, args, out):
            record.setdefault(label, _dtype(out))

        return hook

    def out_hook(module, args):
        record.setdefault("attention_output", _dtype(args[0]))

    handles.append(attn.register_forward_pre_hook(pre_hook, with_kwargs=True))
    handles.append(attn.q_proj.register_forward_hook(proj_hook("q_proj")))
    handles.append(attn.k_proj.register_forward_hook(proj_hook("k_proj")))
    if hasattr(attn, "o_proj"):
        handles.append(attn.o_proj.register_forward_pre_hook(out_hook))

    def module_out_hook(module, args, out):
        record.setdefault("attention_module_output", _dtype(out[0]))

    handles.append(attn.register_forward_hook(module_out_hook))

    impl = getattr(model.config, "_attn_implementation", None)
    mapping = AttentionInterface._global_mapping
    original = mapping.get(impl)

    if original is not None:

        def wrapped(module, query, key, value, attention_mask, *args, **kwargs):
            if module is attn and "query_after_rope" not in record:
                record.update(
                    {
                        "query_after_rope": _dtype(query),
                        "key_after_rope": _dtype(key),
                        "value": _dtype(value),
                        "attention_implementation": impl,
                        "packed_plan": kwargs.get("packed_plan") is not None,
                        "attention_mask": None if attention_mask is None else type(attention_mask).__name__,
                        "device": str(query.device),
                    }
                )
            return original(module, query, key, value, attention_mask, *args, **kwargs)

        mapping[impl] = wrapped
    try:
        yield record
    finally:
        if original is not None:
            mapping[impl] = original
        for h in handles:
            h.remove()
        record["observed"] = "q_proj" in record
