"""What a multi-process fine-tune was asked for, what it got, and FSDP2 applied through torch's public API.

``python -m ropeext.launch`` (``ropeext/launch.py``) starts the processes and tells each of them, in the
environment variable ``ROPEEXT_LAUNCH`` (JSON), what it asked for: the strategy (``ddp``, ``fsdp`` or
``deepspeed``), the number of processes and the device. ``check_launch`` compares that, and what
``accelerate launch`` itself leaves in the environment, with the processes that actually joined, and
stops before the first step when they differ: one process where two were asked, two independent runs
where one run over two processes was asked, a DDP run under an FSDP config, a context- or
sequence-parallel size set where nothing applies it.

FSDP is ropeext's own on every device: ``apply_fsdp`` shards each decoder layer and then the root with
``torch.distributed.fsdp.fully_shard`` (FSDP2), so the same code runs over gloo on CPU processes (where
accelerate would quietly fall back to DDP) and over NCCL on GPUs. DeepSpeed ZeRO-3 stays accelerate's.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass, field

from ropeext.errors import RopeextError

ENV = "ROPEEXT_LAUNCH"
STRATEGIES = ("single", "ddp", "fsdp", "deepspeed")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Launch:
    """What the launch asked for (``ROPEEXT_LAUNCH``), or a plain single process."""

    strategy: str = "single"
    processes: int = 1
    device: str = "cpu"
    config_file: str | None = None
    fsdp: dict = field(default_factory=dict)  # reshard_after_forward, layer_classes, offload_params

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def requested_launch(env=None) -> Launch | None:
    """The launch ``ropeext.launch`` recorded in the environment, or None (not started by it)."""
    env = os.environ if env is None else env
    raw = env.get(ENV)
    if not raw:
        return None
    try:
        launch = Launch(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise RopeextError(f"{ENV}={raw!r} is not a launch description ({exc}); start with python -m ropeext.launch")
    if launch.strategy not in STRATEGIES:
        raise RopeextError(f"{ENV}: strategy {launch.strategy!r} is not one of {', '.join(STRATEGIES)}")
    return launch


def _true(env, key: str) -> bool:
    return str(env.get(key, "")).lower() in ("1", "true", "yes")


HOW = (
    "launch it with `python -m ropeext.launch --config_file config/accelerate/<ddp|fsdp>.yaml "
    "--num_processes N -- finetune ...` (GPUs where present, else CPU processes over gloo)"
)


def check_launch(env, *, world: int, distributed_type: str) -> Launch:
    """The launch this process runs under; a RopeextError when the processes that joined are not what
    the launch asked for. ``distributed_type`` is accelerate's (``NO``, ``MULTI_CPU``, ``MULTI_GPU``,
    ``FSDP``, ``DEEPSPEED``...)."""
    env = os.environ if env is None else env
    for key in sorted(env):
        if key.startswith("PARALLELISM_CONFIG_") and key.endswith("_SIZE") and str(env[key]) not in ("", "1"):
            raise RopeextError(
                f"the launch sets {key}={env[key]} (accelerate's parallelism_config), which ropeext does not "
                "apply: context parallelism (cp_size) drops the per-document masks of packed windows; for "
                "sequence parallelism set finetune.sequence_parallel (DeepSpeed Ulysses keeps the masks). "
                "Remove parallelism_config from the accelerate config"
            )
    asked = requested_launch(env)
    if asked is None:
        return _check_bare(env, world=world, distributed_type=distributed_type)
    if world != asked.processes:
        raise RopeextError(
            f"the launch asked for {asked.processes} processes ({asked.strategy}, {asked.config_file}) but "
            f"{world} joined this run; {HOW}"
        )
    if asked.strategy == "deepspeed" and distributed_type != "DEEPSPEED":
        raise RopeextError(
            f"{asked.config_file} asks for DeepSpeed but accelerate set up {distributed_type}; ZeRO-3 needs "
            "GPUs and the deepspeed package"
        )
    if asked.strategy in ("ddp", "fsdp") and distributed_type in ("FSDP", "DEEPSPEED"):
        raise RopeextError(
            f"ropeext applies {asked.strategy} itself, but accelerate set up {distributed_type} "
            "(ACCELERATE_USE_FSDP / ACCELERATE_USE_DEEPSPEED in the environment?); unset them and " + HOW
        )
    return asked


def _check_bare(env, *, world: int, distributed_type: str) -> Launch:
    """A process not started by ropeext.launch: bare ``accelerate launch``, ``torchrun`` or plain python."""
    asked_world = int(env.get("WORLD_SIZE") or 1)
    if asked_world != world:
        raise RopeextError(
            f"the launcher started {asked_world} processes (WORLD_SIZE) but accelerate joined {world}: each "
            "would train the whole batch on its own and write the same output (accelerate uses GPUs only "
            f"for --multi_gpu); {HOW}"
        )
    if world == 1 and _true(env, "ACCELERATE_USE_CPU") and env.get("MASTER_ADDR") and not env.get("WORLD_SIZE"):
        raise RopeextError(
            "accelerate launch --cpu / distributed_type MULTI_CPU started one process: its CPU launcher runs "
            f"several only under mpirun; {HOW}"
        )
    if _true(env, "ACCELERATE_USE_FSDP"):
        raise RopeextError(
            f"the accelerate config asks for FSDP (accelerate set up {distributed_type}; on CPU it runs DDP "
            "instead); ropeext applies FSDP2 itself on CPU and GPU: " + HOW
        )
    if _true(env, "ACCELERATE_USE_DEEPSPEED"):
        if distributed_type != "DEEPSPEED":
            raise RopeextError(f"the accelerate config asks for DeepSpeed but accelerate set up {distributed_type}")
        return Launch(strategy="deepspeed", processes=world, device="cuda")
    if world > 1:
        return Launch(strategy="ddp", processes=world, device="cuda" if "GPU" in distributed_type else "cpu")
    return Launch()


_TYPES = {"MULTI_GPU": "ddp", "FSDP": "fsdp", "DEEPSPEED": "deepspeed", "NO": "ddp", "MULTI_CPU": "ddp"}


def launch_for(config_file: str, cfg: dict, *, num_processes: int | None, gpus: int) -> Launch:
    """The launch an accelerate config (``cfg``, read from ``config_file``) asks for with ``num_processes``
    (None: the config's) on a machine with ``gpus`` GPUs (0: CPU processes over gloo); a RopeextError
    naming the file, the key and what was expected for what ropeext would not run as asked."""
    kind = cfg.get("distributed_type", "MULTI_GPU")
    if kind not in _TYPES:
        raise RopeextError(
            f"{config_file}: distributed_type {kind!r} is not supported (expected one of {', '.join(_TYPES)})"
        )
    strategy = _TYPES[kind]
    parallel = cfg.get("parallelism_config") or {}
    for key, value in sorted(parallel.items()):
        if key.endswith("_size") and value not in (None, 1):
            raise RopeextError(
                f"{config_file}: parallelism_config.{key}: {value} is not applied by ropeext (context "
                "parallelism drops the per-document masks of packed windows); for sequence parallelism set "
                "finetune.sequence_parallel in the ropeext config and remove parallelism_config"
            )
    if int(cfg.get("num_machines", 1) or 1) != 1:
        raise RopeextError(
            f"{config_file}: num_machines {cfg['num_machines']}: ropeext launches on one machine (one SLURM "
            "job per node); expected 1"
        )
    processes = int(num_processes if num_processes is not None else cfg.get("num_processes", 1) or 1)
    if processes < 1:
        raise RopeextError(f"--num_processes {processes}: expected 1 or more")
    fsdp = {}
    if strategy == "fsdp":
        fc = cfg.get("fsdp_config") or {}
        if int(fc.get("fsdp_version", 2)) != 2:
            raise RopeextError(f"{config_file}: fsdp_config.fsdp_version {fc['fsdp_version']}: expected 2 (FSDP2)")
        if fc.get("fsdp_activation_checkpointing"):
            raise RopeextError(
                f"{config_file}: fsdp_config.fsdp_activation_checkpointing: set finetune.gradient_checkpointing "
                "in the ropeext config instead, and false here"
            )
        fsdp = {
            "reshard_after_forward": bool(fc.get("fsdp_reshard_after_forward", True)),
            "layer_classes": fc.get("fsdp_transformer_layer_cls_to_wrap"),
            "offload_params": bool(fc.get("fsdp_offload_params", False)),
        }
    if strategy in ("ddp", "fsdp") and cfg.get("mixed_precision", "no") not in ("no", False, None):
        raise RopeextError(
            f'{config_file}: mixed_precision {cfg["mixed_precision"]!r}: expected "no" for {strategy} '
            "(finetune.precision sets the precision; under fsdp bf16 computes over fp32 sharded masters)"
        )
    device = "cuda" if gpus else "cpu"
    if gpus and processes > gpus:
        raise RopeextError(f"--num_processes {processes}: this machine shows {gpus} GPUs; expected at most {gpus}")
    if strategy == "deepspeed" and not gpus:
        raise RopeextError(
            f"{config_file}: DeepSpeed ZeRO-3 runs on GPUs and this machine has none; on CPU processes use "
            "config/accelerate/ddp.yaml or fsdp.yaml"
        )
    return Launch(strategy=strategy, processes=processes, device=device, config_file=config_file, fsdp=fsdp)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when the process that started it dies (Linux).

    torch's launcher starts each worker in a session of its own, so killing the launcher's process
    group (a SIGKILL from a scheduler, a closed terminal) would leave the workers training on; with
    this they stop. SIGKILL, not SIGTERM: a worker blocked in a collective whose peer is gone runs no
    Python signal handler until the collective times out (minutes), and a launcher killed outright is a
    hard stop anyway (its MLflow run is closed KILLED by the next attempt). A worker whose launcher is
    already gone exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        raise SystemExit(f"ropeext: the launcher of this worker (rank {os.environ.get('RANK', '?')}) is gone")


def layer_classes(model, asked: str | list | None) -> tuple[type, ...]:
    """The decoder-layer classes to shard one by one: the accelerate config's
    ``fsdp_transformer_layer_cls_to_wrap`` (names, comma-separated) or the model's ``_no_split_modules``."""
    names = asked if asked else getattr(model, "_no_split_modules", None) or []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    found = {type(m).__name__: type(m) for m in model.modules() if type(m).__name__ in set(names)}
    missing = [n for n in names if n not in found]
    if missing or not found:
        present = sorted({type(m).__name__ for m in model.modules() if "Layer" in type(m).__name__})
        raise RopeextError(
            f"fsdp_transformer_layer_cls_to_wrap: {', '.join(missing) or '(none)'} not in this model "
            f"(its layer classes: {', '.join(present) or 'none'})"
        )
    return tuple(found.values())


def apply_fsdp(model, launch: Launch, *, precision: str):
    """Shard ``model`` in place with FSDP2: every decoder layer, then the root. bf16 precisions compute
    in bf16 over fp32 sharded masters (gradients reduced in fp32); fp32 stays fp32."""
    # heavy: torch loads only when a model trains
    import torch
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard  # (as above)

    opts = launch.fsdp or {}
    kwargs = {"reshard_after_forward": bool(opts.get("reshard_after_forward", True))}
    if precision != "fp32":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if opts.get("offload_params"):
        kwargs["offload_policy"] = CPUOffloadPolicy()
    classes = layer_classes(model, opts.get("layer_classes"))
    for module in model.modules():
        if isinstance(module, classes):
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def full_state_dict(model) -> dict:
    """The whole model's state dict on CPU, gathered from the FSDP2 shards (every process must call)."""
    # heavy: torch.distributed.checkpoint loads only when an FSDP run saves
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(model, optimizer, path) -> None:
    """Each process writes its shards of the model and optimizer state under ``path`` (torch DCP)."""
    # heavy: torch.distributed.checkpoint loads only when an FSDP run saves
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict  # (as above)

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(path))


def load_sharded(model, optimizer, path) -> None:
    """Load what ``save_sharded`` wrote into the sharded model and optimizer (every process)."""
    # heavy: torch.distributed.checkpoint loads only when an FSDP run resumes
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict  # (as above)

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def start_worker(threads: int | None, env=None) -> int | None:
    """What every training process does first: under a launcher, stop with it (``die_with_parent``) and
    share the job's CPU ``threads`` with the other processes of this machine."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" not in env:
        return threads
    die_with_parent()
    local = int(env.get("LOCAL_WORLD_SIZE") or 1)
    return max(1, threads // local) if threads else threads


def end_processes() -> None:
    """Take the process group down once training is over, on every process: left to the interpreter's exit,
    gloo's threads can abort it ("terminate called without an active exception") after a finished run."""
    # heavy: torch loads only when a model trains
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
