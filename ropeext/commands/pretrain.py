"""ropeext pretrain: pre-train the embedded default's tiny Llama from scratch at the short window.

Settings: the config's ``pretrain`` section (keys as for finetune, without recipes) and ``--set
KEY=VALUE`` on top. Checkpoints go to OUTPUT.checkpoints; running the same command again resumes.
"""

from __future__ import annotations

import os

from ropeext.checks import check_training
from ropeext.commands._common import add_config_args, add_tracking_args, add_training_args, config_from_args
from ropeext.data.packed_file import check_packed
from ropeext.data.tokenizer import load_tokenizer
from ropeext.modeling import build_tiny_llama
from ropeext.train.data import load_packed
from ropeext.train.distributed import check_launch, end_processes, start_worker

COMMAND = ("pretrain",)
HELP = "pre-train the tiny Llama of the embedded default on packed windows"


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument("--tokenizer", required=True, help="HF tokenizer directory")
    parser.add_argument("--train", required=True, help="packed training windows (.parquet, layout full)")
    add_training_args(parser, "pretrain", "--set steps=200")
    add_tracking_args(parser)


def run(args) -> None:
    # heavy: torch loads only when a model runs
    import torch

    # heavy: ropeext.train.loop imports torch at its top, and --help imports every command
    from ropeext.train.loop import make_accelerator
    from ropeext.train.stage import run_stage, settings_from  # (imports ropeext.train.loop)

    config = config_from_args(args, "pretrain")
    check_training(config)  # the loop trusts a checked config
    threads = start_worker(args.threads)  # under a launcher: stop with it, share the threads
    if threads:
        torch.set_num_threads(threads)
    mcfg = config["model"]
    section = config["pretrain"]
    settings = settings_from(section, seed=config["seed"], layout="full", backend="sdpa_mask", name="pretrain")
    tok = load_tokenizer(args.tokenizer)
    check_packed(args.train, layout="full", max_window=mcfg["train_length"], window_note="model.train_length")
    data = load_packed(args.train)
    accelerator = make_accelerator(settings.precision)
    # the processes that joined must be what the launch asked for: stop before loading anything
    check_launch(os.environ, world=accelerator.num_processes, distributed_type=accelerator.distributed_type.value)
    model = build_tiny_llama(
        len(tok),
        mcfg["train_length"],
        **mcfg["architecture"],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        seed=config["seed"],
    )
    n_params = sum(p.numel() for p in model.parameters())
    summary = run_stage(
        "pretrain",
        model=model,
        tokenizer=tok,
        data=data,
        settings=settings,
        output=args.output,
        config=config,
        params={"model": mcfg, "pretrain": {k: section[k] for k in sorted(section)}},
        variant=args.variant,
        mlflow=not args.no_mlflow,
        resume=not args.no_resume,
        cleanup=section["cleanup_checkpoints"],
        accelerator=accelerator,
        extra_summary={"parameters": n_params, "train_windows": data.windows},
        train_path=args.train,
    )
    end_processes()
    if accelerator.is_main_process:
        print(
            f"pretrain: {n_params / 1e6:.2f}M parameters, final loss {summary['final_loss']:.3f}, "
            f"{summary['tokens_per_s']:.0f} tokens/s"
        )
