"""ropeext eval ppl: perplexity by context length on held-out documents."""

from __future__ import annotations

from pathlib import Path

from ropeext import tracking
from ropeext.commands._common import (
    add_config_args,
    add_run_args,
    add_tracking_args,
    config_from_args,
    overlay,
    precision_of,
)
from ropeext.data.tokens import document_ids, read_tokens
from ropeext.errors import RopeextError
from ropeext.eval.ppl import perplexity_by_length
from ropeext.io import read_json, write_json
from ropeext.modeling import load_causal_lm
from ropeext.report.plots import plot_lines
from ropeext.runtime import precision_params, resolve_device

COMMAND = ("eval", "ppl")
HELP = "perplexity at a list of context lengths (sliding window with a stride)"

SECTION = "eval.ppl"  # the config section the options below are laid over
OPTIONS = ("lengths", "stride", "max_tokens", "windows_per_document", "exclude")


def add_arguments(parser) -> None:
    add_config_args(parser, required=False)
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--scaling", default=None, help="apply this scaling.json before evaluating (no fine-tuning)")
    parser.add_argument("--tokens", required=True, help="held-out tokenized documents (.parquet)")
    parser.add_argument(
        "--lengths", help="comma-separated context lengths, e.g. 256,512,1024 (default: eval.ppl.lengths)"
    )
    parser.add_argument("--stride", type=int, help="scored tokens per window (default: eval.ppl.stride)")
    parser.add_argument(
        "--max-tokens", type=int, help="stop after this many scored tokens (default: eval.ppl.max_tokens)"
    )
    parser.add_argument(
        "--windows-per-document",
        type=int,
        help="at most this many windows from one document (default: eval.ppl.windows_per_document)",
    )
    parser.add_argument(
        "--exclude",
        help="comma-separated globs of document ids not to score, e.g. 'encodings/*,keyword.py' "
        "(default: eval.ppl.exclude)",
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--threads", type=int, default=None)
    add_run_args(parser)
    add_tracking_args(parser)


def run(args) -> None:
    # heavy: torch loads only when a model runs
    import torch

    config = config_from_args(args)
    s = overlay(config, SECTION, args, OPTIONS, lists={"lengths": int, "exclude": str})
    lengths, stride, max_tokens = s["lengths"], s["stride"], s["max_tokens"]
    if min(lengths) < 2:
        raise RopeextError(f"--lengths: every length must be >= 2, got {lengths}")
    if args.threads:
        torch.set_num_threads(args.threads)
    scaling = read_json(args.scaling, "scaling file") if args.scaling else None
    out = Path(args.output_dir)
    device = resolve_device(args.device)
    precision = precision_of(args, config, device)
    with tracking.stage_run(
        "eval_ppl",
        config=config,
        params={
            "model": args.model,
            **({"scaling_file": args.scaling} if args.scaling else {}),
            "lengths": lengths,
            "stride": stride,
            "max_tokens": max_tokens,
            "windows_per_document": s["windows_per_document"],
            "exclude": s["exclude"],
            "device": device,
            **precision_params(precision),
        },
        variant=args.variant,
        enabled=not args.no_mlflow,
        evaluates=args.model,
        evaluates_scaling=scaling,
    ) as run_:
        run_.log_input(args.tokens, context="evaluation", config=config)
        model = load_causal_lm(args.model, scaling=scaling, dtype=getattr(torch, precision["dtype"])).to(device)
        docs = read_tokens(args.tokens)
        result = perplexity_by_length(
            model,
            docs,
            lengths,
            stride,
            max_tokens,
            s["windows_per_document"],
            progress=not args.no_progress,
            doc_ids=document_ids(args.tokens),
            exclude=s["exclude"],
        )
        result["precision"] = precision
        result["variant"] = args.variant
        result["model"] = str(args.model)
        result["rope_parameters"] = dict(model.config.rope_parameters or {})
        out.mkdir(parents=True, exist_ok=True)
        label = args.variant or Path(str(args.model)).name
        plot_lines(
            {label: (result["lengths"], [result["ppl"][str(c)] for c in result["lengths"]])},
            out / "ppl.png",
            xlabel="context length (tokens)",
            ylabel="perplexity",
            logx=True,
            title=f"perplexity by context length: {args.variant or args.model}",
        )
        write_json(out / "metrics.json", result)
        run_.log_metrics({f"ppl_at_{c}": v for c, v in result["ppl"].items()})
        for c, v in result["ppl"].items():  # one curve against context length in MLflow's chart view
            run_.log_metrics({"ppl": v}, step=int(c))
        run_.log_outputs(out)
    print("ppl: " + ", ".join(f"{c}={v:.2f}" for c, v in result["ppl"].items()))
