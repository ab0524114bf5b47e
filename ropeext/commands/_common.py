"""Arguments and helpers shared by the stage commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ropeext.config import load_config
from ropeext.errors import RopeextError


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, metavar="YAML",
                        help="pipeline config (validated against workflow/schemas/config.schema.yaml)")


def add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default=None, help="variant name recorded with the MLflow run")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")


def config_from_args(args) -> dict | None:
    return load_config(args.config) if getattr(args, "config", None) else None


def write_json(path: str | Path, obj) -> Path:
    """Write JSON atomically (temp name, then rename) so a crash never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")
    tmp.replace(path)
    return path


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path, what: str = "file"):
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"{what} not found: {path}")
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise RopeextError(f"{path}: not valid JSON ({exc})") from None
