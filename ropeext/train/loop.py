"""One readable training loop for pre-training and fine-tuning, on one CPU process or many GPUs (``accelerate``).

Precision: ``fp32``; ``bf16-mixed`` (fp32 weights, bf16 autocast); ``bf16`` (bf16 weights refreshed from fp32
masters after every step, as DeepSpeed's bf16 mode does; under FSDP / DeepSpeed the engine keeps the masters).
Every process knows the whole global batch of a step and takes its own rows (``shard_rows``); each
micro-batch's summed token loss is divided by the *global* batch's label count, so gradients equal the
single-process full batch's whatever the split. ``train`` resumes from the newest complete checkpoint.
A non-finite loss, gradient or weight stops the run at once; a finite divergence (``divergence``) stops it
after ``divergence_patience`` steps in a row.

Given held-out windows (``val``, ``ropeext.train.heldout``), ``train`` scores them before the first step, every
``eval_every`` steps and after the last (``heldout_loss``): the full layout's plain causal attention, eval mode,
no gradients, the training's precision, every process on its share of the windows. The random generators are
restored around it, so the training trajectory is the same with or without it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm import tqdm

from ropeext.attention import model_inputs, set_backend
from ropeext.config import training_defaults
from ropeext.errors import RopeextError
from ropeext.train import checkpoint as ckpt
from ropeext.train import distributed as dist_
from ropeext.train.data import PackedData, batch_indices
from ropeext.train.divergence import DivergenceGuard
from ropeext.train.heldout import LAYOUT as HELDOUT_LAYOUT
from ropeext.train.heldout import padded_rows, take_rows
from ropeext.train.loss import ChunkedLossModule, loss_state_dict
from ropeext.train.observe import observe_numeric_path
from ropeext.train.sequence_parallel import model_inputs_sp, shard_columns
from ropeext.train.sequence_parallel import setup as setup_sequence_parallel

# Settings that may change between a run and its resumption without changing its result.
_NOT_RESUME_RELEVANT = (
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "system_metrics",
    "divergence_factor",  # these two decide only whether a run stops, never what it computes
    "divergence_patience",
    "eval_every",  # the held-out loss only watches the run (it restores the random generators)
    "extra",
)
_DEFAULTS = training_defaults()  # the schema's defaults (config ``$defs/training``)


@dataclass
class TrainSettings:
    """One run's optimisation settings, trusted as they come (the schema and ``ropeext.checks`` check them);
    keys whose default differs between ``pretrain`` and ``finetune`` are off here."""

    steps: int
    batch_size: int  # global batch (sequences per optimizer step, over all processes and micro-batches)
    lr: float
    warmup_steps: int = 0
    schedule: str = _DEFAULTS["schedule"]  # cosine | constant | linear
    min_lr_ratio: float = _DEFAULTS["min_lr_ratio"]
    weight_decay: float = 0.0
    betas: tuple[float, float] = tuple(_DEFAULTS["betas"])
    max_grad_norm: float | None = _DEFAULTS["max_grad_norm"]
    grad_accum: int = _DEFAULTS["grad_accum"]
    precision: str = _DEFAULTS["precision"]
    seed: int = 0
    layout: str = "full"
    backend: str = "sdpa_mask"
    gradient_checkpointing: bool = _DEFAULTS["gradient_checkpointing"]
    sequence_parallel: int = 1  # processes sharing one window (DeepSpeed Ulysses); finetune only
    loss_chunk_tokens: int | None = _DEFAULTS["loss_chunk_tokens"]  # None: full-sequence logits
    log_every: int = _DEFAULTS["log_every"]
    checkpoint_every: int = 0  # 0: no checkpoints
    keep_checkpoints: int = _DEFAULTS["keep_checkpoints"]
    system_metrics: bool = _DEFAULTS["system_metrics"]  # acts only with an active MLflow run
    divergence_factor: float | None = _DEFAULTS["divergence_factor"]  # None: no jump rule (ropeext.train.divergence)
    divergence_patience: int = _DEFAULTS["divergence_patience"]  # 0: a finite divergence never stops the run
    eval_every: int = 0  # steps between held-out losses (with ``val`` given); 0: at step 0 and the end only
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the run that wrote the checkpoint."""
        d = {k: v for k, v in asdict(self).items() if k not in _NOT_RESUME_RELEVANT}
        return json.loads(json.dumps(d))


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
        logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100, reduction="sum"
    )
    return loss, int((flat != -100).sum())


def shard_rows(batch: dict[str, np.ndarray], rank: int, world: int) -> dict[str, np.ndarray]:
    """This process's share of the global batch: a contiguous block of rows (sequence parallelism would slice
    columns here)."""
    n = len(batch["input_ids"])
    if n % world:
        raise RopeextError(f"global batch of {n} windows does not divide over {world} processes")
    per = n // world
    return {k: v[rank * per : (rank + 1) * per] for k, v in batch.items()}


def _autocast(precision: str, device: torch.device, engine: bool = False):
    if precision == "bf16-mixed" and not engine:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def accumulate_gradients(
    model,
    batch: dict[str, np.ndarray],
    s: TrainSettings,
    device,
    *,
    rank: int = 0,
    world: int = 1,
    accelerator=None,
    engine: bool = False,
    sp=None,
) -> float:
    """Forward and backward over this process's ``s.grad_accum`` micro-batches of the global ``batch``.

    Returns this process's summed token loss over the global batch's label count; gradients are
    synchronised on the last micro-batch only. Under sequence parallelism (``sp``) the rows are split
    over the data-parallel groups and each process of a group takes its block of columns.
    """
    denom = max(1, int((batch["labels"] != -100).sum()))
    mine = shard_rows(batch, sp.data_rank, sp.data_size) if sp is not None else shard_rows(batch, rank, world)
    micro = len(mine["input_ids"]) // s.grad_accum
    loss_model = loss_module(model, s.loss_chunk_tokens)
    total = 0.0
    for a in range(s.grad_accum):
        part = {k: torch.from_numpy(v[a * micro : (a + 1) * micro]).to(device) for k, v in mine.items()}
        sync = a == s.grad_accum - 1
        no_sync = (
            accelerator.no_sync(model)
            if (accelerator is not None and world > 1 and not sync and not engine)
            else contextlib.nullcontext()
        )
        with no_sync:
            if sp is None:
                inputs, labels = model_inputs(part, s.layout, s.backend), part["labels"]
            else:  # my columns of the group's windows; attention sees the whole window through the plan
                inputs, labels = model_inputs_sp(part, sp, s.layout, s.backend), shard_columns(part, sp)["labels"]
            with _autocast(s.precision, device, engine):
                if loss_model is not None:  # chunked: no full-sequence logits
                    loss_sum = loss_model(labels, **inputs)
                else:
                    out = model(**inputs)
            if loss_model is None:
                loss_sum, _ = causal_lm_loss(out.logits, labels)
            scaled = loss_sum * (world / denom)  # DDP averages gradients over processes; undo it
            if accelerator is not None:
                accelerator.backward(scaled)
            else:
                scaled.backward()
        total += float(loss_sum.detach())
    return total / denom


def loss_module(model, chunk_tokens: int | None):
    """What the forward pass calls as ``loss_module(labels, **inputs)`` for the chunked loss: ``model``
    itself when it already is a ``ChunkedLossModule`` (under DDP, FSDP or DeepSpeed it must be, so that
    the forward runs through their wrapper), else one around it; None for the full-logits loss."""
    if chunk_tokens is None:
        return None
    inner = getattr(model, "module", model)  # DDP and DeepSpeed keep the module they wrap here
    if isinstance(model, ChunkedLossModule) or isinstance(inner, ChunkedLossModule):
        return model
    if inner is not model:
        raise RopeextError(
            f"the chunked loss (loss_chunk_tokens) needs the model wrapped in ChunkedLossModule "
            f"before {type(model).__name__} wraps it (``train`` does this)"
        )
    return ChunkedLossModule(model, chunk_tokens)


def heldout_loss(
    model,
    val: PackedData,
    s: TrainSettings,
    device,
    *,
    rank: int = 0,
    world: int = 1,
    accelerator=None,
    engine: bool = False,
    sp=None,
    per_forward: int = 1,
) -> float:
    """Mean next-token cross-entropy over the labelled positions of the windows ``val``: the full layout
    (plain causal attention, the windows' positions), eval mode, no gradients, ``s.precision``'s autocast.

    Every process runs the same number of forward passes of ``per_forward`` windows (FSDP and DeepSpeed
    gather weights inside them), each data-parallel group on its block of the windows (padding rows carry
    no labels), and the summed losses and label counts are added over the processes. The model's
    training mode is restored afterwards.
    """
    groups, group = (sp.data_size, sp.data_rank) if sp is not None else (world, rank)
    rows = padded_rows(val.windows, groups, per_forward)[group]
    loss_model = loss_module(model, s.loss_chunk_tokens)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for a in range(0, len(rows), per_forward):
                part = {k: torch.from_numpy(v).to(device) for k, v in take_rows(val, rows[a : a + per_forward]).items()}
                if sp is None:
                    inputs, labels = model_inputs(part, HELDOUT_LAYOUT, s.backend), part["labels"]
                else:
                    inputs = model_inputs_sp(part, sp, HELDOUT_LAYOUT, s.backend)
                    labels = shard_columns(part, sp)["labels"]
                with _autocast(s.precision, device, engine):
                    if loss_model is not None:
                        loss_sum = loss_model(labels, **inputs)
                    else:
                        loss_sum, _ = causal_lm_loss(model(**inputs).logits, labels)
                total += float(loss_sum)
                count += int((labels != -100).sum())
    finally:
        model.train(was_training)
    total = _global_sum(total, accelerator, device, world)
    count = _global_sum(float(count), accelerator, device, world)
    if count == 0:
        raise RopeextError("the held-out windows have no labelled position")
    return total / count


def make_accelerator(precision: str):
    """An ``accelerate.Accelerator`` for this process (one CPU process when not launched)."""
    mp = "bf16" if _engine_env() and precision != "fp32" else "no"
    try:
        return Accelerator(mixed_precision=mp)
    except (ValueError, RuntimeError) as exc:
        raise RopeextError(
            f"accelerate cannot set up this run ({exc}); check the --config_file of accelerate launch"
        ) from None


def _engine_env() -> bool:
    return any(
        os.environ.get(k, "false").lower() in ("true", "1") for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )


def _peak_memory_gb(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"train.peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30}
    return {"train.peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _system_monitor(run, enabled: bool):
    if not (enabled and run is not None and getattr(run, "active", False)):
        return None
    try:
        # lazy: mlflow is heavy and only an active run with system metrics needs it
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run.run_id, sampling_interval=5, samples_before_logging=1)
        monitor.start()
        return monitor
    except Exception:  # noqa: BLE001 - system metrics are a convenience, never a reason to fail
        return None


@dataclass
class _Setup:
    """What the set-up phase builds and the later phases use."""

    accelerator: object
    model: torch.nn.Module  # as accelerate prepared it (a DDP/FSDP wrapper, or the model itself)
    raw_model: torch.nn.Module  # the model underneath
    opt: torch.optim.Optimizer
    params: list  # the model's trainable parameters
    master: list  # what the optimizer updates: fp32 copies of ``params`` (own masters) or ``params``
    own_masters: bool  # precision bf16 without FSDP/DeepSpeed: we keep the fp32 masters
    engine: bool  # FSDP or DeepSpeed holds the optimizer state and the precision
    strategy: str  # single | ddp | fsdp (ropeext's FSDP2) | deepspeed (accelerate's)
    sp: object  # SequenceParallel, or None: one window per process
    device: torch.device
    world: int
    rank: int
    is_main: bool

    @property
    def masters(self) -> list | None:
        return self.master if self.own_masters else None


@dataclass
class _Progress:
    """Where the run stands: the next step, tokens seen, per-step history, the held-out losses so far
    ([step, loss] pairs) and the step it resumed at."""

    start: int = 0
    tokens: int = 0
    history: list = field(default_factory=list)
    val_history: list = field(default_factory=list)
    resumed_from: int | None = None


def train(
    model,
    data: PackedData,
    settings: TrainSettings,
    *,
    run=None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    accelerator=None,
    on_step=None,
    gather_state: bool = False,
    val: PackedData | None = None,
) -> dict:
    """Train ``model`` in place on packed windows; return a summary dict (the model ends in fp32, eval mode).

    ``on_step(steps_done)`` runs after each optimizer step; ``gather_state`` puts the full state dict
    gathered under FSDP / DeepSpeed in ``summary["state_dict"]`` (all processes must call ``train``);
    ``val``: held-out windows scored at step 0, every ``settings.eval_every`` steps and at the end.
    """
    s = settings
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    # set-up: processes and device, seeds, the model in training mode, fp32 masters, the optimizer
    st = _set_up(model, s, accelerator, window=data.window)

    # resume: continue from the newest complete checkpoint, which must come from the same settings
    pos = _resume(st, s, ckdir) if ckdir is not None and resume else _Progress()
    # a finite divergence: the same losses on every process, the same decision (rebuilt from a resumed history)
    vocab = getattr(getattr(st.raw_model, "config", None), "vocab_size", None)
    guard = DivergenceGuard(vocab, s.divergence_factor, s.divergence_patience)
    for i, h in enumerate(pos.history):
        guard.update(i + 1, h["loss"])

    # steps: one optimizer step per global batch, then logging, checkpoint and callback
    observed: dict = {}
    bar = None
    if progress and st.is_main:
        bar = tqdm(total=s.steps, initial=pos.start, desc=f"train[{s.layout}]", mininterval=2.0)
    monitor = _system_monitor(run, s.system_metrics and st.is_main)
    t_start = time.perf_counter()
    tokens_at_start = pos.tokens
    step_tokens = s.batch_size * data.window
    heldout_seconds = 0.0
    try:
        if val is not None and pos.start == 0:
            heldout_seconds += _heldout(st, s, val, 0, pos, run)
        for step in range(pos.start, s.steps):
            t0 = time.perf_counter()
            loss, lr, grad_norm = _step(st, data, s, step, observed if step == pos.start else None, ckdir)
            if guard.update(step + 1, loss):
                # the checkpoint of step k holds the weights whose loss step k + 1 measured
                raise RopeextError(guard.message(lr) + _kept(ckdir, before=guard.first_bad - 1))
            pos.tokens += step_tokens
            pos.history.append({"loss": loss, "lr": lr, "grad_norm": grad_norm})
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
            if run is not None and st.is_main and (done % s.log_every == 0 or done == s.steps):
                seconds = time.perf_counter() - t0
                run.log_metrics(
                    {
                        "train.loss": loss,
                        "train.lr": lr,
                        "train.grad_norm": grad_norm,
                        "train.tokens_per_s": step_tokens / max(1e-9, seconds),
                        **_peak_memory_gb(st.device),
                    },
                    step=done,
                )
            if val is not None and (done == s.steps or (s.eval_every and done % s.eval_every == 0)):
                heldout_seconds += _heldout(st, s, val, done, pos, run)
            due = ckdir is not None and s.checkpoint_every and done % s.checkpoint_every == 0 and done < s.steps
            if due and not guard.streak:  # no checkpoint while the loss is diverged: it would push out good ones
                state = {"tokens": pos.tokens, "history": pos.history, "val_history": pos.val_history}
                _save_checkpoint(st, ckdir, done, s, state)
            if on_step is not None:
                on_step(done)
    finally:
        if bar is not None:
            bar.close()
        if monitor is not None:
            monitor.finish()
    elapsed = time.perf_counter() - t_start - heldout_seconds  # the training steps' time

    # finish: eval mode, fp32 weights from the masters, the gathered state under FSDP / DeepSpeed
    full_state = _finish(st, s, gather_state)
    shares = _window_shares(st, s, data, pos.start)
    tail = [h["loss"] for h in pos.history[-max(1, len(pos.history) // 10) :]]
    trained = pos.tokens - tokens_at_start
    return {
        "settings": asdict(s),
        "steps": s.steps,
        "tokens": pos.tokens,
        "seconds": elapsed,
        "tokens_per_s": trained / max(1e-9, elapsed),
        "final_loss": float(np.mean(tail)) if tail else None,
        "first_loss": pos.history[0]["loss"] if pos.history else None,
        "resumed_from_step": pos.resumed_from,
        "loss_history": [h["loss"] for h in pos.history],
        "first_step_windows": shares,  # the windows each process trained on in this run's first step
        "val_windows": val.windows if val is not None else 0,
        "val_loss_history": [list(p) for p in pos.val_history],  # [optimizer step, held-out loss]
        "first_val_loss": pos.val_history[0][1] if pos.val_history and pos.val_history[0][0] == 0 else None,
        "final_val_loss": pos.val_history[-1][1] if pos.val_history else None,
        "heldout_seconds": heldout_seconds,  # this run's held-out evaluations (not in ``seconds``)
        "processes": st.world,
        "sequence_parallel": s.sequence_parallel,
        "strategy": st.strategy,
        "distributed": str(st.accelerator.distributed_type).split(".")[-1],
        "numeric_path": numeric_path(s, st.device, observed, engine=st.engine),
        **({"state_dict": full_state} if full_state is not None else {}),
    }


def _set_up(model, s: TrainSettings, accelerator, *, window: int | None = None) -> _Setup:
    accelerator = accelerator or make_accelerator(s.precision)
    world, rank, is_main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    # what the launch asked for must be what joined: stop before the first step otherwise
    launch = dist_.check_launch(os.environ, world=world, distributed_type=accelerator.distributed_type.value)
    strategy = launch.strategy if world > 1 or launch.strategy == "deepspeed" else "single"  # 1 process: no sharding
    engine = strategy in ("fsdp", "deepspeed")
    # the launch, not the config, sets the processes and the engine when accelerate launch is given them itself
    groups = world // s.sequence_parallel if world % s.sequence_parallel == 0 else world  # data-parallel
    if world > 1 and s.batch_size % (s.grad_accum * groups):
        raise RopeextError(
            f"batch_size {s.batch_size} does not divide into grad_accum {s.grad_accum} micro-batches "
            f"on each of the launch's {groups} data-parallel groups ({world} processes, sequence_parallel "
            f"{s.sequence_parallel})"
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED and s.grad_accum != 1:
        raise RopeextError(
            "grad_accum must be 1 under DeepSpeed (it steps its optimizer inside backward); raise the "
            "per-process batch or use config/accelerate/fsdp.yaml"
        )
    device = accelerator.device
    random.seed(s.seed)
    np.random.seed(s.seed % 2**32)
    torch.manual_seed(s.seed)

    model.to(device)
    set_backend(model, s.backend, training=True)
    # sequence parallelism: the model's attention goes through DeepSpeed Ulysses (None when 1)
    sp = setup_sequence_parallel(model, s.sequence_parallel, backend=s.backend, window=window)
    model.config.use_cache = False
    model.train()
    if s.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    # the transformers model itself, whatever wraps it below (ChunkedLossModule, DDP, DeepSpeed); FSDP2
    # shards it in place. Kept here rather than taken back with ``accelerator.unwrap_model``, which
    # imports DeepSpeed (and with it MLflow) wherever the package is installed: seconds per process.
    raw = model
    own_masters = s.precision == "bf16" and not engine
    # the chunked loss runs inside the forward of the module that DDP, FSDP or DeepSpeed wraps (DDP's
    # gradient hooks, FSDP's and DeepSpeed's gathering of sharded weights, the output head's included)
    if s.loss_chunk_tokens is not None:
        model = loss_module(model, s.loss_chunk_tokens)
    if strategy == "fsdp":  # shard before the optimizer sees the parameters
        model = dist_.apply_fsdp(model, launch, precision=s.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    if own_masters:
        master = [p.detach().float().clone().requires_grad_(True) for p in params]
        to_dtype_keeping_rope(model, torch.bfloat16)
    else:
        master = params
    decay = [m for m, p in zip(master, params) if p.ndim >= 2]
    no_decay = [m for m, p in zip(master, params) if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr,
        betas=tuple(s.betas),
        foreach=True,
    )
    if strategy == "deepspeed":
        model, opt = accelerator.prepare(model, opt)
    elif strategy != "fsdp":
        model = accelerator.prepare(model)
    return _Setup(
        accelerator=accelerator,
        model=model,
        raw_model=raw,
        opt=opt,
        params=params,
        master=master,
        own_masters=own_masters,
        engine=engine,
        strategy=strategy,
        sp=sp,
        device=device,
        world=world,
        rank=rank,
        is_main=is_main,
    )


def _resume(st: _Setup, s: TrainSettings, ckdir: Path) -> _Progress:
    if st.is_main:
        ckpt.clear_incomplete(ckdir)
    st.accelerator.wait_for_everyone()
    found = ckpt.latest_checkpoint(ckdir)
    if found is None:
        return _Progress()
    saved, now = found.state.get("settings", {}), s.fingerprint()
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise RopeextError(
            f"checkpoint {found.path} was written with other settings ({details}); delete {ckdir} "
            "to start over, or restore the settings to resume"
        )
    _load_checkpoint(st, found)
    return _Progress(
        start=found.step,
        tokens=int(found.state["tokens"]),
        history=list(found.state["history"]),
        val_history=[list(p) for p in found.state.get("val_history", [])],
        resumed_from=found.step,
    )


def _heldout(st: _Setup, s: TrainSettings, val: PackedData, done: int, pos: _Progress, run) -> float:
    """Score the held-out windows after ``done`` optimizer steps: append [done, loss] to the history, log
    ``val.loss`` and ``val.ppl`` at step ``done``; the random generators come out as they went in.
    Returns the seconds it took."""
    t0 = time.perf_counter()
    rng = ckpt.rng_state()
    groups = st.sp.data_size if st.sp is not None else st.world
    loss = heldout_loss(
        st.model,
        val,
        s,
        st.device,
        rank=st.rank,
        world=st.world,
        accelerator=st.accelerator,
        engine=st.engine,
        sp=st.sp,
        per_forward=max(1, s.batch_size // (s.grad_accum * groups)),  # a training micro-batch
    )
    ckpt.set_rng_state(rng)
    pos.val_history.append([done, loss])
    if run is not None and st.is_main:
        run.log_metrics({"val.loss": loss, "val.ppl": math.exp(min(loss, 700.0))}, step=done)
    return time.perf_counter() - t0


def _step(
    st: _Setup, data: PackedData, s: TrainSettings, step: int, observe: dict | None, ckdir: Path | None
) -> tuple[float, float, float]:
    """One optimizer step on the global batch of ``step``; returns (loss, lr, gradient norm); ``observe`` (a
    dict) records the dtypes of this step's forward pass."""
    lr = lr_at(step, s)
    for g in st.opt.param_groups:
        g["lr"] = lr
    batch = data.batch(batch_indices(step, s.batch_size, data.windows, s.seed))
    watch = observe_numeric_path(st.raw_model, observe) if observe is not None else contextlib.nullcontext()
    with watch:
        local = accumulate_gradients(
            st.model,
            batch,
            s,
            st.device,
            rank=st.rank,
            world=st.world,
            accelerator=st.accelerator,
            engine=st.engine,
            sp=st.sp,
        )
    loss = _global_sum(local, st.accelerator, st.device, st.world)
    if not math.isfinite(loss):
        raise RopeextError(f"non-finite loss ({loss}) at step {step + 1}; stopping at lr {lr:.3g}" + _kept(ckdir))
    if st.own_masters:
        for m, p in zip(st.master, st.params):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None
    max_norm = s.max_grad_norm if s.max_grad_norm is not None else float("inf")
    if st.strategy == "fsdp":
        norm = torch.nn.utils.clip_grad_norm_(st.params, max_norm)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    elif st.engine:
        norm = st.accelerator.clip_grad_norm_(st.model.parameters(), max_norm)
        if norm is None:  # DeepSpeed clips inside its step and reports the norm itself
            norm = getattr(st.model, "get_global_grad_norm", lambda: 0.0)() or 0.0
        grad_norm = float(norm)
    else:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(st.master, max_norm))
    if not math.isfinite(grad_norm):
        raise RopeextError(
            f"non-finite gradient norm ({grad_norm}) at step {step + 1}; stopping at lr {lr:.3g}" + _kept(ckdir)
        )
    try:
        st.opt.step()
    except RuntimeError as exc:  # e.g. lr / (1 - beta1) beyond float32 in Adam's first steps
        if "overflow" not in str(exc):
            raise
        raise RopeextError(
            f"the optimizer step overflowed at step {step + 1} ({str(exc).splitlines()[0]}); "
            f"stopping at lr {lr:.3g}, lower it" + _kept(ckdir)
        ) from None
    if not _finite(st.master, st.accelerator, st.device, st.world):
        raise RopeextError(
            f"non-finite weights after the optimizer step at step {step + 1}; stopping at lr "
            f"{lr:.3g}, lower it" + _kept(ckdir)
        )
    st.opt.zero_grad(set_to_none=True)
    if st.own_masters:
        with torch.no_grad():
            for m, p in zip(st.master, st.params):
                p.copy_(m)
    return loss, lr, grad_norm


def to_dtype_keeping_rope(model, dtype) -> None:
    """``model.to(dtype)`` that leaves the rotary frequency buffers (``inv_freq`` and kin, not part of the
    state dict) in float32: cast to bf16 they would be rounded, and every rotary angle with them."""
    kept = {name: buf.detach().clone() for name, buf in model.named_buffers() if "inv_freq" in name}
    model.to(dtype)
    for name, buf in kept.items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, buf)


def _finish(st: _Setup, s: TrainSettings, gather_state: bool) -> dict | None:
    """Leave the model in eval mode in fp32 (masters copied in); the full state dict under FSDP / DeepSpeed."""
    st.model.eval()
    if s.gradient_checkpointing:
        st.raw_model.activation_checkpointing_disable()
    if st.own_masters:
        st.raw_model.to(torch.float32)
        with torch.no_grad():
            for m, p in zip(st.master, st.params):
                p.copy_(m)
    if not (st.engine and gather_state):
        return None
    if st.strategy == "fsdp":
        state = dist_.full_state_dict(st.model)
        state = state if st.is_main else None
    else:
        state = st.accelerator.get_state_dict(st.model)
    if state is not None and s.loss_chunk_tokens is not None:
        state = loss_state_dict(state)  # taken through ChunkedLossModule: the model's own keys
    if state is not None and getattr(st.raw_model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # gathered apart from the embedding it is tied to
    return state


def _window_shares(st: _Setup, s: TrainSettings, data: PackedData, step: int) -> list[list[int]]:
    """The window indices each process took from the global batch of ``step`` (gathered from every
    process, so the record shows what each one actually did)."""
    rows = np.asarray(batch_indices(min(step, max(0, s.steps - 1)), s.batch_size, data.windows, s.seed))
    share, shares_n = (st.sp.data_rank, st.sp.data_size) if st.sp is not None else (st.rank, st.world)
    per = len(rows) // shares_n
    mine = [int(i) for i in rows[share * per : (share + 1) * per]]
    if st.world == 1:
        return [mine]
    shares = [None] * st.world
    torch.distributed.all_gather_object(shares, mine)
    return shares


def _kept(ckdir: Path | None, before: int | None = None) -> str:
    """Names the newest checkpoint (of a step below ``before``, where later ones hold diverged weights)."""
    if ckdir is None:
        return ""
    found = ckpt.list_checkpoints(ckdir)
    good = [f for f in found if before is None or f.step < before]
    newer = [f.path.name for f in found if before is not None and f.step >= before]
    verb = "holds" if len(newer) == 1 else "hold"
    after = f"; {', '.join(newer)} {verb} weights from after the divergence began" if newer else ""
    if good:
        return f" (last good checkpoint kept: {good[-1].path}{after})"
    return f" (no good checkpoint kept{after})" if newer else " (no checkpoint written yet)"


def _finite(tensors: list, accelerator, device, world: int) -> bool:
    """Whether every value of ``tensors`` (this process's share) is finite, on every process: one
    largest-magnitude reduction per tensor and a single device sync."""
    local = [torch.linalg.vector_norm(_local(t).detach(), ord=float("inf")) for t in tensors if _local(t).numel()]
    bad = 0.0 if not local else float((~torch.isfinite(torch.stack([x.float() for x in local]))).sum())
    return _global_sum(bad, accelerator, device, world) == 0


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of an FSDP2 parameter (a DTensor), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _global_sum(value: float, accelerator, device, world: int) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    return float(accelerator.reduce(t, reduction="sum").item())


def _save_checkpoint(st: _Setup, ckdir: Path, step: int, s: TrainSettings, state: dict) -> None:
    accelerator, engine = st.accelerator, st.engine
    is_main = accelerator.is_main_process
    tmp = ckpt.begin(ckdir, step, is_main=is_main)
    accelerator.wait_for_everyone()
    if st.strategy == "fsdp":
        dist_.save_sharded(st.model, st.opt, tmp / "engine")
    elif engine:
        accelerator.save_state(str(tmp / "engine"), safe_serialization=False)
    ckpt.write_rank_files(tmp, accelerator.process_index)
    if is_main:
        ckpt.write_main_files(
            tmp,
            model_state=None if engine else st.raw_model.state_dict(),
            optimizer_state=None if engine else st.opt.state_dict(),
            masters=st.masters,
            state={"step": step, "settings": s.fingerprint(), "processes": accelerator.num_processes, **state},
        )
    accelerator.wait_for_everyone()
    if is_main:
        ckpt.finish(tmp, step, s.keep_checkpoints)
    accelerator.wait_for_everyone()


def _load_checkpoint(st: _Setup, found) -> None:
    masters = st.masters
    if st.strategy == "fsdp":
        dist_.load_sharded(st.model, st.opt, found.path / "engine")
    elif st.engine:
        st.accelerator.load_state(str(found.path / "engine"))
    else:
        model_state = ckpt.load(found.path, "model.pt")
        opt_state = ckpt.load(found.path, "optimizer.pt")
        if model_state is None or opt_state is None:
            raise RopeextError(
                f"checkpoint {found.path} lacks model.pt or optimizer.pt; delete it to resume from an older one"
            )
        st.raw_model.load_state_dict(model_state)
        st.opt.load_state_dict(opt_state)
        if masters is not None:
            saved = ckpt.load(found.path, "masters.pt")
            if saved is None or len(saved) != len(masters):
                raise RopeextError(f"checkpoint {found.path} lacks the fp32 master weights of precision bf16")
            with torch.no_grad():
                for m, v in zip(masters, saved):
                    m.copy_(v)
    rng = ckpt.load_rng(found.path, st.rank)
    if rng is not None:
        ckpt.set_rng_state(rng)


def numeric_path(s: TrainSettings, device: torch.device, observed: dict | None = None, *, engine: bool = False) -> dict:
    """What arithmetic RoPE and attention ran in: the settings plus the dtypes observed in one forward."""
    out = {
        "device": device.type,
        "precision": s.precision,
        "attention_backend": s.backend,
        "layout": s.layout,
        "weights": "bf16 (fp32 masters)" if s.precision == "bf16" else "fp32",
        "autocast": "bf16" if s.precision == "bf16-mixed" or (engine and s.precision != "fp32") else "none",
        "engine_mixed_precision": engine and s.precision != "fp32",
    }
    if observed:
        out["observed"] = dict(observed)
    return out
