"""flash-attn's varlen kernel over the segments of a packed batch (GPU; flash-attn imported lazily).

The batch is gathered into one unpadded stream of segments with ``cu_seqlens`` marking their
bounds, and ``flash_attn_varlen_func(..., causal=True)`` runs every segment independently.

Anchor layout, exact form: each document segment is extended in front by the anchor's key and
value, i.e. the very tensors at column 0 (rotary position 0 already applied), so that a causal
segment [anchor, d_1..d_L] lets d_i see exactly the anchor and d_1..d_i. The extra front query
row is dropped; the anchor's own output comes from its own length-1 segment. The AnchorAttention
authors obtain the same visibility by giving each document its own BOS copy at rotary position 0
in the input; that is exact only because each copy attends to itself alone, so every layer
recomputes the same anchor state. Reusing the anchor's key/value per layer gives the identical
result without extra tokens, and the output keeps the window's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

from ropeext.attention.plan import SegmentPlan
from ropeext.errors import RopeextError


def flash_varlen_kernel() -> Callable:
    """``flash_attn.flash_attn_varlen_func``, or a clear error where flash-attn is missing."""
    try:
        # optional: flash-attn is installed only on GPU machines
        from flash_attn import flash_attn_varlen_func
    except ImportError as exc:
        raise RopeextError(
            "attention.backend 'flash_varlen' needs the flash-attn package and a CUDA GPU "
            f"(import failed: {exc}); use 'sdpa_mask', 'blockwise' or 'flex' instead"
        ) from None
    return flash_attn_varlen_func


def sdpa_varlen_kernel(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None, causal=True
):
    """A pure-torch stand-in with flash_attn_varlen_func's calling convention (one SDPA per segment).

    Slow; used to check the varlen gather/scatter logic where flash-attn is not installed.
    """
    # heavy: torch loads only when a model runs, and --help imports ropeext.attention
    import torch
    import torch.nn.functional as F  # (as above)

    H, Hkv = q.shape[1], k.shape[1]
    outs = []
    bounds = cu_seqlens_q.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
        o = F.scaled_dot_product_attention(
            qs, ks, vs, is_causal=causal and b - a > 1, scale=softmax_scale, dropout_p=dropout_p, enable_gqa=H != Hkv
        )
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


def half_precision(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in one dtype for the kernel: autocast's where autocast is on (under bf16-mixed the
    rotary embedding hands over fp32 queries and keys beside a bf16 value, and flash-attn has no fp32
    kernel), else the half dtype among them when they disagree; as they are otherwise."""
    # heavy: torch loads only when a model runs, and --help imports ropeext.attention
    import torch

    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        halves = [t.dtype for t in tensors if t.dtype in (torch.float16, torch.bfloat16)]
        dtype = halves[0] if halves else tensors[0].dtype
    return tuple(t if t.dtype == dtype else t.to(dtype) for t in tensors)


def varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    plan: SegmentPlan,
    *,
    scale: float | None = None,
    dropout: float = 0.0,
    kernel: Callable | None = None,
) -> torch.Tensor:
    """(B, H, W, D) query, (B, Hkv, W, D) key/value -> (B, W, H, D) output following ``plan``."""
    # heavy: torch loads only when a model runs, and --help imports ropeext.attention
    import torch

    B, H, W, D = query.shape
    Hkv = key.shape[1]
    kernel = kernel or flash_varlen_kernel()
    query, key, value = half_precision(query, key, value)
    device = query.device
    cache = plan._cache if plan._cache is not None else {}
    slot = ("varlen", str(device))
    if slot not in cache:
        idx, cu, max_len, sel, dest = plan.varlen()
        inverse = torch.empty(len(dest), dtype=torch.long, device=device)
        dest_t = torch.as_tensor(dest, device=device)
        inverse[dest_t] = torch.arange(len(dest), device=device)
        cache[slot] = (
            torch.as_tensor(idx, device=device),
            torch.as_tensor(cu, dtype=torch.int32, device=device),
            max_len,
            torch.as_tensor(sel, device=device),
            inverse,
        )
        plan._cache = cache
    idx, cu, max_len, sel, inverse = cache[slot]
    qf = query.transpose(1, 2).reshape(B * W, H, D).index_select(0, idx)
    kf = key.transpose(1, 2).reshape(B * W, Hkv, D).index_select(0, idx)
    vf = value.transpose(1, 2).reshape(B * W, Hkv, D).index_select(0, idx)
    out = kernel(qf, kf, vf, cu, cu, max_len, max_len, dropout_p=dropout, softmax_scale=scale, causal=True)
    return out.index_select(0, sel).index_select(0, inverse).view(B, W, H, D)
