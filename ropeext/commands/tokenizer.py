"""ropeext tokenizer: train (or load) the tokenizer and tokenize every split to Parquet.

One job does it all (the default). For a corpus written in shards (``corpus.shards`` > 1) the work
can also be scattered and gathered:

    ropeext tokenizer --config C --corpus-dir D --tokenizer-dir T --tokens-dir K --train-only
    ropeext tokenizer --config C --corpus-dir D --tokenizer-dir T --tokens-dir K --split train --shard 3/8
    ropeext tokenizer --config C --tokenizer-dir T --tokens-dir K --gather

The gathered ``K/<split>.parquet`` and ``K/stats.json`` are the files the one-job run writes.
"""

from __future__ import annotations

import time
from pathlib import Path

from ropeext import tracking
from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.data.corpus import SPLITS, iter_texts
from ropeext.data.pieces import piece_batches
from ropeext.data.shards import gather, parse_shard, shard_file, shard_set, split_files
from ropeext.data.tokenizer import load_tokenizer, train_bpe
from ropeext.data.tokens import (
    TOKENIZE_PIECE_CHARS,
    TokenStats,
    available_cores,
    document_lengths,
    shard_budget,
    tokenize_split,
)
from ropeext.errors import RopeextError
from ropeext.io import read_json, write_json

COMMAND = ("tokenizer",)
HELP = "train a byte-level BPE on the train split (or load tokenizer.path) and tokenize all splits"
TRAINING_FILE = "training.json"  # beside the saved tokenizer: how long training took


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument(
        "--corpus-dir", default=None, help="output folder of `ropeext corpus` (not needed with --gather)"
    )
    parser.add_argument(
        "--tokenizer-dir", required=True, help="where to save (or, with --shard/--gather, read) the HF tokenizer"
    )
    parser.add_argument(
        "--tokens-dir", default=None, help="where to write {split}.parquet token ids (not needed with --train-only)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="worker processes for tokenization (default: every core this process may use)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--train-only", action="store_true", help="train (or load) and save the tokenizer; tokenize nothing"
    )
    mode.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="tokenize shard I of N of --split with the tokenizer saved in --tokenizer-dir",
    )
    mode.add_argument(
        "--gather",
        action="store_true",
        help="merge every split's shard token files into {split}.parquet and write stats.json",
    )
    parser.add_argument("--split", default=None, choices=["train", "validation", "test"], help="the split of --shard")
    add_tracking_args(parser)


def _need(args, *names: str) -> None:
    for name in names:
        if getattr(args, name.replace("-", "_")) is None:
            raise RopeextError(f"--{name} is required in this mode")


def _tokenizer_info(tok) -> dict:
    return {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def _train_or_load(tcfg: dict, corpus: Path, tokenizer_dir: str):
    t0 = time.perf_counter()
    if tcfg.get("path"):
        tok = load_tokenizer(tcfg["path"])
    else:
        # pieces cut at pre-token boundaries: the same word counts as whole documents, in bounded memory
        texts = piece_batches(iter_texts(split_files(corpus, "train")), TOKENIZE_PIECE_CHARS)
        tok = train_bpe(texts, vocab_size=tcfg["vocab_size"])
    seconds = time.perf_counter() - t0
    tok.save_pretrained(tokenizer_dir)
    write_json(Path(tokenizer_dir) / TRAINING_FILE, {"train_seconds": seconds, "trained": not tcfg.get("path")})
    return tok, seconds


def _gather_all(tokens: Path) -> dict:
    out = {}
    for split in SPLITS:
        files = shard_set(tokens, split) or split_files(tokens, split)  # shards win over an earlier gathered file
        shard_stats = [
            read_json(f.with_suffix(".stats.json"), "shard statistics") for f in files if f.name != f"{split}.parquet"
        ]
        if shard_stats:
            gather(files, tokens / f"{split}.parquet")
        lengths = TokenStats()
        lengths.add(document_lengths(tokens / f"{split}.parquet"))
        out[split] = lengths.summary()
        if shard_stats:
            out[split] |= {
                "max_tokens": shard_stats[0].get("max_tokens"),
                "capped": any(s.get("capped") for s in shard_stats),
            }
    return out


def run(args) -> None:
    config = config_from_args(args)
    threads = args.threads or available_cores()
    if threads < 1:
        raise RopeextError(f"--threads: must be >= 1, got {threads}")
    if args.split and not args.shard:
        raise RopeextError("--split is only used with --shard I/N")
    if args.shard:
        _need(args, "corpus-dir", "tokens-dir", "split")
        _run_shard(args, config, threads)
    elif args.gather:
        _need(args, "tokens-dir")
        _run_gather(args, config)
    else:
        _need(args, "corpus-dir", *(() if args.train_only else ("tokens-dir",)))
        _run_all(args, config, threads)


def _run_shard(args, config: dict, threads: int) -> None:
    index, count = parse_shard(args.shard)
    name = shard_file(args.split, index, count)
    corpus, tokens = Path(args.corpus_dir), Path(args.tokens_dir)
    params = {"tokenizer": config["tokenizer"], "shard": args.shard, "split": args.split, "threads": threads}
    variant = args.variant or f"{args.split}-{index}-of-{count}"
    with tracking.stage_run(
        "tokenizer", config=config, params=params, variant=variant, enabled=not args.no_mlflow
    ) as run_:
        run_.log_input(corpus / name, context="training", config=config)
        tok = load_tokenizer(args.tokenizer_dir)
        stats = tokenize_split(
            tok,
            [corpus / name],
            tokens / name,
            threads=threads,
            max_tokens=shard_budget(config["corpus"].get("max_tokens"), count),
        )
        write_json(tokens / name.replace(".parquet", ".stats.json"), stats)
        run_.log_metrics({"tokens": stats["tokens"], "documents": stats["documents"]})
    print(f"tokenizer: {args.split} shard {index}/{count}: {stats['tokens']} tokens -> {tokens / name}")


def _run_gather(args, config: dict) -> None:
    tokens = Path(args.tokens_dir)
    with tracking.stage_run(
        "tokenizer",
        config=config,
        params={"tokenizer": config["tokenizer"], "gather": True},
        variant=args.variant,
        enabled=not args.no_mlflow,
    ) as run_:
        tok = load_tokenizer(args.tokenizer_dir)
        training = Path(args.tokenizer_dir) / TRAINING_FILE
        stats = _tokenizer_info(tok) | {
            "train_seconds": read_json(training)["train_seconds"] if training.is_file() else None
        }
        stats |= _gather_all(tokens)
        write_json(tokens / "stats.json", stats)
        run_.log_metrics({f"tokens.{s}": stats[s]["tokens"] for s in SPLITS})
        run_.log_outputs(tokens / "stats.json")
    print("tokenizer: gathered; tokens " + ", ".join(f"{s}={stats[s]['tokens']}" for s in SPLITS))


def _run_all(args, config: dict, threads: int) -> None:
    corpus = Path(args.corpus_dir)
    params = {"tokenizer": config["tokenizer"], "threads": threads}
    with tracking.stage_run(
        "tokenizer", config=config, params=params, variant=args.variant, enabled=not args.no_mlflow
    ) as run_:
        run_.log_input(corpus, context="training", config=config)
        tok, train_s = _train_or_load(config["tokenizer"], corpus, args.tokenizer_dir)
        stats = _tokenizer_info(tok) | {"train_seconds": train_s}
        if args.train_only:
            run_.log_metrics({"vocab_size": stats["vocab_size"], "train_seconds": train_s})
            print(f"tokenizer: vocab {len(tok)} -> {args.tokenizer_dir}")
            return
        tokens = Path(args.tokens_dir)
        tokens.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            stats[split] = tokenize_split(
                tok,
                split_files(corpus, split),
                tokens / f"{split}.parquet",
                threads=threads,
                max_tokens=config["corpus"].get("max_tokens"),
            )
        write_json(tokens / "stats.json", stats)
        run_.log_metrics(
            {"vocab_size": stats["vocab_size"], "train_seconds": train_s}
            | {f"tokens.{s}": stats[s]["tokens"] for s in SPLITS}
        )
        run_.log_outputs(tokens / "stats.json")
    print(f"tokenizer: vocab {len(tok)}; tokens " + ", ".join(f"{s}={stats[s]['tokens']}" for s in SPLITS))
