"""Saving a trained model as a stock Hugging Face directory, atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

from ropeext.commands._common import write_json


def save_model_dir(model, tokenizer, output: str | Path, summary: dict) -> Path:
    """Write model, tokenizer and training_summary.json to a temp folder, then rename it into place."""
    output = Path(output)
    tmp = output.with_name(output.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.config.use_cache = True  # inference default for users; training always passes use_cache=False
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / "training_summary.json", summary)
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    return output
