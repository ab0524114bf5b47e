"""Building, loading and RoPE-extending Hugging Face causal LMs."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Callable

from ropeext import job_warnings
from ropeext.errors import RopeextError
from ropeext.io import is_hub_id, write_json

# Weight files of a model directory (single or sharded safetensors, legacy PyTorch bins) and their indexes.
WEIGHT_PATTERNS = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model-*-of-*.bin",
    "pytorch_model.bin.index.json",
)
# Everything else a variant takes from its base: tokenizer files, chat template, generation config.
TOKENIZER_PATTERNS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "*.tiktoken",
    "generation_config.json",
)
VARIANT_MANIFEST = "variant_manifest.json"


def build_tiny_llama(
    vocab_size: int,
    train_length: int,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    intermediate_size: int = 384,
    rope_theta: float = 10000.0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    pad_token_id: int = 0,
    seed: int = 0,
):
    """A small Llama with tied embeddings, randomly initialised under ``seed``."""
    # heavy: torch loads only when a model runs
    import torch

    # heavy: transformers loads only when a model runs
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=train_length,
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def apply_scaling(model_config, scaling: dict) -> None:
    """Put a ``scaling.json``'s RoPE extension into a transformers config (in place).

    Checks that the scaling was solved for this model's head dimension and RoPE base.
    """
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
    params = dict(getattr(model_config, "rope_parameters", None) or {})
    theta = params.get("rope_theta", getattr(model_config, "rope_theta", None))
    if int(scaling["head_dim"]) != int(head_dim):
        raise RopeextError(
            f"scaling.json was solved for head_dim {scaling['head_dim']}, but the model has head_dim {head_dim}"
        )
    if (
        theta is not None
        and scaling.get("method") != "base_change"
        and abs(float(scaling["rope_theta"]) - float(theta)) > 1e-6 * float(theta)
    ):
        raise RopeextError(
            f"scaling.json was solved for rope_theta {scaling['rope_theta']}, but the model has rope_theta {theta}"
        )
    model_config.rope_parameters = dict(scaling["rope_parameters"])
    # Some configs (Phi-3 style) carry their own original_max_position_embeddings, which transformers
    # prefers over the one in rope_parameters: make it agree with the scaling's pre-training length.
    if getattr(model_config, "original_max_position_embeddings", None) is not None:
        model_config.original_max_position_embeddings = int(scaling["train_length"])
    model_config.max_position_embeddings = int(scaling.get("max_position_embeddings", scaling["target_length"]))


def load_model_config(path: str | Path, option: str = "model"):
    """The transformers config of a model directory or hub id, or a clear error naming ``option``."""
    # heavy: transformers loads only when a model runs
    from transformers import AutoConfig

    path = str(path)
    if not (Path(path).is_dir() or is_hub_id(path)):
        raise RopeextError(f"{option}: {path} is neither a model directory nor a hub id like org/name")
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RopeextError(f"{option}: cannot load a model config from {path}: {first}") from None


def load_causal_lm(path: str | Path, *, scaling: dict | None = None, dtype=None, attn_implementation: str = "sdpa"):
    """Load a model directory (or hub id), optionally with a RoPE extension applied."""
    # heavy: torch loads only when a model runs
    import torch

    path = str(path)
    config = load_model_config(path)
    if scaling is not None:
        apply_scaling(config, scaling)
    config.use_cache = False
    return load_pretrained(path, config=config, dtype=dtype or torch.float32, attn_implementation=attn_implementation)


def load_pretrained(path: str | Path, *, config=None, allow_unexpected: Callable[[str], bool] | None = None, **kwargs):
    """``AutoModelForCausalLM.from_pretrained``, strict: the one way ropeext loads model weights.

    A weight missing from the files (which transformers would initialise at random), a stored weight no
    parameter takes, or one of another shape than ``config`` implies stops the load with a RopeextError
    naming the folder, its weight files and the first keys. ``allow_unexpected(key)`` accepts stored
    weights left out on purpose (the layers a truncated import drops). Other keyword arguments go to
    ``from_pretrained`` (``dtype``, ``attn_implementation``, ``gguf_file``, ...).
    """
    # heavy: transformers loads only when a model runs
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path), config=config, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except Exception as exc:  # noqa: BLE001 - reported with the file that failed (see weights_error)
        raise weights_error(path, exc) from None
    unexpected = [k for k in info["unexpected_keys"] if not (allow_unexpected and allow_unexpected(k))]
    problem = mismatch_message(
        path,
        missing=info["missing_keys"],
        unexpected=unexpected,
        mismatched=[(k, tuple(stored), tuple(want)) for k, stored, want in info["mismatched_keys"]],
        errors=info.get("error_msgs") or (),
        layers=getattr(model.config, "num_hidden_layers", None),
        files=[kwargs["gguf_file"]] if kwargs.get("gguf_file") else None,
    )
    if problem:
        raise RopeextError(problem)
    return model


def weights_error(path: str | Path, exc: BaseException) -> RopeextError:
    """A loader failure as one line: the weight file at fault when one is (truncated, corrupt), else the
    loader's own first line."""
    folder = Path(str(path))
    if folder.is_dir():
        for name in weight_files(folder):
            problem = weight_file_problem(folder / name)
            if problem:
                return RopeextError(
                    f"{folder / name}: {problem}; re-create it (re-run the stage that wrote it, "
                    "or copy the model again)"
                )
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return RopeextError(f"{path}: cannot load the model ({type(exc).__name__}: {first})")


def weight_file_problem(path: str | Path) -> str | None:
    """Why a ``.safetensors`` weight file cannot be read, or None; reads only its header (no tensors).

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's byte
    range, then the data: a file cut short ends before the last range does.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"not a safetensors file: {size} bytes, shorter than its 8-byte header length (truncated?)"
            (length,) = struct.unpack("<Q", head)
            if 8 + length > size:
                return f"truncated or not a safetensors file: the header claims {length} bytes, the file has {size}"
            header = json.loads(fh.read(length))
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    except (ValueError, UnicodeDecodeError):
        return "corrupt: the safetensors header is not valid JSON"
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2
    ]
    need = 8 + length + max(ends, default=0)
    if need > size:
        return f"truncated: {size} bytes, but its tensors need {need}"
    return None


INDEX = "model.safetensors.index.json"
_LAYER = re.compile(r"\.layers\.(\d+)\.")
# Stored weights any loader may ignore: rotary frequencies older checkpoints saved, recomputed from the config.
_HARMLESS = re.compile(r"rotary_emb\.inv_freq$")
SHOWN_KEYS = 3  # keys a mismatch message names, per kind


def _natural(key: str) -> tuple:
    """Sort key putting model.layers.2 before model.layers.10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key))


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_KEYS])
    return shown + (f", ... {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else "")


def layer_index(key: str) -> int:
    """The decoder layer a weight name belongs to (``model.layers.3.mlp.up_proj.weight`` -> 3), or -1."""
    found = _LAYER.search(key)
    return int(found.group(1)) if found else -1


def _layer_hint(missing: list[str], unexpected: list[str], layers: int | None) -> str:
    """Where the keys at fault are whole decoder layers beyond the others: how many each side holds."""
    if not layers:
        return ""
    gone, extra = {layer_index(k) for k in missing}, {layer_index(k) for k in unexpected}
    if missing and len(gone) < layers and gone == set(range(min(gone), layers)):
        held = f"layers 0-{min(gone) - 1}" if min(gone) > 1 else "layer 0"
        return f"; config.json declares num_hidden_layers {layers} but the weights hold {held}"
    if unexpected and min(extra) == layers:
        return f"; config.json declares num_hidden_layers {layers} but the weights hold layers 0-{max(extra)}"
    return ""


def mismatch_message(
    path: str | Path,
    *,
    missing,
    unexpected,
    mismatched,
    errors=(),
    layers: int | None = None,
    files: list[str] | None = None,
) -> str | None:
    """One line saying how a model's stored weights disagree with its config, or None when they agree.

    ``mismatched`` holds (key, stored shape, expected shape); the first few keys of each kind are named.
    """
    missing = sorted(missing, key=_natural)
    unexpected = sorted((k for k in unexpected if not _HARMLESS.search(k)), key=_natural)
    mismatched = sorted(mismatched, key=lambda m: _natural(m[0]))
    parts = []
    if missing:
        parts.append(f"{len(missing)} weight(s) missing, which loading would initialise at random ({_first(missing)})")
    if mismatched:
        shapes = [f"{k} stored {list(stored)}, expected {list(want)}" for k, stored, want in mismatched]
        parts.append(f"{len(mismatched)} weight(s) of another shape ({_first(shapes)})")
    if unexpected:
        parts.append(f"{len(unexpected)} stored weight(s) that no parameter takes ({_first(unexpected)})")
    if errors:
        parts.append(f"loader errors: {str(list(errors)[0]).strip().splitlines()[0]}")
    if not parts:
        return None
    folder = Path(str(path))
    if files is None and folder.is_dir():
        files = [n for n in weight_files(folder) if not n.endswith(".json")]
    stored = (", ".join(files) if len(files) <= 2 else f"{files[0]} and {len(files) - 1} more") if files else "files"
    return (
        f"{path}: the weights in {stored} do not match config.json: {'; '.join(parts)}"
        f"{_layer_hint(missing, unexpected, layers)}; fix config.json or re-create the weights"
    )


def loaded_safetensors(folder: str | Path) -> list[str] | None:
    """The safetensors files a load of ``folder`` reads: model.safetensors, else the shards its index names
    (a RopeextError when one is absent), else every shard; None when it holds no safetensors file."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    if (folder / INDEX).is_file():
        try:
            names = sorted(set(json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RopeextError(f"{folder / INDEX}: not a safetensors index with a weight_map ({exc})") from None
        absent = [n for n in names if not (folder / n).is_file()]
        if absent:
            raise RopeextError(f"{folder / INDEX}: names {_first(absent)}, absent from {folder}")
        return names
    return [n for n in weight_files(folder) if n.endswith(".safetensors")] or None


def stored_shapes(folder: str | Path, names: list[str]) -> dict[str, tuple]:
    """Name -> shape of every tensor in the safetensors files ``names`` of ``folder``, from their headers."""
    # heavy: safetensors (with torch) loads only where weights are checked
    from safetensors import safe_open

    shapes: dict[str, tuple] = {}
    for name in names:
        with safe_open(str(Path(folder) / name), framework="pt") as fh:
            shapes.update((key, tuple(fh.get_slice(key).get_shape())) for key in fh.keys())
    return shapes


def expected_shapes(config) -> tuple[dict[str, tuple], list[set[str]]] | None:
    """Name -> shape of every weight a model of ``config`` loads, and the groups of tied names (one stored
    name serves them all), from the model built on the meta device (no memory); None where transformers
    cannot build it from the config alone."""
    # heavy: torch loads only where weights are checked
    import torch

    # heavy: transformers loads only where weights are checked
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(copy.deepcopy(config))
    except Exception:  # noqa: BLE001 - an architecture transformers cannot build here: nothing to compare with
        return None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    groups: dict[int, set[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), set()).add(name)
    return shapes, [g for g in groups.values() if len(g) > 1]


def _meta_load(folder: Path, config) -> dict | None:
    """transformers' own loading report of ``folder`` onto the meta device (no weight kept), quietly; None
    when it cannot tell."""
    # heavy: transformers loads only where weights are checked
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        _, info = AutoModelForCausalLM.from_pretrained(
            str(folder),
            config=copy.deepcopy(config),
            device_map="meta",
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    except Exception:  # noqa: BLE001 - the real load reports what stops it
        return None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    return info


def weights_problem(folder: str | Path, config=None, *, deep: bool = False) -> str | None:
    """Why a local model folder's weights would not load as its config says, or None; loads no weight.

    Finds a cut or corrupt safetensors file, a shard its index names but the folder lacks, and weights
    missing, unexpected or of another shape than ``config`` (default: the folder's config.json) implies:
    the safetensors headers against the model built on the meta device (tied weights stored once are
    fine). Where they disagree, transformers' own loading report onto the meta device decides (it knows
    the renames some architectures apply). Legacy ``.bin`` weights are compared only with ``deep``
    (transformers reads them to tell); quantized folders are left to the loader.
    """
    folder = Path(folder)
    for name in weight_files(folder):
        problem = weight_file_problem(folder / name)
        if problem:
            return f"{folder / name}: {problem}; re-create it (re-run the stage that wrote it, or copy the model again)"
    try:
        names = loaded_safetensors(folder)
    except RopeextError as exc:
        return str(exc)
    if config is None:
        config = load_model_config(folder, option=str(folder / "config.json"))
    if getattr(config, "quantization_config", None):  # packed weights under other names: the loader's business
        return None
    layers = getattr(config, "num_hidden_layers", None)
    found = None
    if names is not None:
        expected = expected_shapes(config)
        if expected is None:
            return None
        want, tied = expected
        try:
            stored = stored_shapes(folder, names)
        except Exception as exc:  # noqa: BLE001 - a header safetensors refuses (the length and JSON were fine)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"{folder}: cannot read the safetensors headers of {', '.join(names)} ({first})"
        served = {k for group in tied if group & stored.keys() for k in group}
        found = mismatch_message(
            folder,
            missing=[k for k in want if k not in stored and k not in served],
            unexpected=[k for k in stored if k not in want],
            mismatched=[(k, stored[k], want[k]) for k in stored if k in want and stored[k] != want[k]],
            layers=layers,
            files=names,
        )
        if found is None:
            return None
    elif not deep:
        return None
    info = _meta_load(folder, config)
    if info is None:
        return found
    return mismatch_message(
        folder,
        missing=info["missing_keys"],
        unexpected=info["unexpected_keys"],
        mismatched=[(k, tuple(s), tuple(w)) for k, s, w in info["mismatched_keys"]],
        errors=info.get("error_msgs") or (),
        layers=layers,
        files=names,
    )


def check_weights(path: str | Path, config=None, *, deep: bool = False) -> None:
    """``weights_problem`` of a local folder (or the cached snapshot of a hub id) as a RopeextError."""
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        folder = local_snapshot(str(path)) if is_hub_id(str(path)) else None
    if folder is None:
        return
    problem = weights_problem(folder, config, deep=deep)
    if problem:
        raise RopeextError(problem)


def local_snapshot(repo_id: str) -> Path | None:
    """The folder of a hub model in the local Hugging Face cache (``HF_HUB_CACHE``), or None; never downloads."""
    try:
        # heavy: huggingface_hub's API module takes ~0.2 s to import; only hub look-ups need it
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    except Exception:  # noqa: BLE001 - not cached (or not a valid id): the caller reports what was expected
        return None
    return Path(folder)


def resolve_model_dir(path: str | Path, option: str = "--base") -> Path:
    """A local model directory, or the cached snapshot folder of a hub id; a clear error otherwise."""
    text = str(path)
    local = Path(text).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise RopeextError(
                f"{option} {text}: directory has no config.json (expected a Hugging Face model directory)"
            )
        return local
    snapshot = None if local.exists() else local_snapshot(text)
    if snapshot is None or not (snapshot / "config.json").is_file():
        raise RopeextError(
            f"{option} {text}: neither a model directory nor a hub id in the local Hugging Face cache "
            "(nothing is downloaded; set HF_HUB_CACHE or pass a directory)"
        )
    return snapshot


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    return [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in patterns)]


def weight_files(folder: str | Path) -> list[str]:
    """Names of the weight files (and weight indexes) in a model directory."""
    return _matching(Path(folder), WEIGHT_PATTERNS)


def link_file(src: Path, dst: Path, final_dir: Path) -> str:
    """Make ``dst`` share ``src``'s content without copying it; return how.

    A hard link first (to the file ``src`` resolves to, as cache snapshots hold symlinks); where the
    file system refuses one (another device, no hard links), a symlink relative to ``final_dir``, the
    folder ``dst`` ends up in (it is written under a temporary sibling and renamed); failing that, a
    copy, with a warning.
    """
    real = Path(os.path.realpath(src))
    try:
        os.link(real, dst)
        return "hardlink"
    except OSError:
        pass
    try:
        os.symlink(os.path.relpath(real, final_dir.resolve()), dst)
        return "symlink"
    except OSError:
        pass
    job_warnings.note(f"cannot link {real} (neither a hard link nor a symlink); copying it to {dst}")
    shutil.copyfile(real, dst)
    return "copy"


def write_variant(base: str | Path, scaling: dict, output: str | Path, *, info: dict | None = None) -> dict:
    """A base model with a RoPE extension and no training, written without copying its weights.

    OUTPUT gets ``config.json`` with the scaling's rope_parameters applied (``apply_scaling``), copies of
    the base's tokenizer files and generation config, and every weight file linked to the base's
    (``link_file``: hard link, else relative symlink, else copy). ``variant_manifest.json`` records the
    base, the scaling and how each weight file was linked. Written under a temporary sibling, then
    renamed. A hub-id base resolves to its snapshot in the local cache.
    """
    missing = [k for k in ("method", "head_dim", "rope_theta", "target_length", "rope_parameters") if k not in scaling]
    if missing:
        raise RopeextError(
            f"scaling: missing key(s) {', '.join(missing)} (expected a scaling.json from `ropeext solve`)"
        )
    base_dir = resolve_model_dir(base)
    config = load_model_config(base_dir, option="--base")
    weights = weight_files(base_dir)
    if not any(not name.endswith(".json") for name in weights):
        raise RopeextError(
            f"--base {base}: {base_dir} has no weight files (expected model.safetensors, sharded "
            "model-*-of-*.safetensors or pytorch_model.bin)"
        )
    problem = weights_problem(base_dir, config)  # the weights are linked, never loaded here: their headers
    if problem:
        raise RopeextError(f"--base {base}: {problem}")
    apply_scaling(config, scaling)

    output = Path(output)
    if output.resolve() == base_dir.resolve():
        raise RopeextError(f"--output {output}: is the base model directory itself")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        config.save_pretrained(tmp)
        copied = _matching(base_dir, TOKENIZER_PATTERNS)
        for name in copied:
            shutil.copyfile(base_dir / name, tmp / name)
        linked = {name: link_file(base_dir / name, tmp / name, output) for name in weights}
        write_json(
            tmp / VARIANT_MANIFEST,
            {
                "base": str(base),
                "base_dir": str(base_dir.resolve()),
                "scaling": {k: scaling.get(k) for k in ("method", "train_length", "target_length", "rope_parameters")},
                "weights": linked,
                "copied": copied,
                **(info or {}),
            },
        )
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"base_dir": base_dir, "weights": linked, "copied": copied}
