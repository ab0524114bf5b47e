"""What ``ropeext finetune`` and ``ropeext pretrain`` share: settings from a config section, the
MLflow run around ``train``, the atomic final save and the checkpoint folder beside the output.

Checkpoints of a run writing OUTPUT live in OUTPUT.checkpoints (see ``checkpoint.checkpoints_dir_for``).
Running the same command again resumes from the newest complete checkpoint there; after the final
model directory is in place the checkpoints are removed (``cleanup_checkpoints``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ropeext import tracking
from ropeext.config import by_target
from ropeext.errors import RopeextError
from ropeext.runtime import choose_train_precision, device_facts, resolve_device
from ropeext.train import checkpoint as ckpt
from ropeext.train.io import save_model_dir
from ropeext.train.loop import TrainSettings, train

SETTING_KEYS = (
    "steps",
    "batch_size",
    "lr",
    "warmup_steps",
    "schedule",
    "min_lr_ratio",
    "weight_decay",
    "betas",
    "max_grad_norm",
    "grad_accum",
    "precision",
    "gradient_checkpointing",
    "sequence_parallel",
    "loss_chunk_tokens",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "system_metrics",
    "divergence_factor",
    "divergence_patience",
    "eval_every",
)


def settings_from(
    section: dict, *, seed: int, layout: str, backend: str, name: str, target_length: int | None = None
) -> TrainSettings:
    """TrainSettings from a resolved config section (``steps`` picked for ``target_length``); a bad
    value names ``name.key``."""
    kwargs = {k: section[k] for k in SETTING_KEYS if k in section}
    if kwargs.get("precision") == "auto":  # bf16-mixed where the training device computes bf16 natively
        device = resolve_device("auto")
        kwargs["precision"], reason = choose_train_precision("auto", device_facts(device))
        print(f"{name}.precision auto -> {kwargs['precision']} on {device} ({reason})", flush=True)
    kwargs["steps"] = by_target(kwargs.get("steps"), target_length, f"{name}.steps")
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    try:
        return TrainSettings(seed=int(seed), layout=layout, backend=backend, **kwargs)
    except (RopeextError, TypeError) as exc:
        raise RopeextError(f"{name}: {exc}") from None


def run_stage(
    stage: str,
    *,
    model,
    tokenizer,
    data,
    settings: TrainSettings,
    output: str | Path,
    config: dict,
    params: dict,
    variant: str | None,
    mlflow: bool,
    resume: bool,
    cleanup: bool,
    accelerator,
    tags: dict | None = None,
    extra_summary: dict | None = None,
    progress: bool = True,
    train_path: str | Path | None = None,
    base: str | None = None,
    val=None,
    val_path: str | Path | None = None,
) -> dict:
    """Train under one MLflow run (main process), save OUTPUT atomically, then drop the checkpoints.

    The run records ``train_path`` (the packed windows) as its training dataset; OUTPUT becomes a
    LoggedModel made by the run (named after the variant, ``base`` its base model) and the final metrics
    are logged against it. ``val``: held-out windows (``ropeext.train.heldout``, read from ``val_path``, the run's
    dataset input of context "validation") whose loss ``train`` logs."""
    output = Path(output)
    ckdir = ckpt.checkpoints_dir_for(output)
    is_main = accelerator.is_main_process
    with tracking.stage_run(stage, config=config, params=params, variant=variant, enabled=mlflow and is_main) as run_:
        if train_path is not None:
            run_.log_input(train_path, context="training", config=config)
        if val is not None and val_path is not None:
            run_.log_input(val_path, context="validation", config=config)
        summary = train(
            model,
            data,
            settings,
            run=run_,
            checkpoint_dir=ckdir,
            resume=resume,
            accelerator=accelerator,
            gather_state=True,
            progress=progress,
            val=val,
        )
        state_dict = summary.pop("state_dict", None)
        # the dtype the rotary cos/sin were computed in (bf16 under FSDP's bf16 compute, fp32 elsewhere)
        summary["rope_dtype"] = summary["numeric_path"].get("observed", {}).get("rope_cos", "?")
        summary.update(extra_summary or {})
        if is_main:
            save_model_dir(model, tokenizer, output, summary, state_dict=state_dict)
            run_.log_model(output, name=variant or output.name, stage=stage, base=base)  # the Models tab
            path = summary["numeric_path"]
            rope_dtype = summary["rope_dtype"]
            run_.log_params(
                {"world_size": summary["processes"], "strategy": summary["strategy"], "rope_dtype": rope_dtype}
            )
            run_.set_tags(
                {
                    **(tags or {}),
                    "ropeext.precision": settings.precision,
                    "ropeext.numeric_path.attention": path.get("observed", {}).get("query_after_rope", "?"),
                    "ropeext.numeric_path.rope": rope_dtype,
                }
            )
            metrics = {
                "final_loss": summary["final_loss"],
                "tokens_per_s": summary["tokens_per_s"],
                "seconds": summary["seconds"],
            }
            if summary.get("final_val_loss") is not None:
                metrics["final_val_loss"] = summary["final_val_loss"]
                metrics["heldout_seconds"] = summary["heldout_seconds"]
            if summary.get("resumed_from_step") is not None:
                metrics["resumed_from_step"] = summary["resumed_from_step"]
            run_.log_metrics(metrics)
            run_.log_artifact(output / "training_summary.json")
            run_.log_artifact(output / "config.json")
        accelerator.wait_for_everyone()
        if is_main and cleanup and ckdir.exists():
            shutil.rmtree(ckdir, ignore_errors=True)
    return summary
