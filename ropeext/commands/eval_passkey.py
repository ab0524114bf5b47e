"""ropeext eval passkey: passkey retrieval over a grid of lengths x depths."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.io import write_json
from ropeext.errors import RopeextError

COMMAND = ("eval", "passkey")
HELP = "passkey retrieval accuracy over context lengths x key depths (metrics JSON, predictions JSONL, heat map)"

DEFAULTS = {
    "lengths": [256, 512, 1024, 2048],
    "depths": [0.0, 0.25, 0.5, 0.75, 1.0],
    "samples": 5,
    "digits": 5,
    "max_new_tokens": 12,
    "max_length": None,
}


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RopeextError(f"--lengths: expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RopeextError(f"--depths: expected comma-separated numbers in [0, 1], got {text!r}") from None


def add_arguments(parser) -> None:
    add_config_args(parser, required=False)
    parser.add_argument("--model", required=True, help="model directory (or hub id) to evaluate")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's)")
    parser.add_argument("--output-dir", required=True, help="folder for metrics.json, predictions.jsonl, heatmap.png")
    parser.add_argument("--lengths", default=None, help="comma-separated prompt lengths in model tokens "
                        f"(default: config eval.passkey.lengths or {DEFAULTS['lengths']})")
    parser.add_argument("--depths", default=None, help="comma-separated key depths in [0, 1] "
                        f"(default: {DEFAULTS['depths']})")
    parser.add_argument("--samples", type=int, default=None, help=f"samples per cell (default {DEFAULTS['samples']})")
    parser.add_argument("--digits", type=int, default=None, help=f"digits of the key (default {DEFAULTS['digits']})")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help=f"greedy tokens generated (default {DEFAULTS['max_new_tokens']})")
    parser.add_argument("--max-length", type=int, default=None,
                        help="refuse lengths whose prompt + generation exceed this many tokens "
                             "(default: no limit; lengths past max_position_embeddings are allowed)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the keys (default: config seed or 0)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tracking_args(parser)


def resolve_settings(args, config: dict | None) -> dict:
    section = ((config or {}).get("eval") or {}).get("passkey") or {}
    s = {k: section.get(k, v) for k, v in DEFAULTS.items()}
    if args.lengths is not None:
        s["lengths"] = _ints(args.lengths)
    if args.depths is not None:
        s["depths"] = _floats(args.depths)
    for name in ("samples", "digits", "max_new_tokens", "max_length"):
        if getattr(args, name) is not None:
            s[name] = getattr(args, name)
    s["seed"] = args.seed if args.seed is not None else int((config or {}).get("seed", 0))
    if not 1 <= int(s["digits"]) <= 18:
        raise RopeextError(f"--digits: {s['digits']} must be between 1 and 18")
    if int(s["max_new_tokens"]) <= 0:
        raise RopeextError(f"--max-new-tokens: {s['max_new_tokens']} must be positive")
    return s


def run(args) -> None:
    import torch
    from tqdm import tqdm

    from ropeext import tracking
    from ropeext.data.tokenizer import load_tokenizer
    from ropeext.eval import passkey
    from ropeext.eval.common import ResumableJsonl, greedy_generate
    from ropeext.modeling import load_causal_lm

    config = config_from_args(args)
    s = resolve_settings(args, config)
    passkey.check_grid(s["lengths"], s["depths"], s["samples"], s["max_length"], s["max_new_tokens"])
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    variant = args.variant or Path(str(args.model).rstrip("/")).name

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    dtype = getattr(torch, args.dtype)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_causal_lm(args.model, dtype=dtype).to(device).eval()
    window = int(getattr(model.config, "max_position_embeddings", 0) or 0)

    def generate(ids: list[int]) -> str:
        return greedy_generate(model, tokenizer, ids, s["max_new_tokens"])

    params = {"eval.passkey": s, "model": str(args.model), "dtype": args.dtype, "device": device}
    with tracking.stage_run("eval_passkey", config=config, params=params, variant=variant,
                            enabled=not args.no_mlflow) as run_:
        store = ResumableJsonl(out / "predictions.jsonl", key="_id")
        total = len(s["lengths"]) * len(s["depths"]) * s["samples"]
        with tqdm(total=total, desc="passkey", unit="sample", disable=args.no_progress) as bar:
            records = passkey.evaluate(generate, tokenizer, lengths=s["lengths"], depths=s["depths"],
                                       samples=s["samples"], seed=s["seed"], digits=s["digits"],
                                       store=store, progress=bar)
        summary = passkey.summarize(records, s["lengths"], s["depths"])
        metrics = {
            "task": "passkey", "variant": variant, "model": str(args.model),
            "max_position_embeddings": window, **{k: s[k] for k in DEFAULTS}, "seed": s["seed"],
            **summary,
        }
        write_json(out / "metrics.json", metrics)
        passkey.plot_heatmap(metrics, out / "heatmap.png", title=f"passkey: {variant}")
        run_.log_metrics({"passkey.accuracy": summary["accuracy"]}
                         | {f"passkey.accuracy.L{L}": v for L, v in summary["accuracy_by_length"].items()})
        run_.log_outputs(out)
        run_.log_artifact(out / "predictions.jsonl")
    by_len = ", ".join(f"{L}: {v:.2f}" for L, v in summary["accuracy_by_length"].items())
    print(f"passkey {variant}: accuracy {summary['accuracy']:.3f} ({by_len}) -> {out}")
