"""The fixed validation windows of a fine-tune's held-out loss.

The windows are the ``full`` layout's packing (``ropeext.data.packing``: the anchor at column 0, rotary
positions 0..W-1, plain causal attention, the labels of the packing rules) of the first documents of a
held-out split, read in file order until they fill ``count`` windows of the training width. They
depend on the split, the width, the count, the anchor, the seed and the label rule only, so every
variant of a run (each RoPE method and packing layout) is scored on the same tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ropeext.data.packing import MIN_DOC_TOKENS, pack_flat
from ropeext.data.tokens import iter_tokens
from ropeext.errors import RopeextError
from ropeext.train.data import PackedData

LAYOUT = "full"  # plain causal attention over the whole window, positions 0..W-1


def documents_for(path: str | Path, tokens_needed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first documents of a tokens file, in file order, until those the packer keeps (of at least
    ``MIN_DOC_TOKENS`` tokens) hold ``tokens_needed`` tokens (or the file ends): flat int64 ids and
    document offsets."""
    parts, lengths, have = [], [], 0
    for batch in iter_tokens(path, ["input_ids"]):
        ids = batch.column("input_ids")
        if ids.null_count:
            raise RopeextError(f"{path}: `input_ids` has {ids.null_count} null rows")
        offs = np.asarray(ids.offsets, dtype=np.int64)
        values = np.asarray(ids.values.to_numpy(zero_copy_only=False)[offs[0] : offs[-1]], dtype=np.int64)
        sizes = np.diff(offs)
        kept = np.where(sizes >= MIN_DOC_TOKENS, sizes, 0)
        enough = np.flatnonzero(have + np.cumsum(kept) >= tokens_needed)
        take = int(enough[0]) + 1 if len(enough) else len(sizes)
        parts.append(values[: int(offs[take] - offs[0])])
        lengths.append(sizes[:take])
        have += int(kept[:take].sum())
        if have >= tokens_needed:
            break
    sizes = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)), offsets


def heldout_windows(
    path: str | Path, *, window: int, count: int, anchor_id: int, seed: int, mask_boundary_labels: bool = True
) -> PackedData:
    """Up to ``count`` validation windows of ``window`` tokens from the tokens file ``path`` (fewer when
    the split holds fewer; an error when it cannot fill one)."""
    if count < 1:
        raise RopeextError(f"held-out windows: expected a count >= 1, got {count}")
    tokens, offsets = documents_for(path, count * (window - 1))
    columns, _ = pack_flat(tokens, offsets, window, LAYOUT, anchor_id, seed, mask_boundary_labels=mask_boundary_labels)
    n = len(columns["input_ids"])
    if n == 0:
        raise RopeextError(
            f"{path}: the held-out documents hold {int(np.diff(offsets).sum())} tokens, too few for one "
            f"validation window of {window} tokens; set finetune.val_windows: 0 to fine-tune without a held-out loss"
        )
    return PackedData({k: np.ascontiguousarray(v[:count], dtype=np.int32) for k, v in columns.items()})


def padded_rows(n: int, groups: int, per_forward: int) -> np.ndarray:
    """Row indices of ``n`` windows laid out so that each of ``groups`` data-parallel groups runs the same
    number of forward passes of ``per_forward`` rows: group g takes the g-th contiguous block; -1 marks
    a padding row (a window whose labels are all ignored), so every process joins every collective."""
    per_group = -(-n // (groups * per_forward)) * per_forward
    rows = np.full(groups * per_group, -1, dtype=np.int64)
    rows[:n] = np.arange(n)
    return rows.reshape(groups, per_group)


def take_rows(data: PackedData, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The windows ``rows`` of ``data`` as int64 arrays; a row -1 repeats window 0 with every label ignored."""
    batch = data.batch(np.maximum(rows, 0))
    batch["labels"][rows < 0] = -100
    return batch
