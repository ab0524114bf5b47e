"""ropeext tokenizer: train (or load) the tokenizer and tokenize every split to Parquet."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.io import write_json

COMMAND = ("tokenizer",)
HELP = "train a byte-level BPE on the train split (or load tokenizer.path) and tokenize all splits"


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument("--corpus-dir", required=True, help="output folder of `ropeext corpus`")
    parser.add_argument("--tokenizer-dir", required=True, help="where to save the HF tokenizer")
    parser.add_argument("--tokens-dir", required=True, help="where to write {split}.parquet token ids")
    add_tracking_args(parser)


def run(args) -> None:
    import time

    from ropeext import tracking
    from ropeext.data.corpus import SPLITS, read_split
    from ropeext.data.tokenizer import load_tokenizer, train_bpe
    from ropeext.data.tokens import tokenize_documents, write_tokens

    config = config_from_args(args)
    tcfg = config["tokenizer"]
    corpus = Path(args.corpus_dir)
    with tracking.stage_run("tokenizer", config=config, params={"tokenizer": tcfg},
                            variant=args.variant, enabled=not args.no_mlflow) as run_:
        splits = {s: read_split(corpus / f"{s}.parquet") for s in SPLITS}
        t0 = time.perf_counter()
        if tcfg.get("path"):
            tok = load_tokenizer(tcfg["path"])
        else:
            tok = train_bpe((d.text for d in splits["train"]), vocab_size=tcfg["vocab_size"])
        train_s = time.perf_counter() - t0
        tok.save_pretrained(args.tokenizer_dir)
        stats = {"vocab_size": len(tok), "train_seconds": train_s, "bos_token_id": tok.bos_token_id,
                 "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
        out = Path(args.tokens_dir)
        out.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            ids = tokenize_documents(tok, [d.text for d in splits[split]])
            write_tokens(out / f"{split}.parquet", ids, [d.id for d in splits[split]], [d.kind for d in splits[split]])
            lengths = sorted(len(x) for x in ids)
            stats[split] = {
                "documents": len(ids), "tokens": int(sum(lengths)),
                "median_length": lengths[len(lengths) // 2] if lengths else 0,
                "p90_length": lengths[int(len(lengths) * 0.9)] if lengths else 0,
                "max_length": lengths[-1] if lengths else 0,
            }
        write_json(out / "stats.json", stats)
        run_.log_metrics({"vocab_size": stats["vocab_size"], "train_seconds": train_s}
                         | {f"tokens.{s}": stats[s]["tokens"] for s in SPLITS})
        run_.log_outputs(out / "stats.json")
    print(f"tokenizer: vocab {len(tok)}; tokens " + ", ".join(f"{s}={stats[s]['tokens']}" for s in SPLITS))
