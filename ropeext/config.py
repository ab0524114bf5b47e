"""Load and validate a pipeline config against workflow/schemas/config.schema.yaml, the one place a default lives.

The workflow and the CLI both resolve configs here, so a wrong key or value fails before any job runs.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from ropeext.errors import RopeextError
from ropeext.recipes import RECIPES
from ropeext.rope.registry import METHODS

# package data: in the checkout a link to workflow/schemas/config.schema.yaml, the file Snakemake validates with
SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    schema = load_yaml(SCHEMA_PATH.read_text(encoding="utf-8"))
    schema["$defs"]["method"]["enum"] = list(METHODS)  # the RoPE methods are named in ropeext/rope/registry.py
    return schema


def load_schema() -> dict:
    """The config schema (parsed once per process; each call returns a copy of its own)."""
    return copy.deepcopy(_schema())


def schema_defaults(section: str) -> dict:
    """The top-level section ``section`` as a config that leaves it out resolves to."""
    schema = load_schema()
    out: dict = {}
    _validator_with_defaults({"$defs": schema["$defs"], **schema["properties"][section]}).validate(out)
    return out


def _validator_with_defaults(schema: dict):
    """A Draft 2020-12 validator that also fills in each property's ``default`` (as Snakemake's does)."""
    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema_)

    cls = validators.extend(Draft202012Validator, {"properties": set_defaults})
    return cls(schema)


# YAML 1.1 (PyYAML, and Snakemake's loader) reads ``2e-5`` as text: a float needs a dot there. Config
# files are read with YAML 1.2's float syntax, and a resolved config (written as JSON) reads back the same.
_FLOAT_12 = re.compile(
    r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
)
_EXPONENT_NUMBER = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$")


class ConfigLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader (libyaml's parser where PyYAML has it) with YAML 1.2 floats (``1e-5`` is a number)."""


ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    ConfigLoader.yaml_implicit_resolvers[_first] = [
        (tag, rx)
        for tag, rx in ConfigLoader.yaml_implicit_resolvers.get(_first, [])
        if tag != "tag:yaml.org,2002:float"
    ]
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml(stream):
    """``yaml.safe_load`` with YAML 1.2 floats."""
    return yaml.load(stream, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


def _numbers_from_text(config: dict, node: dict, schema: dict) -> None:
    """In place: a string such as ``'2e-5'`` under a key the schema types as a number becomes that
    number (YAML 1.1 loaders, Snakemake's among them, read it as text)."""
    props = section_properties(node, schema)
    for key, value in config.items():
        sub = props.get(key)
        if sub is None:
            continue
        if "$ref" in sub and "type" not in sub:
            sub = {**schema["$defs"][sub["$ref"].rsplit("/", 1)[-1]], **sub}
        types = sub.get("type", [])
        types = [types] if isinstance(types, str) else types
        if isinstance(value, str) and "number" in types and _EXPONENT_NUMBER.match(value.strip()):
            config[key] = float(value)
        elif isinstance(value, dict) and ("properties" in sub or "$ref" in sub):
            _numbers_from_text(value, sub, schema)


def section_properties(node: dict, schema: dict) -> dict:
    """The properties of an object schema, those of the definition it refers to (``$ref``) included."""
    props = {}
    if "$ref" in node:
        props.update(section_properties(schema["$defs"][node["$ref"].rsplit("/", 1)[-1]], schema))
    for key, sub in node.get("properties", {}).items():
        props[key] = {**props.get(key, {}), **sub}
    return props


def _describe(error, schema: dict) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(section_properties(error.schema, schema))
        message = error.message.replace("Unevaluated properties", "Additional properties")
        return f"{key}: {message} (allowed keys: {', '.join(allowed)})"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not one of {error.validator_value}"
    return f"{key}: {error.message}"


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place (filling defaults) and return it (``resolve_config`` applies recipes before)."""
    if not isinstance(config, dict):
        raise RopeextError(f"{source}: expected a mapping of config keys, got {type(config).__name__}")
    schema = load_schema()
    validator = _validator_with_defaults(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n  ".join(_describe(e, schema) for e in errors)
        raise RopeextError(f"{source}: invalid config:\n  {lines}")
    _check_consistency(config, source)
    _derive_ruler_lengths(config)
    return config


def resolve_config(config: dict, source: str = "config") -> dict:
    """In place: the ``finetune.recipe`` overlay, then validation filling defaults; idempotent."""
    if not isinstance(config, dict):
        raise RopeextError(f"{source}: expected a mapping of config keys, got {type(config).__name__}")
    schema = load_schema()
    _numbers_from_text(config, schema, schema)
    apply_recipe(config, source)
    return validate_config(config, source)


def apply_recipe(config: dict, source: str = "config") -> dict:
    """Fill the ``finetune`` keys the user did not set from the named recipe (in place); string step keys, as JSON."""
    section = config.get("finetune")
    if not isinstance(section, dict):
        return config  # absent (defaults follow) or malformed (validation names it)
    name = section.get("recipe", "none")
    if not isinstance(name, str) or (name != "none" and name not in RECIPES):
        raise RopeextError(f"{source}: finetune.recipe: {name!r} is not one of none, {', '.join(RECIPES)}")
    for key, value in RECIPES.get(name, {}).items():
        section.setdefault(key, copy.deepcopy(value))
    if isinstance(section.get("steps"), dict):
        section["steps"] = {("null" if k is None else str(k)): v for k, v in section["steps"].items()}
    return config


def by_target(value, target_length: int | None, key: str = "finetune.steps"):
    """A value or a mapping {max_target: value, ..., null: value beyond} (keys integers or, after JSON, strings)."""
    if not isinstance(value, dict):
        return value
    table = {}
    for k, v in value.items():
        if k in (None, "null", "None"):
            table[None] = v
            continue
        try:
            table[int(k)] = v
        except (TypeError, ValueError):
            raise RopeextError(f"{key}: {k!r} is not a target length (expected an integer or null)") from None
    for limit in sorted(k for k in table if k is not None):
        if target_length is None or target_length <= limit:
            return table[limit]
    if None not in table:
        raise RopeextError(f"{key}: no entry for target length {target_length} in {value}")
    return table[None]


def parse_sets(texts, section: str) -> dict:
    """``--set KEY=VALUE`` options (VALUE read as YAML; text for a number key converted) as a ``section`` override."""
    schema = load_schema()
    props = section_properties(schema["properties"][section], schema)
    known = sorted(k for k in props if k != "recipe")
    out: dict = {}
    for text in texts or ():
        if "=" not in text:
            raise RopeextError(f"--set {text!r}: expected KEY=VALUE, e.g. --set lr=1e-5")
        key, raw = (part.strip() for part in text.split("=", 1))
        if key not in known:
            raise RopeextError(f"--set {text!r}: unknown key {key!r} (known: {', '.join(known)})")
        try:
            value = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise RopeextError(f"--set {text!r}: value is not valid YAML ({exc})") from None
        types = props[key].get("type", [])
        if isinstance(value, str) and "number" in ([types] if isinstance(types, str) else types):
            try:
                value = float(value)
            except ValueError:
                raise RopeextError(f"--set {text!r}: {key} must be a number") from None
        out[key] = value
    return {section: out} if out else {}


def training_defaults() -> dict:
    """Defaults of the optimisation keys that pre-training and fine-tuning share (``$defs/training``)."""
    props = load_schema()["$defs"]["training"]["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def _check_consistency(config: dict, source: str) -> None:
    train = config["model"]["train_length"]
    for target in config["extension"]["target_lengths"]:
        if target <= train:
            raise RopeextError(f"{source}: extension.target_lengths: {target} must exceed model.train_length ({train})")
    arch = config["model"]["architecture"]
    if arch["hidden_size"] % arch["num_attention_heads"]:
        raise RopeextError(
            f"{source}: model.architecture: hidden_size {arch['hidden_size']} is not divisible by "
            f"num_attention_heads {arch['num_attention_heads']}"
        )
    if (arch["hidden_size"] // arch["num_attention_heads"]) % 2:
        raise RopeextError(f"{source}: model.architecture: the head dimension must be even for RoPE")


def _derive_ruler_lengths(config: dict) -> None:
    """``eval.ruler.lengths`` null: model.train_length doubled up to eval.ruler.max_length, or when that is
    null up to the shortest window of the models RULER evaluates (which the last length always is)."""
    ruler = config["eval"]["ruler"]
    if ruler["lengths"] is not None:
        return
    length = config["model"]["train_length"]
    windows = [model_window(config, method, target) for method, target, _ in selected_models(config, ruler["variants"])]
    limit = ruler["max_length"] or min(windows, default=max(config["extension"]["target_lengths"]))
    lengths = []
    while length < limit:
        lengths.append(length)
        length *= 2
    ruler["lengths"] = [*lengths, limit]


def load_config(path: str | Path | None = None, overrides: dict | None = None, *, recipe: str | None = None) -> dict:
    """The resolved config of a YAML file (or of the defaults), a chosen ``recipe`` and ``overrides`` laid over it."""
    config: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        config = read_config_file(path)
    if recipe is not None:
        config = choose_recipe(config, recipe)
    if overrides:
        config = deep_merge(config, overrides)
    return resolve_config(config, source=source)


def read_config_file(path: str | Path) -> dict:
    """The raw mapping of a YAML config file; a syntax error names the file, line and column."""
    return read_yaml_mapping(path, "config file", "config keys")


def read_yaml_mapping(path: str | Path, what: str, holding: str) -> dict:
    """The mapping a YAML file holds (empty file: {}); a missing file, a syntax error (file, line and column),
    text that is not UTF-8 or a top level that is not a mapping stops with one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"{what} not found: {path} (relative paths are read from the working directory)")
    try:
        with open(path, encoding="utf-8") as fh:
            data = load_yaml(fh)
    except yaml.YAMLError as exc:
        raise RopeextError(describe_yaml_error(path, exc)) from None
    except UnicodeDecodeError as exc:
        raise RopeextError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RopeextError(f"{path}: expected a mapping of {holding}, got {type(data).__name__}")
    return data


def describe_yaml_error(path, exc) -> str:
    """``FILE:LINE:COLUMN: not valid YAML: what`` (1-based, as editors count) for a YAML parse error."""
    mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if getattr(exc, "context", None):
        at = f" that starts at line {context.line + 1}, column {context.column + 1}" if context is not None else ""
        what += f" ({exc.context}{at})"
    return f"{where}: not valid YAML: {what}"


def choose_recipe(config: dict, name: str) -> dict:
    """A copy of a config with ``finetune.recipe`` = ``name`` and that recipe's keys dropped, so the recipe wins."""
    out = copy.deepcopy(config)
    section = out.get("finetune")
    section = dict(section) if isinstance(section, dict) else {}
    drop = RECIPES.get(name, {})
    out["finetune"] = {k: v for k, v in section.items() if k not in drop} | {"recipe": name}
    return out


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


def finetuned_methods(config: dict) -> list[str]:
    """The methods fine-tuned with every layout: extension.finetune_methods, or every method when null."""
    ext = config["extension"]
    return [m for m in ext["methods"] if ext["finetune_methods"] is None or m in ext["finetune_methods"]]


def scaling_methods(config: dict) -> list[str]:
    """The methods whose scaling.json the RoPE job writes: extension.methods, then rope.compare_methods."""
    return list(dict.fromkeys(config["extension"]["methods"] + config["rope"]["compare_methods"]))


def selected_models(config: dict, selection: list[str]) -> list[tuple[str, int, str]]:
    """(method, target, layout) of the models a ``variants`` selection evaluates (layout ``noft``: no
    fine-tuning; ``base`` is the unscaled base model, method none without fine-tuning)."""
    ext = config["extension"]
    tuned = finetuned_methods(config)
    out = []
    for target in ext["target_lengths"]:
        if "base" in selection:
            out.append(("none", target, "noft"))
        for method in ext["methods"]:
            if "noft" in selection:
                out.append((method, target, "noft"))
            if method in tuned:
                out += [
                    (method, target, layout)
                    for layout in ext["layouts"]
                    if "finetuned" in selection or layout in selection
                ]
    return list(dict.fromkeys(out))


def model_window(config: dict, method: str, target: int) -> int:
    """The window of an evaluated model: its target length, or the pre-training length for dynamic_ntk (which
    grows its base with the running length)."""
    return config["model"]["train_length"] if method == "dynamic_ntk" else target
