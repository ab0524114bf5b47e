"""Where a model runs and how long a sequence it was made for: what every evaluation asks first."""

from __future__ import annotations

from ropeext.errors import RopeextError


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` (or None): cuda when available, else cpu; a named CUDA device must exist."""
    # heavy: torch loads only when a device is picked for a model
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RopeextError(f"--device {device}: CUDA is not available on this machine")
    return device


def model_window(config) -> int | None:
    """A transformers config's ``max_position_embeddings`` (None when it has none)."""
    window = getattr(config, "max_position_embeddings", None)
    return int(window) if window else None
