"""ropeext pack: pack tokenized documents into windows of one layout (Parquet + stats JSON)."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args, seed_of
from ropeext.io import write_json
from ropeext.errors import RopeextError

COMMAND = ("pack",)
HELP = ("pack tokenized documents into fixed windows (full, intra_doc, intra_doc_reset, intra_doc_interleaved, "
        "anchor, anchor_tag, anchor_interleaved)")


def add_arguments(parser) -> None:
    from ropeext.data.packing import LAYOUTS

    parser.add_argument("--tokens", required=True, metavar="PARQUET",
                        help="tokenized documents: one row per document, column input_ids (list<int32>)")
    parser.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory or hub id (for the anchor)")
    parser.add_argument("--window", required=True, type=int, metavar="W", help="tokens per window (> 2)")
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="packing layout")
    parser.add_argument("--output", required=True, metavar="PARQUET", help="packed windows")
    parser.add_argument("--stats", default=None, metavar="JSON",
                        help="statistics (default: OUTPUT with .stats.json in place of .parquet)")
    parser.add_argument("--seed", type=int, help="seed of the document order (default: the config's seed)")
    parser.add_argument("--pad-last", action="store_true",
                        help="pad the last partial window (padding has label -100, never attended) instead of dropping it")
    parser.add_argument("--no-mask-boundary-labels", action="store_true",
                        help="keep the label that crosses a document boundary (as the AnchorAttention release does)")
    add_config_args(parser, required=False)  # packing.tag_template and packing.interleave (schema defaults without it)
    add_tracking_args(parser)


def read_documents(path: Path):
    """Flat token array and document offsets from a Parquet file of per-document token lists."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise RopeextError(f"tokenized documents not found: {path}")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable Parquet
        raise RopeextError(f"{path}: not a readable Parquet file ({exc})") from None
    if "input_ids" not in schema.names:
        raise RopeextError(f"{path}: input without document boundaries: no `input_ids` column "
                           f"(columns: {', '.join(schema.names)}); expected one row per document, input_ids list<int32>")
    field = schema.field("input_ids")
    if not (pa.types.is_list(field.type) or pa.types.is_large_list(field.type)) \
            or not pa.types.is_integer(field.type.value_type):
        raise RopeextError(f"{path}: input without document boundaries: `input_ids` is {field.type}, expected "
                           "a per-document list of token ids (list<int32>)")
    column = pq.read_table(path, columns=["input_ids"]).column("input_ids").combine_chunks()
    if column.null_count:
        raise RopeextError(f"{path}: `input_ids` has {column.null_count} null rows")
    offsets = np.asarray(column.offsets, dtype=np.int64)
    values = np.asarray(column.values.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = values[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]


def read_domains(path: Path, documents: int):
    """The ``domain`` column (one string per document) that ``anchor_tag`` renders tags from."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if "domain" not in schema.names:
        raise RopeextError(
            f"{path}: layout anchor_tag needs a `domain` column (one string per document: its source, e.g. "
            f"Wikipedia), written by the tokenizer stage (`ropeext tokenizer`, rule tokenizer); columns present: "
            f"{', '.join(schema.names)}. Re-run the tokenizer stage to produce it.")
    field = schema.field("domain")
    if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
            or pa.types.is_dictionary(field.type)):
        raise RopeextError(f"{path}: `domain` is {field.type}, expected a string per document")
    column = pq.read_table(path, columns=["domain"]).column("domain")
    if column.null_count:
        raise RopeextError(f"{path}: `domain` has {column.null_count} null rows; every document needs a domain")
    domains = column.to_pylist()
    if len(domains) != documents:
        raise RopeextError(f"{path}: {len(domains)} domains for {documents} documents")
    return domains


def document_tags(domains: list, template: str, tokenizer):
    """Each distinct domain's tag (rendered from ``template``, tokenized without special tokens)
    and, per domain, its text and token ids; returns (Tags, {domain: {"text", "token_ids"}})."""
    import numpy as np

    from ropeext.data.packing import Tags, render_tag

    names, index = np.unique(np.asarray(domains, dtype=object).astype(str), return_inverse=True)
    table, described = [], {}
    for name in names.tolist():
        text = render_tag(template, name)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise RopeextError(f"packing.tag_template {template!r} renders no tokens for domain {name!r}")
        table.append(np.asarray(ids, dtype=np.int64))
        described[name] = {"text": text, "token_ids": [int(i) for i in ids]}
    return Tags(index.astype(np.int64), table), described


def packing_settings(config: dict | None) -> dict:
    """The ``packing`` section of the config, or the schema's defaults without one."""
    from ropeext.config import validate_config

    return (config or validate_config({}, source="schema defaults"))["packing"]


def write_packed(path: Path, columns: dict, layout: str) -> None:
    """Each column as list<int32> of length W per row, the layout and window in the schema metadata
    (``ropeext.data.packed_file``); written to a temp name, then renamed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ropeext.data.packed_file import packed_metadata
    from ropeext.data.packing import COLUMNS

    n, W = columns["input_ids"].shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * W, type=pa.int32())
    arrays = {name: pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(columns[name], dtype=np.int32).reshape(-1)))
              for name in COLUMNS}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(pa.table(arrays).replace_schema_metadata(packed_metadata(layout, W)), tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run(args) -> None:
    import time

    from ropeext import tracking
    from ropeext.data.packing import INTERLEAVED, TAGGED, check_interleave, check_window, pack_flat, packing_stats
    from ropeext.data.tokenizer import anchor_token_id, load_tokenizer

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
    params = {"tokens": str(tokens_path), "tokenizer": str(args.tokenizer), "window": window, "layout": args.layout,
              "seed": args.seed, "pad_last": args.pad_last, "mask_boundary_labels": mask_boundary,
              "anchor_id": anchor, "pad_id": pad_id}
    interleave = check_interleave(settings["interleave"]) if args.layout in INTERLEAVED else None
    if interleave is not None:
        params["interleave"] = interleave
    if args.layout in TAGGED:
        params["tag_template"] = settings["tag_template"]
    with tracking.stage_run("pack", config=config, params=params, variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        values, offsets = read_documents(tokens_path)
        if len(values) and (values.min() < 0 or values.max() >= len(tokenizer)):
            raise RopeextError(f"{tokens_path}: token ids range over [{values.min()}, {values.max()}], outside the "
                               f"tokenizer's vocabulary of {len(tokenizer)} ({args.tokenizer})")
        tags = described = None
        if args.layout in TAGGED:
            tags, described = document_tags(read_domains(tokens_path, len(offsets) - 1), settings["tag_template"],
                                            tokenizer)
        t0 = time.perf_counter()
        columns, info = pack_flat(values, offsets, window, args.layout, anchor, args.seed, pad_last=args.pad_last,
                                  mask_boundary_labels=mask_boundary, pad_id=pad_id, tags=tags, interleave=interleave)
        seconds = time.perf_counter() - t0
        n = columns["input_ids"].shape[0]
        if n == 0:
            raise RopeextError(
                f"{tokens_path}: no complete window of {window} tokens ({info.documents_kept} documents of more than "
                f"2 tokens, {info.tokens_kept + info.tokens_dropped_last} tokens); use a smaller --window or --pad-last")
        stats = packing_stats(columns, info)
        stats["totals"].update({"layout": args.layout, "seed": args.seed, "pad_last": args.pad_last,
                                "mask_boundary_labels": mask_boundary, "anchor_id": anchor,
                                "pack_seconds": seconds, "tokens_per_second": info.tokens_kept / max(seconds, 1e-9)})
        if interleave is not None:
            stats["interleave"] = interleave
        if described is not None:
            stats["tag_template"] = settings["tag_template"]
            counts = info.extra["documents_per_tag"]
            stats["tags"] = {name: {**d, "documents": int(n)} for (name, d), n in zip(described.items(), counts)}
        write_packed(output, columns, args.layout)
        write_json(stats_path, stats)
        run_.log_metrics({k: v for k, v in stats["totals"].items() if isinstance(v, (int, float))
                          and not isinstance(v, bool)})
        run_.log_outputs(stats_path)
    t = stats["totals"]
    print(f"pack[{args.layout}]: {t['windows']} windows of {window} from {t['documents']} documents; "
          f"{t['frac_windows_crossing_boundary']:.0%} cross a boundary -> {output}")
