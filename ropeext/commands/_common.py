"""Arguments and helpers shared by the stage commands."""

from __future__ import annotations

import argparse

from ropeext.config import load_config


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, metavar="YAML",
                        help="pipeline config (validated against workflow/schemas/config.schema.yaml)")


def add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default=None, help="variant name recorded with the MLflow run")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")


def config_from_args(args) -> dict | None:
    return load_config(args.config) if getattr(args, "config", None) else None
