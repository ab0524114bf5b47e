"""Checks of the training sections: batch and micro-batches, learning rate, the accelerate launch config.
``ropeext pretrain`` and ``ropeext finetune`` run them (``TRAINING``) before training; the loop trusts them."""

from __future__ import annotations

from typing import Iterator

from ropeext.checks.registry import CHECKS, check, problems
from ropeext.config import read_yaml_mapping
from ropeext.errors import RopeextError
from ropeext.train.distributed import launch_for

FLOAT32_MAX = float.fromhex("0x1.fffffep+127")  # the largest float32: a learning rate beyond it overflows


def _data_parallel(ft: dict, procs: int, where: str) -> tuple[int, str | None]:
    """The data-parallel groups of ``procs`` processes with ``finetune.sequence_parallel`` of them per
    window, and a problem when it does not divide them."""
    sp = ft.get("sequence_parallel", 1)
    if procs % sp:
        return procs, f"finetune.sequence_parallel: {sp} does not divide the {procs} processes of {where}"
    return procs // sp, None


@check(
    "finetune/pretrain batch and lr",
    "a batch_size that grad_accum (times the data-parallel groups of resources.finetune.gpu) does not "
    "divide; a sequence_parallel that does not divide those processes; an lr beyond float32",
)
def _training(config: dict) -> Iterator[str]:
    sections = ["finetune"] + (["pretrain"] if config["model"]["path"] is None else [])
    for name in sections:
        s = config[name]
        procs = groups = 1
        on = ""
        if name == "finetune" and s["accelerate_config"] and config["resources"]["finetune"]["gpu"] > 0:
            procs = config["resources"]["finetune"]["gpu"]
            groups, problem = _data_parallel(s, procs, "resources.finetune.gpu")
            if problem:
                yield problem
                groups = procs
            if groups < procs:
                on = (
                    f" on each of {groups} data-parallel groups ({procs} processes of resources.finetune.gpu, "
                    f"finetune.sequence_parallel {s['sequence_parallel']} per window)"
                )
            elif procs > 1:
                on = f" on each of {procs} processes (resources.finetune.gpu with finetune.accelerate_config)"
        if s["batch_size"] % (s["grad_accum"] * groups):
            yield (
                f"{name}.batch_size: {s['batch_size']} sequences do not split into {name}.grad_accum "
                f"{s['grad_accum']} micro-batches{on}; expected a multiple of {s['grad_accum'] * groups}"
            )
        if s["lr"] > FLOAT32_MAX:
            yield f"{name}.lr: {s['lr']:g} overflows float32 (largest {FLOAT32_MAX:.4g})"


@check(
    "finetune.accelerate_config",
    "a launch config that is missing, not YAML or asks for what ropeext would not run as asked; its "
    "processes not dividing the batch; DeepSpeed with grad_accum > 1",
    paths=True,
)
def _accelerate(config: dict) -> Iterator[str]:
    ft = config["finetune"]
    path = ft["accelerate_config"]
    if not path:
        return
    try:
        launch = read_yaml_mapping(path, "file", "accelerate settings")
    except RopeextError as exc:
        yield f"finetune.accelerate_config: {exc}"
        return
    res = config["resources"]["finetune"]
    try:  # the processes the workflow rule launches: one per GPU of the job, else one per thread
        asked = launch_for(path, launch, num_processes=res["gpu"] or res["threads"], gpus=res["gpu"])
    except RopeextError as exc:
        yield f"finetune.accelerate_config: {exc}"
        return
    if not res["gpu"]:  # (with GPUs, _training checks the batch)
        procs = asked.processes
        groups, problem = _data_parallel(ft, procs, f"{path} (resources.finetune.threads without GPUs)")
        if problem:
            yield problem
        elif ft["batch_size"] % (ft["grad_accum"] * groups):
            per = f"the {procs} processes" if groups == procs else f"the {groups} data-parallel groups"
            yield (
                f"finetune.batch_size: {ft['batch_size']} sequences do not split into finetune.grad_accum "
                f"{ft['grad_accum']} micro-batches on each of {per} of {path} "
                "(resources.finetune.gpu, or its threads without GPUs)"
            )
    if asked.strategy == "deepspeed" and ft["grad_accum"] != 1:
        yield (
            f"finetune.grad_accum: must be 1 under DeepSpeed ({path}), which steps its optimizer inside "
            "backward; raise the per-process batch or use config/accelerate/fsdp.yaml"
        )


TRAINING = [c for c in CHECKS if c.run in (_training, _accelerate)]  # what a training command checks itself


def check_training(config: dict) -> None:
    """What ``ropeext pretrain`` and ``ropeext finetune`` check before training, as one error line."""
    found = problems(config, TRAINING)
    if found:
        raise RopeextError("; ".join(found))
