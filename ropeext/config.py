"""Load and validate a pipeline config against workflow/schemas/config.schema.yaml.

The same schema validates the config in Snakemake (``validate()`` in rules/common.smk) and in
the CLI (``load_config``), so a wrong key or value fails before any job runs, with a message
naming the key and what was expected.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from ropeext.errors import RopeextError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _validator_with_defaults(schema: dict):
    """A Draft 2020-12 validator that also fills in each property's ``default`` (as Snakemake's does)."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema_)

    cls = validators.extend(Draft202012Validator, {"properties": set_defaults})
    return cls(schema)


def _describe(error) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{key}: {error.message} (allowed keys: {', '.join(allowed)})"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not one of {error.validator_value}"
    return f"{key}: {error.message}"


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place (filling defaults) and return it; raise RopeextError on failure."""
    if not isinstance(config, dict):
        raise RopeextError(f"{source}: expected a mapping of config keys, got {type(config).__name__}")
    validator = _validator_with_defaults(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n  ".join(_describe(e) for e in errors)
        raise RopeextError(f"{source}: invalid config:\n  {lines}")
    _check_consistency(config, source)
    return config


def _check_consistency(config: dict, source: str) -> None:
    train = config["model"]["train_length"]
    for target in config["extension"]["target_lengths"]:
        if target <= train:
            raise RopeextError(
                f"{source}: extension.target_lengths: {target} must exceed model.train_length ({train})"
            )
    arch = config["model"]["architecture"]
    if arch["hidden_size"] % arch["num_attention_heads"]:
        raise RopeextError(
            f"{source}: model.architecture: hidden_size {arch['hidden_size']} is not divisible by "
            f"num_attention_heads {arch['num_attention_heads']}"
        )
    if (arch["hidden_size"] // arch["num_attention_heads"]) % 2:
        raise RopeextError(f"{source}: model.architecture: the head dimension must be even for RoPE")


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a YAML config file, apply ``overrides`` (nested dict), validate, fill defaults."""
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"config file not found: {path}")
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise RopeextError(f"{path}: not valid YAML: {exc}") from None
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config, source=str(path))


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_hash(obj: Any) -> str:
    """A short stable hash of any JSON-serialisable value (used to tag runs)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as values (logged as their repr)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
