"""Start a multi-process fine-tune from an accelerate config, on GPUs or, without GPUs, on CPU processes.

    python -m ropeext.launch --config_file config/accelerate/fsdp.yaml --num_processes 8 -- finetune ...

The same command runs on a GPU node and on a laptop: with GPUs, one process per GPU over NCCL; with
none, the same number of CPU processes over gloo (what CPU needs is changed here, not in the user's
config). ``ddp`` and ``fsdp`` configs start through torch's launcher (``torch.distributed.run``), and
ropeext applies DDP (accelerate) or FSDP2 (``ropeext.train.distributed.apply_fsdp``) inside; a
DeepSpeed config goes to ``accelerate launch``. Every worker learns what was asked from the
``ROPEEXT_LAUNCH`` variable and stops before its first step when the processes that joined differ
(``ropeext.train.distributed.check_launch``). The launcher replaces itself with torch's launcher, which
forwards SIGTERM/SIGINT to the workers; the workers also stop when it is killed outright.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ropeext.config import read_yaml_mapping
from ropeext.errors import RopeextError
from ropeext.train.distributed import ENV, Launch, launch_for


@dataclass(frozen=True)
class Plan:
    """What to execute: the command and the environment variables it adds."""

    launch: Launch
    argv: list[str]
    env: dict[str, str]


def read_accelerate_config(path: str) -> dict:
    try:
        return read_yaml_mapping(path, "accelerate config file", "accelerate settings")
    except RopeextError as exc:
        raise RopeextError(f"--config_file: {exc}") from None


def plan_launch(
    config_file: str, cfg: dict, *, num_processes: int | None, gpus: int, command: list[str], threads: int | None = None
) -> Plan:
    """The command that starts ``command`` (``ropeext.cli`` arguments) as ``cfg`` asks, on ``gpus`` GPUs
    (0: CPU processes over gloo). Every refusal names the file, the key and what was expected."""
    launch = launch_for(config_file, cfg, num_processes=num_processes, gpus=gpus)
    env = {ENV: launch.to_env()}
    if launch.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
        if threads:
            env["OMP_NUM_THREADS"] = str(max(1, threads // launch.processes))
    if launch.strategy == "deepspeed":
        accelerate = Path(sys.executable).with_name("accelerate")
        argv = [str(accelerate) if accelerate.exists() else "accelerate", "launch", "--config_file", config_file]
        argv += ["--num_processes", str(launch.processes)]
    else:
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(launch.processes),
        ]
    return Plan(launch=launch, argv=[*argv, "-m", "ropeext.cli", *command], env=env)


def visible_gpus() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":  # every GPU hidden: no need to load torch to count none
        return 0
    # heavy: torch is needed only to count the devices of this machine
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        own, command = argv[:cut], argv[cut + 1 :]
    else:
        own, command = argv, []
    parser = argparse.ArgumentParser(prog="python -m ropeext.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_file", required=True, help="accelerate config (config/accelerate/*.yaml)")
    parser.add_argument("--num_processes", type=int, default=None, help="processes (default: the config's)")
    args = parser.parse_args(own)
    if not command:
        parser.error("give the ropeext command after --, e.g. -- finetune --config ...")
    try:
        threads = int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS", "").isdigit() else None
        plan = plan_launch(
            args.config_file,
            read_accelerate_config(args.config_file),
            num_processes=args.num_processes,
            gpus=visible_gpus(),
            command=command,
            threads=threads,
        )
    except RopeextError as exc:
        sys.exit(f"ropeext.launch: {exc}")
    print(
        f"ropeext.launch: {plan.launch.strategy} over {plan.launch.processes} {plan.launch.device} process(es)",
        file=sys.stderr,
        flush=True,
    )
    os.execvpe(plan.argv[0], plan.argv, {**os.environ, **plan.env})


if __name__ == "__main__":
    main()
