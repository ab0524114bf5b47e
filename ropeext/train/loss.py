"""Causal-LM loss over packed batches without full-sequence logits.

A (batch, W, vocab) fp32 logits tensor is W x vocab x 4 bytes per row: 8 GB at W = 64k and a 32k
vocabulary, and its gradient as much again. Here the model's backbone gives the hidden states,
and the output head and the cross-entropy run over chunks of ``chunk_tokens`` positions; each
chunk is checkpointed, so its logits are freed after its loss is taken and recomputed in the
backward pass. Neither pass holds more than one chunk of logits (and its gradient).

The result is the same as ``cross_entropy(model(**inputs).logits.float(), labels,
ignore_index=-100, reduction="sum")`` (half-precision logits are widened to fp32, fp64 stays fp64):
the summed token loss over labelled positions, labels already shifted (``labels[t]`` is the token
after ``t``, -100 ignored) — and the same gradients, tied embeddings included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from ropeext.errors import RopeextError

IGNORE_INDEX = -100
_UNSUPPORTED_SCALING = ("logit_scale", "logits_scaling", "output_multiplier_scale")


def _logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None
) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _chunk_loss(hidden, weight, bias, labels, softcap):
    logits = _logits(hidden, weight, bias, softcap)
    if logits.dtype in (torch.float16, torch.bfloat16):  # the loss in at least fp32, as the training loop takes it
        logits = logits.float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def head_loss(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    labels: torch.Tensor,
    *,
    chunk_tokens: int,
    softcap: float | None = None,
    checkpoint: bool = True,
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of ``head(hidden)`` against ``labels`` over chunks of positions, and the label count.

    ``hidden`` is (..., H) and ``labels`` the matching (...) ids; ``head`` a linear layer (its
    weight may be tied to the input embeddings).
    """
    if chunk_tokens < 1:
        raise RopeextError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    weight = getattr(head, "weight", None)
    if weight is None:
        raise RopeextError(f"the output head {type(head).__name__} has no weight; chunked loss needs a linear head")
    bias = getattr(head, "bias", None)
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1).to(h.device)
    if y.shape[0] != h.shape[0]:
        raise RopeextError(f"labels {tuple(labels.shape)} do not match hidden states {tuple(hidden.shape[:-1])}")
    recompute = checkpoint and torch.is_grad_enabled()
    total = None
    for start in range(0, h.shape[0], chunk_tokens):
        args = (h[start : start + chunk_tokens], weight, bias, y[start : start + chunk_tokens], softcap)
        part = (
            torch.utils.checkpoint.checkpoint(_chunk_loss, *args, use_reentrant=False)
            if recompute
            else _chunk_loss(*args)
        )
        total = part if total is None else total + part
    if total is None:  # no positions at all
        total = h.sum() * 0.0
    return total, int((y != IGNORE_INDEX).sum())


def _backbone(model):
    backbone = getattr(model, "model", None)
    if backbone is None and hasattr(model, "get_decoder"):
        backbone = model.get_decoder()
    if backbone is None:
        raise RopeextError(f"{type(model).__name__}: no backbone (`model.model`) to run without the output head")
    return backbone


def chunked_causal_lm_loss(
    model, inputs: dict, labels: torch.Tensor, *, chunk_tokens: int, checkpoint: bool = True
) -> tuple[torch.Tensor, int]:
    """(summed token loss, label count) of a causal LM on ``inputs`` (``model(**inputs)`` keyword
    arguments, e.g. from ``ropeext.attention.model_inputs``) without full-sequence logits."""
    config = getattr(model, "config", None)
    scaled = [k for k in _UNSUPPORTED_SCALING if getattr(config, k, None) not in (None, 1, 1.0)]
    if scaled:
        raise RopeextError(
            f"{type(model).__name__}: logits scaled by config.{scaled[0]}; the chunked loss "
            "supports plain and soft-capped output heads only"
        )
    head = model.get_output_embeddings()
    if head is None:
        raise RopeextError(f"{type(model).__name__}: no output head (get_output_embeddings() is None)")
    out = _backbone(model)(**inputs)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return head_loss(
        hidden,
        head,
        labels,
        chunk_tokens=chunk_tokens,
        softcap=getattr(config, "final_logit_softcapping", None),
        checkpoint=checkpoint,
    )


class ChunkedLossModule(torch.nn.Module):
    """``forward(labels, **inputs)`` -> summed token loss: the chunked loss inside a module's forward,
    for wrappers (DDP, FSDP, DeepSpeed) that synchronise gradients only for what runs through their
    forward, and that gather sharded weights (the output head's among them) only during it.

    The language model is ``lm``; ``config``, ``_no_split_modules`` and ``tie_weights`` are the
    model's, for the engines that read them (DeepSpeed's bucket sizes, FSDP's layer wrapping, the
    weight tying after FSDP loads a state dict)."""

    def __init__(self, model, chunk_tokens: int):
        super().__init__()
        self.lm = model
        self.chunk_tokens = chunk_tokens
        self.config = getattr(model, "config", None)
        self._no_split_modules = getattr(model, "_no_split_modules", None)

    def tie_weights(self, *args, **kwargs):
        if hasattr(self.lm, "tie_weights"):
            return self.lm.tie_weights(*args, **kwargs)
        return None

    def forward(self, labels: torch.Tensor, **inputs) -> torch.Tensor:
        loss, _ = chunked_causal_lm_loss(self.lm, inputs, labels, chunk_tokens=self.chunk_tokens)
        return loss


def loss_state_dict(state: dict) -> dict:
    """A state dict taken through ``ChunkedLossModule`` with the language model's own keys (``lm.`` dropped)."""
    return {k.removeprefix("lm."): v for k, v in state.items()}
