"""The papers' fine-tuning recipes and how a config section overrides them key by key.

``dprope``  DPRoPE (Wu et al., EMNLP 2024): AdamW betas (0.9, 0.999), lr 2e-5, no warm-up, no weight
            decay, global batch 64; 1000 steps at targets up to 8k, 500 steps beyond (16k).
``anchor``  AnchorAttention (Wang et al., 2024): AdamW betas (0.9, 0.95), weight decay 0.1,
            constant lr 2e-5, 2000 steps of 8 sequences.

The issue's summary of the DPRoPE recipe names no decay schedule; with no warm-up we keep the rate
constant, as for ``anchor``. Gradient clipping at 1.0 is our choice for both (not part of the
summaries); override it with ``max_grad_norm``.

Resolution of each key: a value set in the config section (not null) wins, then the recipe's
value, then the built-in default below.
"""

from __future__ import annotations

from ropeext.errors import RopeextError

# Built-in defaults: the embedded CPU demo's fine-tuning (config/config.yaml).
DEFAULTS: dict = {
    "steps": 80,
    "batch_size": 4,
    "lr": 3.0e-4,
    "warmup_steps": 8,
    "weight_decay": 0.0,
    "precision": "bf16-mixed",
    "schedule": "cosine",
    "min_lr_ratio": 0.1,
    "betas": [0.9, 0.95],
    "max_grad_norm": 1.0,
    "grad_accum": 1,
    "gradient_checkpointing": False,
    "checkpoint_every": 20,
    "keep_checkpoints": 2,
    "log_every": 1,
    "system_metrics": True,
    "cleanup_checkpoints": True,
}

# Pre-training of the embedded tiny model (config/config.yaml ``pretrain``).
PRETRAIN_DEFAULTS: dict = {**DEFAULTS, "steps": 1000, "batch_size": 16, "lr": 3.0e-3, "warmup_steps": 50,
                           "weight_decay": 0.1, "checkpoint_every": 100}

RECIPES: dict[str, dict] = {
    "dprope": {
        "lr": 2.0e-5, "betas": [0.9, 0.999], "warmup_steps": 0, "weight_decay": 0.0, "schedule": "constant",
        "batch_size": 64, "steps": {8192: 1000, None: 500},  # None: any longer target
        "max_grad_norm": 1.0,
    },
    "anchor": {
        "lr": 2.0e-5, "betas": [0.9, 0.95], "warmup_steps": 0, "weight_decay": 0.1, "schedule": "constant",
        "batch_size": 8, "steps": 2000, "max_grad_norm": 1.0,
    },
}


def _by_target(value, target_length: int | None):
    """A value that depends on the target window: {max_target: value, ..., None: value beyond}."""
    if not isinstance(value, dict):
        return value
    # config files give the limits as YAML ints or (after a JSON round trip) as strings
    table = {None if k in (None, "null", "None") else int(k): v for k, v in value.items()}
    for limit in sorted(k for k in table if k is not None):
        if target_length is None or target_length <= limit:
            return table[limit]
    if None not in table:
        raise RopeextError(f"finetune.steps: no entry for target length {target_length} in {value}")
    return table[None]


def resolve(section: dict | None, *, recipe: str | None = None, target_length: int | None = None,
            defaults: dict | None = None) -> dict:
    """Merge built-in defaults < recipe < non-null keys of ``section``; return plain values.

    ``recipe`` defaults to ``section['recipe']``; ``none`` or null means no recipe.
    """
    section = dict(section or {})
    recipe = recipe if recipe is not None else section.get("recipe")
    base = dict(DEFAULTS if defaults is None else defaults)
    if recipe not in (None, "none"):
        if recipe not in RECIPES:
            raise RopeextError(f"finetune.recipe: {recipe!r} is not one of none, {', '.join(RECIPES)}")
        base.update({k: _by_target(v, target_length) for k, v in RECIPES[recipe].items()})
    for key, value in section.items():
        if key == "recipe" or value is None:
            continue
        base[key] = _by_target(value, target_length) if key == "steps" else value
    base["recipe"] = recipe or "none"
    return base


def parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` from the command line; VALUE is read as YAML (numbers, lists, true/false, null)."""
    import yaml

    if "=" not in text:
        raise RopeextError(f"--set {text!r}: expected KEY=VALUE, e.g. --set lr=1e-5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in DEFAULTS:
        raise RopeextError(f"--set {text!r}: unknown key {key!r} (known: {', '.join(sorted(DEFAULTS))})")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RopeextError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    if isinstance(value, str) and key in ("lr", "weight_decay", "min_lr_ratio", "max_grad_norm"):
        try:
            value = float(value)
        except ValueError:
            raise RopeextError(f"--set {text!r}: {key} must be a number") from None
    return key, value
