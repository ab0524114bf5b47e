"""One readable training loop for pre-training and fine-tuning.

Precision modes:
  fp32        fp32 weights, fp32 compute.
  bf16-mixed  fp32 weights, bf16 autocast for the forward pass.
  bf16        bf16 weights and activations; fp32 master weights and fp32 optimizer state
              (the model's bf16 weights are refreshed from the fp32 masters after every step).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ropeext.errors import RopeextError
from ropeext.train.data import PackedData, batch_indices


@dataclass
class TrainSettings:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | constant | linear
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float | None = 1.0
    grad_accum: int = 1
    precision: str = "bf16-mixed"
    seed: int = 0
    layout: str = "full"
    backend: str = "sdpa_mask"
    log_every: int = 10
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16", "bf16-mixed"):
            raise RopeextError(f"precision: {self.precision!r} is not one of fp32, bf16, bf16-mixed")
        if self.schedule not in ("cosine", "constant", "linear"):
            raise RopeextError(f"schedule: {self.schedule!r} is not one of cosine, constant, linear")
        if self.batch_size % self.grad_accum:
            raise RopeextError(
                f"batch_size {self.batch_size} does not divide into grad_accum {self.grad_accum} micro-batches")


def lr_at(step: int, s: TrainSettings) -> float:
    """Learning rate for ``step`` (0-based): linear warm-up, then the schedule's decay."""
    if s.warmup_steps and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    if s.schedule == "constant":
        return s.lr
    span = max(1, s.steps - s.warmup_steps)
    t = min(1.0, (step - s.warmup_steps) / span)
    floor = s.lr * s.min_lr_ratio
    if s.schedule == "linear":
        return floor + (s.lr - floor) * (1 - t)
    return floor + (s.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over labelled positions (labels are already the next token) and their count."""
    flat = labels.reshape(-1)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100, reduction="sum")
    return loss, int((flat != -100).sum())


def _autocast(precision: str, device: torch.device):
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def accumulate_gradients(model, batch: dict[str, np.ndarray], s: TrainSettings, device) -> float:
    """Forward and backward over ``s.grad_accum`` micro-batches; return the batch's mean token loss.

    Each micro-batch's summed loss is divided by the label count of the whole batch, so the
    accumulated gradient equals the full batch's whatever the split.
    """
    from ropeext.attention import model_inputs

    micro = s.batch_size // s.grad_accum
    denom = max(1, int((batch["labels"] != -100).sum()))
    total = 0.0
    for a in range(s.grad_accum):
        part = {k: torch.from_numpy(v[a * micro:(a + 1) * micro]).to(device) for k, v in batch.items()}
        with _autocast(s.precision, device):
            out = model(**model_inputs(part, s.layout, s.backend))
        loss_sum, _ = causal_lm_loss(out.logits, part["labels"])
        (loss_sum / denom).backward()
        total += float(loss_sum.detach())
    return total / denom


def train(model, data: PackedData, settings: TrainSettings, *, run=None, progress: bool = True) -> dict:
    """Train ``model`` in place on packed windows; return a summary dict.

    ``run`` is a ``ropeext.tracking.StageRun`` receiving per-step metrics.
    """
    from ropeext.attention import set_backend

    s = settings
    device = next(model.parameters()).device
    torch.manual_seed(s.seed)
    set_backend(model, s.backend)
    model.config.use_cache = False
    model.train()

    params = [p for p in model.parameters() if p.requires_grad]
    if s.precision == "bf16":
        model.to(torch.bfloat16)
        master = [p.detach().float().clone().requires_grad_(True) for p in params]
    else:
        master = params
    decay = [m for m, p in zip(master, params) if p.ndim >= 2]
    no_decay = [m for m, p in zip(master, params) if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr, betas=tuple(s.betas), foreach=True)

    history: list[dict] = []
    tokens_seen = 0
    t_start = time.perf_counter()
    t_last, tok_last = t_start, 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=s.steps, desc=f"train[{s.layout}]", mininterval=5.0)
    for step in range(s.steps):
        lr = lr_at(step, s)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = batch_indices(step, s.batch_size, data.windows, s.seed)
        loss = accumulate_gradients(model, data.batch(idx), s, device)
        tokens_seen += s.batch_size * data.window
        if not math.isfinite(loss):
            raise RopeextError(f"non-finite loss ({loss}) at step {step + 1}; stopping")
        if s.precision == "bf16":
            for m, p in zip(master, params):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        grad_norm = torch.nn.utils.clip_grad_norm_(master, s.max_grad_norm or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if s.precision == "bf16":
            with torch.no_grad():
                for m, p in zip(master, params):
                    p.copy_(m)
        record = {"loss": loss, "lr": lr, "grad_norm": float(grad_norm)}
        history.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
        if (step + 1) % s.log_every == 0 or step + 1 == s.steps:
            now = time.perf_counter()
            tps = (tokens_seen - tok_last) / max(1e-9, now - t_last)
            t_last, tok_last = now, tokens_seen
            if run is not None:
                metrics = {"train/loss": loss, "train/lr": lr, "train/grad_norm": float(grad_norm),
                           "train/tokens_per_s": tps}
                if device.type == "cuda":
                    metrics["train/peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
                run.log_metrics(metrics, step=step + 1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t_start
    model.eval()
    if s.precision == "bf16":
        model.to(torch.float32)
    tail = [h["loss"] for h in history[-max(1, len(history) // 10):]]
    return {
        "settings": asdict(s),
        "steps": s.steps,
        "tokens": tokens_seen,
        "seconds": elapsed,
        "tokens_per_s": tokens_seen / max(1e-9, elapsed),
        "final_loss": float(np.mean(tail)),
        "first_loss": history[0]["loss"] if history else None,
        "numeric_path": numeric_path(s, device),
    }


def numeric_path(s: TrainSettings, device: torch.device) -> dict:
    """What arithmetic RoPE and attention actually ran in, for the run record."""
    if s.precision == "fp32":
        rope = attn = "fp32"
    elif s.precision == "bf16-mixed":
        rope = "cos/sin computed in fp32 (autocast disabled in the rotary embedding); q/k projected in bf16"
        attn = "bf16 under autocast"
    else:
        rope = "bf16 cos/sin cast to bf16 weights' dtype"
        attn = "bf16"
    return {"device": device.type, "precision": s.precision, "rope": rope, "attention": attn,
            "attention_backend": s.backend, "layout": s.layout}
