"""Block-sparse attention on CPU (or any device): only the allowed blocks are computed.

Each segment of the plan (``ropeext.attention.plan``) is a plain causal attention problem.
Segments of similar length are stacked into one batch and run through SDPA's causal fast path,
so the cost grows with the sum of squared document lengths instead of W^2. Gradients flow
through the gathers and the final permutation like through any indexing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from ropeext.attention.plan import SegmentPlan


def _index(plan: SegmentPlan, device, key: str, make):
    cache = plan._cache if plan._cache is not None else {}
    slot = (key, str(device))
    if slot not in cache:
        cache[slot] = make()
        plan._cache = cache
    return cache[slot]


def blockwise_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    plan: SegmentPlan,
    *,
    scale: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Attention over (B, H, W, D) query and (B, Hkv, W, D) key/value following ``plan``.

    Returns (B, W, H, D), the layout transformers' attention functions return.
    """
    # heavy: torch loads only when a model runs, and --help imports ropeext.attention
    import torch
    import torch.nn.functional as F  # (as above)

    B, H, W, D = query.shape
    Hkv = key.shape[1]
    if (B, W) != (plan.batch, plan.window):
        raise ValueError(f"plan is for batch x window {plan.batch} x {plan.window}, got {B} x {W}")
    device = query.device
    if plan.plain_causal or (plan.whole_rows and dropout == 0.0):
        out = F.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scale, dropout_p=dropout, enable_gqa=Hkv != H
        )
        return out.transpose(1, 2)
    qf = query.transpose(1, 2).reshape(B * W, H, D)
    kf = key.transpose(1, 2).reshape(B * W, Hkv, D)
    vf = value.transpose(1, 2).reshape(B * W, Hkv, D)

    def make():
        # One gather for every bucket (a single index_add in the backward pass), and one gather that
        # picks each token's output row out of the concatenated bucket outputs.
        widths, counts, gathers, picks = [], [], [], []
        offset = 0
        for width, idx, sel, _dest in plan.buckets():
            widths.append(width)
            counts.append(idx.shape[0])
            gathers.append(torch.as_tensor(idx.reshape(-1)))
            picks.append(torch.as_tensor(sel) + offset)
            offset += idx.size
        dest_all = torch.cat([torch.as_tensor(b[3]) for b in plan.buckets()])
        inverse = torch.empty_like(dest_all)
        inverse[dest_all] = torch.arange(len(dest_all))
        pick = torch.cat(picks)[inverse]
        return widths, counts, torch.cat(gathers).to(device), pick.to(device)

    widths, counts, gather, pick = _index(plan, device, "buckets", make)
    gqa = Hkv != H
    qg_all = qf.index_select(0, gather)
    kg_all = kf.index_select(0, gather)
    vg_all = vf.index_select(0, gather)
    sizes = [n * width for width, n in zip(widths, counts)]
    # split, not slicing: its backward is one concatenation instead of a zero-filled full-size
    # gradient per bucket
    outs = []
    for width, n, qg, kg, vg in zip(widths, counts, qg_all.split(sizes), kg_all.split(sizes), vg_all.split(sizes)):
        if width == 1 and dropout == 0.0:
            # a query that sees only its own key: the softmax weight is exactly 1, the output is the
            # value (anchors alone, padding tokens); no kernel call, no gradient for q and k
            og = vg if not gqa else vg.repeat_interleave(H // Hkv, dim=1)
            outs.append(og)
            continue
        qg = qg.view(n, width, H, D).transpose(1, 2)
        kg = kg.view(n, width, Hkv, D).transpose(1, 2)
        vg = vg.view(n, width, Hkv, D).transpose(1, 2)
        og = F.scaled_dot_product_attention(
            qg, kg, vg, is_causal=width > 1, scale=scale, dropout_p=dropout, enable_gqa=gqa
        )
        outs.append(og.transpose(1, 2).reshape(n * width, H, D))
    out = torch.cat(outs).index_select(0, pick)
    return out.view(B, W, H, D)
