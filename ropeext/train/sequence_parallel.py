"""Sequence parallelism (DeepSpeed Ulysses): N processes share one packed training window.

Each process of a sequence-parallel group holds 1/N of the window's columns (a contiguous block:
``input_ids``, ``position_ids``, ``labels``; rank r of the group holds columns [r W/N, (r+1) W/N)).
Everything outside attention is per token, so it runs on the local columns as usual: the rotary
embedding reads the true positions from the local ``position_ids``, and the labels are already the
next token, so the local loss needs nothing from the neighbours. Inside every attention layer
DeepSpeed's ``UlyssesSPAttentionHF`` exchanges the rotated queries, keys and values all-to-all, so
that each process holds the WHOLE window for 1/N of the heads (q and key/value heads alike), runs
ropeext's packed attention there, and sends the outputs back to their columns.

The core attention sees the full window, so it takes its visibility from the full window too: the
model keywords carry the full-window segment plan (``packed_plan``, built from the full window's
doc_ids) or mask, which transformers and the Ulysses wrapper hand through untouched. Every packing
layout's per-document masks, interleaved documents and the shared anchor (doc id 0 at column 0,
held by the group's first process only, visible to every document of the anchor layouts) are
therefore exactly those of one process with the whole window. tests/test_sequence_parallel.py
checks loss and gradients against one process for all seven layouts.

Backends under sequence parallelism (``attention.backend``):

``blockwise``     the full-window segment plan; any device (the CPU default).
``flash_varlen``  the full-window segment plan through flash-attn's varlen kernel; CUDA only. Its
                  check needs one GPU per process (NCCL refuses two processes on one GPU):
                  ``pytest -m gpu tests/test_sequence_parallel.py`` on a machine with 2 GPUs and
                  flash-attn (``test_gpu_flash_varlen_*``).
``sdpa_mask``     the dense (B, 1, W, W) mask of the FULL window, built on every process: exact,
                  but its W^2 memory per process is what sequence parallelism exists to avoid, so
                  it is the reference for small windows, not for long ones.
``flex``          a FlexAttention BlockMask of the full window; training needs CUDA (no
                  FlexAttention backward on CPU; ``test_gpu_flex_*`` with 2 GPUs). The forward
                  pass runs on CPU in float32, but transformers compiles FlexAttention (about 25 s
                  on 2 cores), so the CPU test leaves it out; run once by hand, its loss equalled
                  one process's within 6e-8 relative for all seven layouts.

Groups: the ``world`` processes form ``world / N`` groups of consecutive ranks; ``data_rank`` /
``data_size`` number the groups, i.e. the data-parallel split of the rows (``shard_rows(batch,
sp.data_rank, sp.data_size)`` then ``shard_columns``). The parameters are replicated on every
process, and each process's gradient is its columns' share: summing the gradients over the whole
world (what DDP's all-reduce does, with the loss scaled by ``world / label_count`` as the loop
already does) gives the single-process gradient of the global batch.

Usage on every process (torch.distributed initialised, e.g. by ``accelerate launch``), with the
transformers model itself, before DDP / FSDP / DeepSpeed wrap it::

    sp = setup(model, size, backend=backend, window=W)        # None when size == 1
    rows = shard_rows(batch, sp.data_rank, sp.data_size)      # this group's rows, whole windows
    logits = model(**model_inputs_sp(rows, sp, layout, backend)).logits  # (B, W/N, vocab): my columns
    loss_sum = cross_entropy(logits, shard_columns(rows, sp)["labels"], reduction="sum")

Evaluation runs the same way (the wrapper stays on in eval mode); generation with a cache is
refused by the packed backends as it is without sequence parallelism.

DeepSpeed loads only in ``setup``. The Ulysses wrapper talks through ``deepspeed.comm`` and asserts
that it is initialised; ``setup`` initialises it on top of the torch.distributed process group
already there when nothing else (a DeepSpeed engine) has. No environment variable is needed:
DeepSpeed picks its accelerator (CPU here, CUDA on GPU machines) by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropeext.attention import IMPLEMENTATION, model_inputs, set_backend
from ropeext.attention.masks import attention_mask_torch
from ropeext.errors import RopeextError

KEY = "finetune.sequence_parallel"
SUPPORTED = ("blockwise", "flash_varlen", "sdpa_mask", "flex")
_SUPPORTED_TEXT = (
    "blockwise (any device), flash_varlen (CUDA), sdpa_mask (a dense full-window mask on every process: "
    "small windows) or flex (training on CUDA)"
)
_CORE = {**IMPLEMENTATION, "sdpa_mask": "sdpa"}  # the attention function the Ulysses wrapper calls
_GROUPS: dict = {}  # (world, size) -> the process groups made for it, made once per process


@dataclass(frozen=True)
class SequenceParallel:
    """This process's place: ``rank`` of ``size`` in its sequence-parallel ``group``; the group takes
    share ``data_rank`` of ``data_size`` of the global batch's rows."""

    size: int
    rank: int
    group: object  # torch.distributed.ProcessGroup
    data_rank: int
    data_size: int


def implementation(backend: str) -> str:
    """The attention implementation name ``setup`` registers for ``backend``."""
    return f"ropeext_ulysses_{backend}"


def check_sequence_parallel(size, *, world: int, window: int | None, heads: int, kv_heads: int, backend: str) -> None:
    """Refuse a sequence-parallel size that cannot split this launch, window, model or backend.

    ``window`` None skips the window check (``shard_columns`` repeats it on every batch).
    """
    if _check_size(size) == 1:
        return
    problems = []
    if world % size:
        problems.append(f"it must divide the {world} processes of the launch")
    if window is not None and window % size:
        problems.append(f"it must divide the window of {window} tokens (each process holds window / {size})")
    if heads % size or kv_heads % size:
        problems.append(
            f"it must divide the model's attention heads ({heads}) and key/value heads ({kv_heads}): "
            "each process attends with 1/N of both"
        )
    if backend not in SUPPORTED:
        problems.append(f"attention.backend {backend!r} cannot run under it: use one of {_SUPPORTED_TEXT}")
    if problems:
        raise RopeextError(f"{KEY} = {size}: " + "; ".join(problems))


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise RopeextError(f"{KEY} must be an integer >= 1 (1 = off), got {size!r}")
    return int(size)


def _groups(world: int, size: int, rank: int):
    """The process group of ``rank``; every process makes every group, in the same order."""
    # heavy: torch.distributed loads only when sequence parallelism is on
    import torch.distributed as dist

    if (world, size) not in _GROUPS:
        _GROUPS[(world, size)] = [dist.new_group(list(range(g * size, (g + 1) * size))) for g in range(world // size)]
    return _GROUPS[(world, size)][rank // size]


def setup(model, size: int, *, backend: str, window: int | None = None) -> SequenceParallel | None:
    """Make the sequence-parallel groups and switch ``model`` to the Ulysses-wrapped ``backend``.

    Returns None (and changes nothing) when ``size`` is 1. Needs torch.distributed initialised on
    every process; every process must call it, in the same order, with the same arguments (it
    makes the groups with ``new_group``, which every process must call for every group). ``window``
    None leaves the window check to ``shard_columns`` / ``model_inputs_sp``.
    """
    if _check_size(size) == 1:
        return None
    # heavy: torch.distributed loads only when sequence parallelism is on
    import torch.distributed as dist

    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    if not (dist.is_available() and dist.is_initialized()):
        raise RopeextError(
            f"{KEY} = {size} needs {size} or more processes started by a launcher (accelerate launch, torchrun); "
            "torch.distributed is not initialised"
        )
    world, rank = dist.get_world_size(), dist.get_rank()
    check_sequence_parallel(size, world=world, window=window, heads=heads, kv_heads=kv_heads, backend=backend)
    set_backend(model, backend)  # registers the core backends and runs their device checks
    group = _groups(world, size, rank)

    # heavy: deepspeed loads only when sequence parallelism is on
    import deepspeed.comm
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF  # (as above)
    from transformers import AttentionInterface  # (as above)
    from transformers.masking_utils import AttentionMaskInterface, flex_attention_mask, sdpa_mask  # (as above)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # (as above)

    if not deepspeed.comm.is_initialized():
        # the wrapper speaks through deepspeed.comm, which adopts the process group already set up
        deepspeed.comm.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False, verbose=False)
    core = ALL_ATTENTION_FUNCTIONS[_CORE[backend]]
    wrappers = {}  # micro-batch size -> its wrapper (each checks the shapes against the size it was built for)

    def attention(module, query, key, value, attention_mask, **kwargs):
        batch = query.shape[0]
        if batch not in wrappers:
            wrappers[batch] = UlyssesSPAttentionHF(
                attn=core,
                batch_size=batch,
                attn_head_count=heads,
                attn_head_size=query.shape[-1],
                kv_head_count=kv_heads,
                num_hidden_layers=cfg.num_hidden_layers,
                process_group=group,
                seq_length_is_variable=True,
            )
        return wrappers[batch](module, query, key, value, attention_mask, **kwargs)

    name = implementation(backend)
    AttentionInterface.register(name, attention)
    # transformers hands the full-window mask (sdpa_mask, flex) through as given; the all-ones local
    # mask of blockwise / flash_varlen becomes no mask at all
    AttentionMaskInterface.register(name, flex_attention_mask if backend == "flex" else sdpa_mask)
    try:
        model.set_attn_implementation(name)
    except (ValueError, ImportError) as exc:
        raise RopeextError(
            f"{KEY} = {size} with attention.backend {backend!r} cannot be used with this model: {exc}"
        ) from None
    model.config.use_cache = False
    return SequenceParallel(
        size=size, rank=dist.get_rank(group), group=group, data_rank=rank // size, data_size=world // size
    )


def _columns(width: int, sp: SequenceParallel) -> slice:
    if width % sp.size:
        raise RopeextError(f"{KEY} = {sp.size} must divide the window, got a window of {width} tokens")
    per = width // sp.size
    return slice(sp.rank * per, (sp.rank + 1) * per)


def shard_columns(batch: dict, sp: SequenceParallel | None) -> dict:
    """This process's columns of every (B, W) array of ``batch`` (numpy or torch); the batch itself when off."""
    if sp is None:
        return batch
    cols = _columns(batch["input_ids"].shape[1], sp)
    return {k: v[:, cols] for k, v in batch.items()}


def model_inputs_sp(batch_full: dict, sp: SequenceParallel | None, layout: str, backend: str) -> dict:
    """Keyword arguments for ``model(**kwargs)`` on this process: the local columns of input_ids and
    position_ids, and the FULL window's plan or mask (``ropeext.attention.model_inputs`` when off).

    ``batch_full`` holds the whole window of this group's rows (input_ids, position_ids, doc_ids).
    """
    out = model_inputs(batch_full, layout, backend)
    if sp is None:
        return out
    cols = _columns(out["input_ids"].shape[1], sp)
    out["input_ids"] = out["input_ids"][:, cols]
    out["position_ids"] = out["position_ids"][:, cols]
    if backend in ("blockwise", "flash_varlen"):
        out["attention_mask"] = out["attention_mask"][:, cols]  # all ones: transformers masks nothing
    elif backend == "sdpa_mask" and out["attention_mask"] is None:
        # the causal fast path of one process would apply to the local queries only: spell it out
        # heavy: torch loads only when a model runs
        import torch

        doc_ids = torch.as_tensor(batch_full["doc_ids"], device=out["input_ids"].device)
        out["attention_mask"] = attention_mask_torch(doc_ids, layout)
    return out
