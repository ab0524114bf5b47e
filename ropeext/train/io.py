"""Saving a trained model as a stock Hugging Face directory, atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

from ropeext.io import write_json


def save_model_dir(model, tokenizer, output: str | Path, summary: dict, state_dict: dict | None = None) -> Path:
    """Write model, tokenizer and training_summary.json to OUTPUT.partial, then rename it to OUTPUT.

    ``state_dict`` replaces the model's own (a full state gathered from FSDP/DeepSpeed shards).
    """
    output = Path(output)
    tmp = output.with_name(output.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.config.use_cache = True  # inference default for users; training always passes use_cache=False
    if state_dict is not None:
        model.save_pretrained(tmp, state_dict=state_dict)
    else:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / "training_summary.json", summary)
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    return output
