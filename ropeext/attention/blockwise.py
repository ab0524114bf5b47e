"""Block-sparse attention on CPU (or any device): only the allowed blocks are computed.

Each segment of the plan (``ropeext.attention.plan``) is a plain causal attention problem.
Segments of similar length are stacked into one batch and run through SDPA's causal fast path,
so the cost grows with the sum of squared document lengths instead of W^2. Gradients flow
through the gathers and the final permutation like through any indexing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ropeext.attention.plan import SegmentPlan


def _index(plan: SegmentPlan, device, key: str, make):
    cache = plan._cache if plan._cache is not None else {}
    slot = (key, str(device))
    if slot not in cache:
        cache[slot] = make()
        plan._cache = cache
    return cache[slot]


def blockwise_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, plan: SegmentPlan, *,
                        scale: float | None = None, dropout: float = 0.0) -> torch.Tensor:
    """Attention over (B, H, W, D) query and (B, Hkv, W, D) key/value following ``plan``.

    Returns (B, W, H, D), the layout transformers' attention functions return.
    """
    B, H, W, D = query.shape
    Hkv = key.shape[1]
    if (B, W) != (plan.batch, plan.window):
        raise ValueError(f"plan is for batch x window {plan.batch} x {plan.window}, got {B} x {W}")
    device = query.device
    if plan.plain_causal:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, dropout_p=dropout,
                                             enable_gqa=Hkv != H)
        return out.transpose(1, 2)
    qf = query.transpose(1, 2).reshape(B * W, H, D)
    kf = key.transpose(1, 2).reshape(B * W, Hkv, D)
    vf = value.transpose(1, 2).reshape(B * W, Hkv, D)

    def make():
        parts = []
        for width, idx, sel, dest in plan.buckets():
            parts.append((width, torch.as_tensor(idx, device=device), torch.as_tensor(sel, device=device),
                          torch.as_tensor(dest, device=device)))
        dest_all = torch.cat([p[3] for p in parts])
        inverse = torch.empty_like(dest_all)
        inverse[dest_all] = torch.arange(len(dest_all), device=device)
        return parts, inverse

    parts, inverse = _index(plan, device, "buckets", make)
    outs = []
    gqa = Hkv != H
    for width, idx, sel, _dest in parts:
        n = idx.shape[0]
        flat = idx.reshape(-1)
        qg = qf.index_select(0, flat).view(n, width, H, D).transpose(1, 2)
        kg = kf.index_select(0, flat).view(n, width, Hkv, D).transpose(1, 2)
        vg = vf.index_select(0, flat).view(n, width, Hkv, D).transpose(1, 2)
        og = F.scaled_dot_product_attention(qg, kg, vg, is_causal=width > 1, scale=scale,
                                            dropout_p=dropout, enable_gqa=gqa)
        outs.append(og.transpose(1, 2).reshape(n * width, H, D).index_select(0, sel))
    out = torch.cat(outs).index_select(0, inverse)
    return out.view(B, W, H, D)
