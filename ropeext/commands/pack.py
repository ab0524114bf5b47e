"""ropeext pack: pack tokenized documents into windows of one layout (Parquet + stats JSON)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ropeext import tracking
from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args, seed_of
from ropeext.config import validate_config
from ropeext.data.pack_stream import plan_groups, read_domain_index, token_map, write_windows
from ropeext.data.packing import (
    INTERLEAVED,
    LAYOUTS,
    TAGGED,
    Tags,
    check_interleave,
    check_window,
    concat_window_stats,
    plan_packing,
    render_tag,
    stats_from_windows,
)
from ropeext.data.tokenizer import anchor_token_id, load_tokenizer
from ropeext.errors import RopeextError
from ropeext.io import write_json

COMMAND = ("pack",)
HELP = (
    "pack tokenized documents into fixed windows (full, intra_doc, intra_doc_reset, intra_doc_interleaved, "
    "anchor, anchor_tag, anchor_interleaved)"
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--tokens",
        required=True,
        metavar="PARQUET",
        help="tokenized documents: one row per document, column input_ids (list<int32>)",
    )
    parser.add_argument(
        "--tokenizer", required=True, metavar="DIR", help="tokenizer directory or hub id (for the anchor)"
    )
    parser.add_argument("--window", required=True, type=int, metavar="W", help="tokens per window (> 2)")
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="packing layout")
    parser.add_argument("--output", required=True, metavar="PARQUET", help="packed windows")
    parser.add_argument(
        "--stats",
        default=None,
        metavar="JSON",
        help="statistics (default: OUTPUT with .stats.json in place of .parquet)",
    )
    parser.add_argument("--seed", type=int, help="seed of the document order (default: the config's seed)")
    parser.add_argument(
        "--pad-last",
        action="store_true",
        help="pad the last partial window (padding has label -100, never attended) instead of dropping it",
    )
    parser.add_argument(
        "--no-mask-boundary-labels",
        action="store_true",
        help="keep the label that crosses a document boundary (as the AnchorAttention release does)",
    )
    add_config_args(parser, required=False)  # packing.tag_template and packing.interleave (schema defaults without it)
    add_tracking_args(parser)


def document_tags(domains: list, template: str, tokenizer):
    """Each distinct domain's tag (rendered from ``template``, tokenized without special tokens)
    and, per domain, its text and token ids; returns (Tags, {domain: {"text", "token_ids"}})."""
    names, index = np.unique(np.asarray(domains, dtype=object).astype(str), return_inverse=True)
    return domain_tags(names.tolist(), index, template, tokenizer)


def domain_tags(names: list[str], index, template: str, tokenizer):
    """``document_tags`` from the distinct domain names (sorted) and each document's index into them."""

    table, described = [], {}
    for name in names:
        text = render_tag(template, name)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise RopeextError(f"packing.tag_template {template!r} renders no tokens for domain {name!r}")
        table.append(np.asarray(ids, dtype=np.int64))
        described[name] = {"text": text, "token_ids": [int(i) for i in ids]}
    return Tags(np.asarray(index, dtype=np.int64), table), described


def packing_settings(config: dict | None) -> dict:
    """The ``packing`` section of the config, or the schema's defaults without one."""
    return (config or validate_config({}, source="schema defaults"))["packing"]


def write_packed(path: Path, columns: dict, layout: str) -> None:
    """Packed windows held in memory (tests, tools) as one row group: the file ``ropeext pack`` writes."""
    write_windows(path, [columns], layout, columns["input_ids"].shape[1])


def run(args) -> None:
    window = check_window(args.window)
    tokens_path, output = Path(args.tokens), Path(args.output)
    stats_path = Path(args.stats) if args.stats else output.with_name(output.stem + ".stats.json")
    config = config_from_args(args)
    args.seed = seed_of(args, config)
    tokenizer = load_tokenizer(args.tokenizer)
    anchor = anchor_token_id(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else anchor
    mask_boundary = not args.no_mask_boundary_labels
    settings = packing_settings(config)
    params = {
        "tokens": str(tokens_path),
        "tokenizer": str(args.tokenizer),
        "window": window,
        "layout": args.layout,
        "seed": args.seed,
        "pad_last": args.pad_last,
        "mask_boundary_labels": mask_boundary,
        "anchor_id": anchor,
        "pad_id": pad_id,
    }
    interleave = check_interleave(settings["interleave"]) if args.layout in INTERLEAVED else None
    if interleave is not None:
        params["interleave"] = interleave
    if args.layout in TAGGED:
        params["tag_template"] = settings["tag_template"]
    with (
        tracking.stage_run(
            "pack", config=config, params=params, variant=args.variant, enabled=not args.no_mlflow
        ) as run_,
        token_map(tokens_path, output) as tokens,
    ):
        run_.log_input(tokens_path, context="training", config=config)
        if tokens.min_id is not None and (tokens.min_id < 0 or tokens.max_id >= len(tokenizer)):
            raise RopeextError(
                f"{tokens_path}: token ids range over [{tokens.min_id}, {tokens.max_id}], outside the "
                f"tokenizer's vocabulary of {len(tokenizer)} ({args.tokenizer})"
            )
        documents = len(tokens.offsets) - 1
        tags = described = None
        if args.layout in TAGGED:
            names, index = read_domain_index(tokens_path, documents)
            tags, described = domain_tags(names, index, settings["tag_template"], tokenizer)
        t0 = time.perf_counter()
        plan = plan_packing(
            tokens.offsets,
            window,
            args.layout,
            anchor,
            args.seed,
            pad_last=args.pad_last,
            mask_boundary_labels=mask_boundary,
            pad_id=pad_id,
            tags=tags,
            interleave=interleave,
        )
        seconds = time.perf_counter() - t0
        info = plan.info
        if plan.windows == 0:
            raise RopeextError(
                f"{tokens_path}: no complete window of {window} tokens ({info.documents_kept} documents of more than "
                f"2 tokens, {info.tokens_kept + info.tokens_dropped_last} tokens); use a smaller --window or --pad-last"
            )
        timer, parts = {"seconds": seconds}, []
        write_windows(output, _timed(plan_groups(tokens, plan, parts), timer), args.layout, window)
        seconds = timer["seconds"]
        stats = stats_from_windows(concat_window_stats(parts, window), info)
        stats["totals"].update(
            {
                "layout": args.layout,
                "seed": args.seed,
                "pad_last": args.pad_last,
                "mask_boundary_labels": mask_boundary,
                "anchor_id": anchor,
                "pack_seconds": seconds,
                "tokens_per_second": info.tokens_kept / max(seconds, 1e-9),
            }
        )
        if interleave is not None:
            stats["interleave"] = interleave
        if described is not None:
            stats["tag_template"] = settings["tag_template"]
            counts = info.extra["documents_per_tag"]
            stats["tags"] = {name: {**d, "documents": int(n)} for (name, d), n in zip(described.items(), counts)}
        write_json(stats_path, stats)
        run_.log_metrics(
            {k: v for k, v in stats["totals"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        )
        run_.log_outputs(stats_path)
    t = stats["totals"]
    print(
        f"pack[{args.layout}]: {t['windows']} windows of {window} from {t['documents']} documents; "
        f"{t['frac_windows_crossing_boundary']:.0%} cross a boundary -> {output}"
    )


def _timed(groups, timer: dict):
    """``groups`` as they come, adding the time spent building them to ``timer["seconds"]`` (writing excluded)."""
    it = iter(groups)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            timer["seconds"] += time.perf_counter() - t0
            return
        timer["seconds"] += time.perf_counter() - t0
        yield item
        del item  # not held while the next one is built
