"""Arguments and helpers shared by the stage commands.

A command parses its options, resolves them against the validated config and calls one library
function. Every default lives in the config schema: an option left out takes the config's value
(the schema's default when no ``--config`` is given), an option given on the command line wins.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Iterable

from ropeext.config import load_config, parse_sets
from ropeext.errors import RopeextError
from ropeext.io import is_hub_id
from ropeext.runtime import EVAL_DTYPES, eval_precision


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--config",
        required=required,
        metavar="YAML",
        help="pipeline config (validated against workflow/schemas/config.schema.yaml)"
        + ("" if required else "; without one, the schema's defaults apply"),
    )


def add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default=None, help="variant name recorded with the MLflow run")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")


def add_training_args(parser: argparse.ArgumentParser, section: str, example: str) -> None:
    """Output, threads, ``--set`` and ``--no-resume``: what pretrain and finetune share."""
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="model directory to write (checkpoints: OUTPUT.checkpoints)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one {section} setting, e.g. {example} (repeatable)",
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="ignore existing checkpoints in OUTPUT.checkpoints and start from step 0",
    )


def add_eval_args(parser: argparse.ArgumentParser, outputs: str) -> None:
    """Config, model, tokenizer and output folder: how every evaluation starts."""
    add_config_args(parser, required=False)
    parser.add_argument("--model", required=True, help="model directory (or hub id) to evaluate")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's)")
    parser.add_argument("--output-dir", required=True, help=f"folder for {outputs}")


def add_run_args(parser, seed: str | None = None) -> None:
    """Where a model runs (and, when ``seed`` says what it seeds, the seed): what every evaluation shares."""
    if seed:
        parser.add_argument("--seed", type=int, help=f"{seed} (default: the config's seed)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=EVAL_DTYPES,
        help="precision of the forward passes; auto: bfloat16 where the device computes it natively "
        "(default: eval.dtype)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def precision_of(args, config: dict, device: str) -> dict:
    """The precision an evaluation runs in on ``device`` (resolved): ``--dtype`` when given, else ``eval.dtype``,
    with ``auto`` decided by the device (``ropeext.runtime.choose_eval_dtype``)."""
    return eval_precision(args.dtype or config["eval"]["dtype"], device)


def seed_of(args, config: dict) -> int:
    """``--seed`` when given, else the config's ``seed``."""
    return config["seed"] if args.seed is None else args.seed


def variant_of(args) -> str:
    """``--variant`` when given, else the model folder's name."""
    return args.variant or Path(str(args.model).rstrip("/")).name


def check_model_path(model: str) -> str:
    """A model must be a local directory or look like a hub id (org/name)."""
    if not Path(str(model)).exists() and not is_hub_id(model):
        raise RopeextError(f"model not found: {model} (expected a model directory or a hub id like org/name)")
    return str(model)


def config_from_args(args, section: str | None = None) -> dict:
    """The resolved config: ``--config`` (or the schema's defaults alone), with ``--recipe`` and the
    ``--set KEY=VALUE`` options of ``section`` applied."""
    overrides = parse_sets(getattr(args, "overrides", None), section) if section else None
    return load_config(getattr(args, "config", None), overrides, recipe=getattr(args, "recipe", None))


def overlay(
    config: dict, section: str, args, options: dict[str, str] | Iterable[str], lists: dict[str, type] | None = None
) -> dict:
    """A copy of the config section ``section`` (dotted, e.g. ``eval.passkey``) with every option given
    on the command line laid over its key.

    ``options`` maps an argparse destination to a key of the section (dotted for nested keys); a
    plain list means the same names. Options named in ``lists`` are comma-separated text, read as
    lists of that type (int, float or str).
    """
    for name in section.split("."):
        config = config[name]
    out = copy.deepcopy(config)
    pairs = options.items() if isinstance(options, dict) else ((name, name) for name in options)
    for dest, key in pairs:
        value = getattr(args, dest, None)
        if value is None:
            continue
        if lists and dest in lists:
            value = parse_list(value, "--" + dest.replace("_", "-"), lists[dest])
        node = out
        *parents, last = key.split(".")
        for name in parents:
            node = node[name]
        node[last] = value
    return out


def parse_list(text: str, option: str, kind: type = int) -> list:
    """``"1,2,3"`` from the command line as a list of ``kind`` (int, float or str)."""
    try:
        values = [kind(x.strip()) for x in str(text).split(",") if x.strip()]
    except ValueError:
        what = "integers" if kind is int else "numbers" if kind is float else "values"
        raise RopeextError(f"{option}: expected comma-separated {what}, got {text!r}") from None
    if not values:
        raise RopeextError(f"{option}: expected at least one value, got {text!r}")
    return values
