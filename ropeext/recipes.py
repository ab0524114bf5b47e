"""The papers' fine-tuning recipes: named overlays on the config's ``finetune`` section.

``dprope``  DPRoPE: Wu et al., "Extending Context Window of Large Language Models from a
            Distributional Perspective", EMNLP 2024. AdamW betas (0.9, 0.999), lr 2e-5, no warm-up,
            no weight decay, global batch 64; 1000 steps at targets up to 8k, 500 steps beyond (16k).
``anchor``  AnchorAttention: Wang et al., "When Precision Meets Position: BFloat16 Breaks Down RoPE
            in Long-Context Training", TMLR 2025. AdamW betas (0.9, 0.95), weight decay 0.1,
            constant lr 2e-5, 2000 steps of 8 sequences.

The DPRoPE summary names no decay schedule; with no warm-up we keep the rate constant, as for
``anchor``. Gradient clipping at 1.0 is our choice for both (not part of the papers' summaries).

How an overlay applies (``ropeext.config.resolve_config``): on the raw config, before the schema's
defaults are filled, each key of the recipe fills a ``finetune`` key the user did not set. So the
precedence is: schema default < recipe < a key set in the config file < ``--set`` on the command
line. ``steps`` may map target lengths to steps: an entry covers the targets up to its length, the
``null`` entry any longer one.
"""

from __future__ import annotations

RECIPES: dict[str, dict] = {
    "dprope": {
        "lr": 2.0e-5,
        "betas": [0.9, 0.999],
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "schedule": "constant",
        "batch_size": 64,
        "steps": {8192: 1000, None: 500},
        "max_grad_norm": 1.0,
    },
    "anchor": {
        "lr": 2.0e-5,
        "betas": [0.9, 0.95],
        "warmup_steps": 0,
        "weight_decay": 0.1,
        "schedule": "constant",
        "batch_size": 8,
        "steps": 2000,
        "max_grad_norm": 1.0,
    },
}
