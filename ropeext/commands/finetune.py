"""ropeext finetune: extend a base model's RoPE with a scaling.json and fine-tune on packed windows.

Settings: the config's ``finetune`` section, resolved with its recipe (``finetune.recipe``, see
ropeext/recipes.py); ``--recipe`` on the command line replaces the config's values for the keys that
recipe sets, and ``--set KEY=VALUE`` wins over everything.
With ``--val`` (held-out tokenized documents) the loss on ``finetune.val_windows`` fixed validation windows
is logged every ``finetune.eval_every`` steps (``ropeext.train.heldout``).
Checkpoints go to OUTPUT.checkpoints; running the same command again resumes from the newest
complete one. Several processes (GPUs, or CPU processes over gloo): ``python -m ropeext.launch
--config_file config/accelerate/<ddp|fsdp>.yaml --num_processes N -- finetune ...`` with the same options.
"""

from __future__ import annotations

import os
from pathlib import Path

from ropeext import job_warnings
from ropeext.attention import check_backend
from ropeext.checks import check_training
from ropeext.commands._common import add_config_args, add_tracking_args, add_training_args, config_from_args
from ropeext.data.packed_file import check_packed
from ropeext.data.packing import check_layout
from ropeext.data.tokenizer import anchor_token_id, load_tokenizer
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
    parser.add_argument(
        "--val",
        default=None,
        help="held-out tokenized documents (.parquet) for the validation windows of the held-out loss "
        "(finetune.val_windows, finetune.eval_every); none: no held-out loss",
    )
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


def _heldout(path: str | None, count: int, window: int, tokenizer, config: dict):
    """The fixed validation windows of ``--val`` (None without it, or with finetune.val_windows 0)."""
    if path is None or count == 0:
        return None
    # heavy: ropeext.train.heldout imports ropeext.data.tokens, which loads the tokenizers library at its top
    from ropeext.train.heldout import heldout_windows

    val = heldout_windows(
        path,
        window=window,
        count=count,
        anchor_id=anchor_token_id(tokenizer),
        seed=config["seed"],
        mask_boundary_labels=config["packing"]["mask_boundary_labels"],
    )
    if val.windows < count:
        job_warnings.note(
            f"{path}: the held-out split fills {val.windows} validation windows of {window} tokens, "
            f"not the {count} of finetune.val_windows"
        )
    return val


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
    tok = load_tokenizer(args.base)
    val = _heldout(args.val, section["val_windows"], data.window, tok, config)
    model = load_causal_lm(args.base, scaling=scaling)
    resolved = {**section, "steps": settings.steps}
    params = {
        "finetune": {k: resolved[k] for k in sorted(resolved)},
        "layout": args.layout,
        "backend": backend,
        "scaling": {k: scaling[k] for k in ("method", "target_length")},
        "base": args.base,
        "processes": accelerator.num_processes,
        "val_tokens": args.val,
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
        val=val,
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
            "val_tokens": args.val if val is not None else None,
            "recipe": resolved["recipe"],
        },
        train_path=args.train,
        val_path=args.val,
        base=args.base,
    )
    end_processes()
    if accelerator.is_main_process:
        resumed = summary.get("resumed_from_step")
        first, final = summary.get("first_val_loss"), summary.get("final_val_loss")
        held = "" if final is None else f", held-out loss {final:.3f}"
        if final is not None and first is not None:
            held = f", held-out loss {first:.3f} -> {final:.3f}"
        print(
            f"finetune[{scaling['method']}/{args.layout}]: training loss {summary['final_loss']:.3f} (mean of the "
            f"last steps){held}, {summary['tokens_per_s']:.0f} tokens/s"
            + (f" (resumed at step {resumed})" if resumed else "")
        )
