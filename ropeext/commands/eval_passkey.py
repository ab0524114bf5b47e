"""ropeext eval passkey: passkey retrieval over a grid of lengths x depths."""

from __future__ import annotations

from pathlib import Path

from ropeext import tracking
from ropeext.commands._common import (
    add_eval_args,
    add_run_args,
    add_tracking_args,
    config_from_args,
    overlay,
    precision_of,
    seed_of,
    variant_of,
)
from ropeext.data.tokenizer import load_tokenizer
from ropeext.errors import RopeextError
from ropeext.eval import passkey
from ropeext.eval.common import ResumableJsonl, greedy_generate
from ropeext.io import write_json
from ropeext.modeling import load_causal_lm
from ropeext.runtime import model_window, precision_params, resolve_device

COMMAND = ("eval", "passkey")
HELP = "passkey retrieval accuracy over context lengths x key depths (metrics JSON, predictions JSONL, heat map)"

SECTION = "eval.passkey"  # the config section the options below are laid over
OPTIONS = ("lengths", "depths", "samples", "digits", "max_new_tokens", "max_length")


def add_arguments(parser) -> None:
    add_eval_args(parser, "metrics.json, predictions.jsonl, heatmap.png")
    parser.add_argument(
        "--lengths", help="comma-separated prompt lengths in model tokens (default: eval.passkey.lengths)"
    )
    parser.add_argument("--depths", help="comma-separated key depths in [0, 1] (default: eval.passkey.depths)")
    parser.add_argument("--samples", type=int, help="samples per cell (default: eval.passkey.samples)")
    parser.add_argument("--digits", type=int, help="digits of the key (default: eval.passkey.digits)")
    parser.add_argument(
        "--max-new-tokens", type=int, help="greedy tokens generated (default: eval.passkey.max_new_tokens)"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        help="refuse lengths whose prompt + generation exceed this many tokens "
        "(default: eval.passkey.max_length; null = no limit, lengths past "
        "max_position_embeddings are allowed)",
    )
    add_run_args(parser, seed="seed of the keys")
    add_tracking_args(parser)


def resolve_settings(args, config: dict) -> dict:
    s = overlay(config, SECTION, args, OPTIONS, lists={"lengths": int, "depths": float})
    s["seed"] = seed_of(args, config)
    s["depths"] = [float(d) for d in s["depths"]]
    if not 1 <= int(s["digits"]) <= 18:
        raise RopeextError(f"--digits: {s['digits']} must be between 1 and 18")
    if int(s["max_new_tokens"]) <= 0:
        raise RopeextError(f"--max-new-tokens: {s['max_new_tokens']} must be positive")
    return s


def run(args) -> None:
    # heavy: torch loads only when a model runs
    import torch

    # heavy: tqdm (with asyncio) adds ~0.1 s to --help and the workflow parse; only a run draws a bar
    from tqdm import tqdm

    config = config_from_args(args)
    s = resolve_settings(args, config)
    passkey.check_grid(s["lengths"], s["depths"], s["samples"], s["max_length"], s["max_new_tokens"])
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    variant = variant_of(args)

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    device = resolve_device(args.device)
    precision = precision_of(args, config, device)
    model = load_causal_lm(args.model, dtype=getattr(torch, precision["dtype"])).to(device).eval()
    window = model_window(model.config) or 0

    def generate(ids: list[int]) -> str:
        return greedy_generate(model, tokenizer, ids, s["max_new_tokens"])

    params = {"eval.passkey": s, "model": str(args.model), **precision_params(precision), "device": device}
    with tracking.stage_run(
        "eval_passkey", config=config, params=params, variant=variant, enabled=not args.no_mlflow
    ) as run_:
        store = ResumableJsonl(out / "predictions.jsonl", key="_id")
        total = len(s["lengths"]) * len(s["depths"]) * s["samples"]
        with tqdm(total=total, desc="passkey", unit="sample", disable=args.no_progress) as bar:
            records = passkey.evaluate(
                generate,
                tokenizer,
                lengths=s["lengths"],
                depths=s["depths"],
                samples=s["samples"],
                seed=s["seed"],
                digits=s["digits"],
                store=store,
                progress=bar,
            )
        summary = passkey.summarize(records, s["lengths"], s["depths"])
        metrics = {
            "task": "passkey",
            "variant": variant,
            "model": str(args.model),
            "max_position_embeddings": window,
            **{k: s[k] for k in OPTIONS},
            "seed": s["seed"],
            "precision": precision,
            **summary,
        }
        write_json(out / "metrics.json", metrics)
        passkey.plot_heatmap(metrics, out / "heatmap.png", title=f"passkey: {variant}")
        run_.log_metrics(
            {"passkey.accuracy": summary["accuracy"]}
            | {f"passkey.accuracy_at_{L}": v for L, v in summary["accuracy_by_length"].items()}
        )
        for L, v in summary["accuracy_by_length"].items():  # one curve against context length
            run_.log_metrics({"passkey.accuracy_by_length": v}, step=int(L))
        run_.log_outputs(out)
        run_.log_artifact(out / "predictions.jsonl")
    by_len = ", ".join(f"{L}: {v:.2f}" for L, v in summary["accuracy_by_length"].items())
    print(f"passkey {variant}: accuracy {summary['accuracy']:.3f} ({by_len}) -> {out}")
