"""ropeext analyze bf16: how far BF16 breaks RoPE's relative-position invariance in one model."""

from __future__ import annotations

from pathlib import Path

from ropeext import tracking
from ropeext.analysis.plots import write_plots
from ropeext.analysis.sequences import build_sequences, check_vocab, documents_from_parquet, documents_from_text
from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args, overlay
from ropeext.data.tokenizer import load_tokenizer
from ropeext.errors import RopeextError
from ropeext.io import write_json
from ropeext.modeling import load_model_config
from ropeext.runtime import model_window

COMMAND = ("analyze", "bf16")
HELP = "attention deviation under position shifts in bf16 vs fp32 vs a random bf16 copy (JSON + 3 plots)"

RESULT_NAME = "bf16_deviation.json"
SECTION = "analysis.bf16"  # the config section the options below are laid over
OPTIONS = (
    "length",
    "num_sequences",
    "deltas",
    "delta_ref",
    "logit_lengths",
    "chunk_size",
    "numeric_path",
    "settings",
    "seed",
)
LISTS = {"deltas": int, "logit_lengths": int, "settings": str}


def add_arguments(parser) -> None:
    add_config_args(parser, required=False)
    parser.add_argument("--model", required=True, help="model directory (or hub id)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--tokens",
        metavar="PARQUET",
        help="tokenized held-out documents (column input_ids), e.g. results/tokens/test.parquet",
    )
    source.add_argument("--text-file", metavar="TXT", help="plain text, tokenized with the model's tokenizer")
    parser.add_argument(
        "--output",
        "--output-dir",
        dest="output",
        required=True,
        metavar="DIR",
        help=f"folder for {RESULT_NAME} and the three PNG plots",
    )
    parser.add_argument(
        "--length", type=int, help="sequence length T (default: analysis.bf16.length; the model's window if shorter)"
    )
    parser.add_argument(
        "--num-sequences", type=int, help="sequences to average over (default: analysis.bf16.num_sequences)"
    )
    parser.add_argument(
        "--deltas", help="comma-separated shifts delta1 compared with the reference (default: analysis.bf16.deltas)"
    )
    parser.add_argument("--delta-ref", type=int, help="reference shift delta2 (default: analysis.bf16.delta_ref)")
    parser.add_argument(
        "--logit-lengths",
        help="comma-separated lengths T for D_logit (default: analysis.bf16.logit_lengths; null = "
        "64,128,... up to the model's window)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        help="query rows per block of the attention comparison (default: analysis.bf16.chunk_size)",
    )
    parser.add_argument(
        "--numeric-path",
        choices=["fa2-like", "eager-bf16"],
        help="fa2-like: bf16 q,k with fp32 accumulation; eager-bf16: logits rounded to bf16 "
        "(default: analysis.bf16.numeric_path)",
    )
    parser.add_argument(
        "--settings", help="comma-separated among bf16, fp32, random-bf16, fp64-exact (default: analysis.bf16.settings)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the random-init copy and of the order documents are picked in (default: analysis.bf16.seed)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    add_tracking_args(parser)


def resolve_settings(args, config: dict) -> dict:
    """The config's ``analysis.bf16`` section with the command line laid over it."""
    return overlay(config, SECTION, args, OPTIONS, lists=LISTS)


def _bos_id(model_dir: str, tokenizer=None) -> int:
    # heavy: transformers loads only when a model runs
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    for candidate in (
        getattr(config, "bos_token_id", None),
        getattr(tokenizer, "bos_token_id", None),
        getattr(config, "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    raise RopeextError(
        f"{model_dir}: the model config names no bos_token_id (nor eos_token_id) to start sequences with"
    )


def run(args) -> None:
    # heavy: torch loads only when a model runs
    import torch

    # heavy: ropeext.analysis.bf16 imports torch at its top, and --help imports every command
    from ropeext.analysis.bf16 import Spec, analyze, fit_lengths, jsonable

    config = config_from_args(args)
    opts = resolve_settings(args, config)
    if opts["num_sequences"] < 1:
        raise RopeextError(f"--num-sequences: must be positive, got {opts['num_sequences']}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = str(args.model)
    model_config = load_model_config(model_dir, "--model")

    window = model_window(model_config)
    length, logit_lengths, notes = fit_lengths(opts["length"], window, opts["logit_lengths"])
    spec = Spec(
        length=length,
        deltas=list(opts["deltas"]),
        delta_ref=opts["delta_ref"],
        logit_lengths=logit_lengths,
        path=opts["numeric_path"],
        chunk_size=opts["chunk_size"],
    )
    settings = list(opts["settings"])
    rope_type = (getattr(model_config, "rope_parameters", None) or {}).get("rope_type")
    if rope_type == "dynamic":
        notes.append(
            "rope_type 'dynamic' rescales frequencies with the largest position, so a shift also "
            "changes the frequencies: deviations are not due to precision alone"
        )

    if args.tokens:
        source = args.tokens
        docs = documents_from_parquet(args.tokens)
        bos = _bos_id(model_dir)
    else:
        source = args.text_file
        tokenizer = load_tokenizer(model_dir)
        docs = documents_from_text(args.text_file, tokenizer)
        bos = _bos_id(model_dir, tokenizer)
    sequences, origin = build_sequences(
        docs, length=spec.max_length, count=opts["num_sequences"], bos_id=bos, seed=opts["seed"], source=source
    )
    check_vocab(sequences, int(model_config.vocab_size), source)
    for note in notes:
        print(f"note: {note}")

    out = Path(args.output)
    params = {
        "model": model_dir,
        "source": source,
        "length": spec.length,
        "num_sequences": opts["num_sequences"],
        "deltas": spec.deltas,
        "delta_ref": spec.delta_ref,
        "logit_lengths": spec.logit_lengths,
        "chunk_size": spec.chunk_size,
        "numeric_path": spec.path,
        "forward_attention": spec.forward_attention,
        "settings": settings,
        "seed": opts["seed"],
    }
    with tracking.stage_run(
        "analyze_bf16", config=config, params=params, variant=args.variant, enabled=not args.no_mlflow
    ) as run_:
        run_.log_input(source, context="evaluation", config=config)
        result = analyze(model_dir, sequences, spec, settings=settings, seed=opts["seed"], device=args.device)
        result.update(
            {
                "variant": args.variant,
                "source": str(source),
                "sequences": origin,
                "window": window,
                "length_requested": opts["length"],
                "notes": notes,
                "seed": opts["seed"],
            }
        )
        out.mkdir(parents=True, exist_ok=True)
        write_plots(result, out)
        write_json(out / RESULT_NAME, jsonable(result))
        run_.set_tags({"analysis.numeric_path": spec.path})
        run_.log_metrics(result["summary"])
        for name, res in result["settings"].items():
            for delta, value in zip(res["shift"]["delta1"], res["shift"]["column"]["mean"]):
                run_.log_metrics({f"{name}.D_vs_delta": value}, step=int(delta))
            if res.get("logits"):
                for t, first, mid in zip(res["logits"]["lengths"], res["logits"]["first"], res["logits"]["mid"]):
                    run_.log_metrics(
                        {f"{name}.D_logit_first_vs_T": first, f"{name}.D_logit_mid_vs_T": mid}, step=int(t)
                    )
        run_.log_outputs(out)
    summary = result["summary"]
    print(f"analyze bf16 ({spec.path}, T={spec.length}, {opts['num_sequences']} sequences) -> {out}")
    for key, value in summary.items():
        print(f"  {key}: {value:.4g}")
