"""ropeext pretrain: pre-train the embedded default's tiny Llama from scratch at the short window."""

from __future__ import annotations

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args

COMMAND = ("pretrain",)
HELP = "pre-train the tiny Llama of the embedded default on packed windows"


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument("--tokenizer", required=True, help="HF tokenizer directory")
    parser.add_argument("--train", required=True, help="packed training windows (.parquet, layout full)")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_tracking_args(parser)


def run(args) -> None:
    import torch

    from ropeext import tracking
    from ropeext.data.tokenizer import load_tokenizer
    from ropeext.errors import RopeextError
    from ropeext.modeling import build_tiny_llama
    from ropeext.train.data import load_packed
    from ropeext.train.io import save_model_dir
    from ropeext.train.loop import TrainSettings, train

    config = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.tokenizer)
    data = load_packed(args.train)
    mcfg, pcfg = config["model"], config["pretrain"]
    if data.window != mcfg["train_length"]:
        raise RopeextError(f"{args.train}: windows of {data.window} tokens, but model.train_length is {mcfg['train_length']}")
    model = build_tiny_llama(len(tok), mcfg["train_length"], **mcfg["architecture"],
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, seed=config["seed"])
    settings = TrainSettings(steps=pcfg["steps"], batch_size=pcfg["batch_size"], lr=pcfg["lr"],
                             warmup_steps=pcfg["warmup_steps"], weight_decay=pcfg["weight_decay"],
                             precision=pcfg["precision"], schedule="cosine", seed=config["seed"],
                             layout="full", backend="sdpa_mask")
    n_params = sum(p.numel() for p in model.parameters())
    with tracking.stage_run("pretrain", config=config, params={"model": mcfg, "pretrain": pcfg},
                            variant=args.variant, enabled=not args.no_mlflow) as run_:
        summary = train(model, data, settings, run=run_)
        summary["parameters"] = n_params
        summary["train_windows"] = data.windows
        save_model_dir(model, tok, args.output, summary)
        run_.log_metrics({"final_loss": summary["final_loss"], "tokens_per_s": summary["tokens_per_s"],
                          "seconds": summary["seconds"], "parameters": n_params})
        run_.log_artifact(f"{args.output}/training_summary.json")
        run_.log_artifact(f"{args.output}/config.json")
    print(f"pretrain: {n_params/1e6:.2f}M parameters, final loss {summary['final_loss']:.3f}, "
          f"{summary['tokens_per_s']:.0f} tokens/s")
