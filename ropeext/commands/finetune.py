"""ropeext finetune: extend a base model's RoPE with a scaling.json and fine-tune on packed windows.

Settings: the config's ``finetune`` section, resolved with its recipe (``finetune.recipe``, see
ropeext/recipes.py); ``--recipe`` on the command line replaces the config's values for the keys that
recipe sets, and ``--set KEY=VALUE`` wins over everything.
Checkpoints go to OUTPUT.checkpoints; running the same command again resumes from the newest
complete one. Several processes (GPUs, or CPU processes over gloo): ``python -m ropeext.launch
--config_file config/accelerate/<ddp|fsdp>.yaml --num_processes N -- finetune ...`` with the same options.
"""

from __future__ import annotations

import os
from pathlib import Path

from ropeext.attention import check_backend
from ropeext.checks import check_training
from ropeext.commands._common import add_config_args, add_tracking_args, add_training_args, config_from_args
from ropeext.data.packed_file import check_packed
from ropeext.data.packing import check_layout
from ropeext.data.tokenizer import load_tokenizer
from ropeext.errors import RopeextError
from ropeext.io import is_hub_id, read_json
from ropeext.modeling import load_causal_lm
from ropeext.recipes import RECIPES
from ropeext.train.data import load_packed
from ropeext.train.distributed import check_launch, end_processes, start_worker

COMMAND = ("finetune",)
HELP = "apply a RoPE extension (scaling.json) to a base model and fine-tune it at the target window"


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument("--base", required=True, help="base model: HF directory or hub id")
    parser.add_argument("--scaling", required=True, help="scaling.json from `ropeext solve`")
    parser.add_argument("--train", required=True, help="packed training windows (.parquet)")
    parser.add_argument("--layout", required=True, help="packing layout of --train")
    add_training_args(parser, "finetune", "--set lr=1e-5 --set grad_accum=4")
    parser.add_argument(
        "--recipe",
        default=None,
        choices=("none", *RECIPES),
        help="paper recipe; its values replace the config's finetune values (--set overrides)",
    )
    add_tracking_args(parser)


def check_base(base: str) -> None:
    """A base that looks like a local path must be a model directory with a config.json."""
    path = Path(base)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RopeextError(f"--base {base}: directory has no config.json (expected a Hugging Face model directory)")
        return
    if not is_hub_id(base):
        raise RopeextError(
            f"--base {base}: base model directory not found (expected a Hugging Face model directory "
            "or a hub id like org/name)"
        )


def run(args) -> None:
    # heavy: torch loads only when a model runs
    import torch

    # heavy: ropeext.train.loop imports torch at its top, and --help imports every command
    from ropeext.train.loop import make_accelerator
    from ropeext.train.stage import run_stage, settings_from  # (imports ropeext.train.loop)

    config = config_from_args(args, "finetune")
    check_training(config)  # the loop trusts a checked config
    threads = start_worker(args.threads)  # under a launcher: stop with it, share the threads
    if threads:
        torch.set_num_threads(threads)
    check_layout(args.layout)
    backend = check_backend(config["attention"]["backend"])
    scaling = read_json(args.scaling, "scaling file")
    for key in ("target_length", "head_dim", "rope_parameters", "method"):
        if key not in scaling:
            raise RopeextError(f"{args.scaling}: missing key {key!r} (expected a scaling.json from `ropeext solve`)")
    target = int(scaling["target_length"])
    section = config["finetune"]
    settings = settings_from(
        section, seed=config["seed"], layout=args.layout, backend=backend, name="finetune", target_length=target
    )
    check_packed(args.train, layout=args.layout, max_window=target, window_note=f"the target length of {args.scaling}")
    data = load_packed(args.train)
    check_base(args.base)
    accelerator = make_accelerator(settings.precision)
    # the processes that joined must be what the launch asked for: stop before loading anything
    check_launch(os.environ, world=accelerator.num_processes, distributed_type=accelerator.distributed_type.value)
    model = load_causal_lm(args.base, scaling=scaling)
    tok = load_tokenizer(args.base)
    resolved = {**section, "steps": settings.steps}
    params = {
        "finetune": {k: resolved[k] for k in sorted(resolved)},
        "layout": args.layout,
        "backend": backend,
        "scaling": {k: scaling[k] for k in ("method", "target_length")},
        "base": args.base,
        "processes": accelerator.num_processes,
    }
    summary = run_stage(
        "finetune",
        model=model,
        tokenizer=tok,
        data=data,
        settings=settings,
        output=args.output,
        config=config,
        params=params,
        variant=args.variant,
        mlflow=not args.no_mlflow,
        resume=not args.no_resume,
        cleanup=section["cleanup_checkpoints"],
        accelerator=accelerator,
        tags={"ropeext.method": scaling["method"], "ropeext.layout": args.layout, "ropeext.recipe": resolved["recipe"]},
        extra_summary={
            "scaling": {
                "method": scaling["method"],
                "rope_parameters": scaling["rope_parameters"],
                "target_length": target,
                "train_length": scaling.get("train_length"),
            },
            "base": args.base,
            "layout": args.layout,
            "train_windows": data.windows,
            "recipe": resolved["recipe"],
        },
        train_path=args.train,
        base=args.base,
    )
    end_processes()
    if accelerator.is_main_process:
        resumed = summary.get("resumed_from_step")
        print(
            f"finetune[{scaling['method']}/{args.layout}]: final loss {summary['final_loss']:.3f}, "
            f"{summary['tokens_per_s']:.0f} tokens/s" + (f" (resumed at step {resumed})" if resumed else "")
        )
