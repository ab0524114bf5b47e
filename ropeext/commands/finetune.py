"""ropeext finetune: extend a base model's RoPE with a scaling.json and fine-tune on packed windows."""

from __future__ import annotations

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args, read_json

COMMAND = ("finetune",)
HELP = "apply a RoPE extension (scaling.json) to a base model and fine-tune it at the target window"


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument("--base", required=True, help="base model: HF directory or hub id")
    parser.add_argument("--scaling", required=True, help="scaling.json from `ropeext solve`")
    parser.add_argument("--train", required=True, help="packed training windows (.parquet)")
    parser.add_argument("--layout", required=True, help="packing layout of --train")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_tracking_args(parser)


def run(args) -> None:
    import torch

    from ropeext import tracking
    from ropeext.data.tokenizer import load_tokenizer
    from ropeext.errors import RopeextError
    from ropeext.modeling import load_causal_lm
    from ropeext.train.data import load_packed
    from ropeext.train.io import save_model_dir
    from ropeext.train.loop import TrainSettings, train

    config = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    fcfg = config["finetune"]
    scaling = read_json(args.scaling, "scaling file")
    data = load_packed(args.train)
    if int(scaling["target_length"]) < data.window:
        raise RopeextError(f"{args.scaling}: target length {scaling['target_length']} is below the packing "
                           f"window {data.window} of {args.train}")
    model = load_causal_lm(args.base, scaling=scaling)
    tok = load_tokenizer(args.base)
    settings = TrainSettings(steps=fcfg["steps"], batch_size=fcfg["batch_size"], lr=fcfg["lr"],
                             warmup_steps=fcfg["warmup_steps"], weight_decay=fcfg["weight_decay"],
                             precision=fcfg["precision"], schedule="cosine", seed=config["seed"],
                             layout=args.layout, backend=config["attention"]["backend"])
    with tracking.stage_run("finetune", config=config,
                            params={"finetune": fcfg, "scaling": {k: scaling[k] for k in ("method", "target_length")},
                                    "layout": args.layout, "backend": settings.backend},
                            variant=args.variant, enabled=not args.no_mlflow) as run_:
        summary = train(model, data, settings, run=run_)
        summary["scaling"] = {"method": scaling["method"], "rope_parameters": scaling["rope_parameters"]}
        summary["train_windows"] = data.windows
        save_model_dir(model, tok, args.output, summary)
        run_.set_tags({"ropeext.method": scaling["method"], "ropeext.layout": args.layout})
        run_.log_metrics({"final_loss": summary["final_loss"], "tokens_per_s": summary["tokens_per_s"],
                          "seconds": summary["seconds"]})
        run_.log_artifact(f"{args.output}/training_summary.json")
        run_.log_artifact(f"{args.output}/config.json")
    print(f"finetune[{scaling['method']}/{args.layout}]: final loss {summary['final_loss']:.3f}, "
          f"{summary['tokens_per_s']:.0f} tokens/s")
