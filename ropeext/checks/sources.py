"""Checks of what the workflow reads: the corpus, the base model and the tokenizer (files, folders, hub ids)."""

from __future__ import annotations

import functools
import glob
import json
from pathlib import Path
from typing import Iterator

from ropeext.checks.registry import check, head_dim, offline
from ropeext.data.tokenizer import load_tokenizer
from ropeext.errors import RopeextError
from ropeext.io import is_hub_id
from ropeext.model_import import is_gguf_source, resolve_source
from ropeext.modeling import local_snapshot, weight_files, weights_problem


def _model_config(path: str) -> dict | None:
    """The config.json of a local model directory or of a hub id in the local cache, or None."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        folder = local_snapshot(path) if is_hub_id(path) else None
    if folder is None or not (folder / "config.json").is_file():
        return None
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@check(
    "corpus.path",
    "a corpus folder, file or glob that matches nothing; a text corpus none of whose files can reach the "
    "train split (one file that the split hash puts in test, say); an hf dataset that is neither a local "
    "folder nor in the cache while offline",
    paths=True,
)
def _corpus(config: dict) -> Iterator[str]:
    c = config["corpus"]
    source, path = c["source"], c["path"]
    if source == "stdlib":
        if path and not Path(path).is_dir():
            yield f"corpus.path: {path} is not a folder (corpus.source stdlib reads the library under it)"
        return
    if not path:
        yield f"corpus.path: required when corpus.source is {source}"
        return
    if source == "text":
        base = Path(path)
        found = (
            next((p for p in base.rglob("*") if p.is_file()), None)
            if base.is_dir()
            else (base if base.is_file() else next(iter(glob.glob(path, recursive=True)), None))
        )
        if found is None:
            yield f"corpus.path: no text file at {path!r} (corpus.source text: a folder, a file or a glob)"
        elif not c["segment_chars"]:
            yield from _text_train_split(c)
    elif source in ("jsonl", "parquet"):
        if not (Path(path).is_file() or glob.glob(path, recursive=True)):
            yield f"corpus.path: no {source} file at {path!r} (a file or a glob)"
    elif source == "hf":
        if Path(path).expanduser().is_dir():
            return
        if not is_hub_id(path):
            yield f"corpus.path: dataset folder not found: {path} (corpus.source hf: a save_to_disk folder or a hub id)"
        elif offline() and not _dataset_cached(path):
            yield (
                f"corpus.path: the hub dataset {path} is not in the local cache and downloads are off "
                "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); download it once, or point corpus.path at a local copy"
            )


def _text_train_split(c: dict) -> Iterator[str]:
    """A text corpus whose every file the split hash sends to validation/test, or that is shorter than
    corpus.min_chars, leaves train empty (a text file's id is its path: no file needs reading)."""
    # heavy: the corpus module loads pyarrow; only a text corpus needs this check
    from ropeext.data.corpus import split_of

    fr, path = c["split_fractions"], c["path"]
    base = Path(path)
    # lazily and in any order: the first file that can reach train ends the check
    found = base.rglob("*") if base.is_dir() else map(Path, glob.iglob(path, recursive=True))
    train, files = [], []
    for p in filter(Path.is_file, found):
        if split_of(p.as_posix(), fr["validation"], fr["test"]) == "train":
            if p.stat().st_size >= c["min_chars"]:
                return
            train.append(p)
        files.append(p)
    names = ", ".join(sorted(p.name for p in files)[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    why = (
        f"the {len(train)} it puts in train are shorter than corpus.min_chars ({c['min_chars']})"
        if train
        else "it puts every one in validation or test"
    )
    yield (
        f"corpus.path: no file of {path!r} ({names}) can reach the train split: each file is one document, "
        f"placed whole in the split a hash of its path picks (split_fractions: validation {fr['validation']}, "
        f"test {fr['test']}), and {why}; set corpus.segment_chars (e.g. 1000000) to cut long documents into "
        "segments placed one by one, or add files"
    )


def _dataset_cached(repo: str) -> bool:
    """Whether `datasets` can prepare the hub dataset here without a download (asked, offline)."""
    import datasets  # heavy, and only a hub corpus needs it

    try:
        datasets.load_dataset_builder(repo)
    except Exception:  # noqa: BLE001 - whatever stops it offline means: not available here
        return False
    return True


@check(
    "model.path / tokenizer.path",
    "a model source that does not resolve (GGUF file, package shipping one, model folder, hub id), a model "
    "folder without config.json or weights, a config.json transformers cannot read, a truncated .safetensors "
    "file, weights missing, unexpected or of another shape than the folder's config.json implies, "
    "model.architecture disagreeing with the model's config.json; a tokenizer folder that does not load or has "
    "neither BOS nor EOS; a hub id outside the cache while offline",
    paths=True,
)
def _model(config: dict) -> Iterator[str]:
    m = config["model"]
    found = list(_model_path(config, m["path"])) if m["path"] else []
    yield from found
    tok = config["tokenizer"]["path"]
    if not (tok or found) and m["path"] and not is_gguf_source(m["path"]) and Path(m["path"]).expanduser().is_dir():
        problem = _checked(_tokenizer_problem, Path(m["path"]).expanduser())  # the base model's own tokenizer
        if problem:
            yield f"model.path (its tokenizer, as tokenizer.path is null): {problem}"
    if tok:
        if Path(tok).expanduser().is_dir():
            problem = _checked(_tokenizer_problem, Path(tok).expanduser())
            if problem:
                yield f"tokenizer.path: {problem}"
            return
        if not is_hub_id(tok):
            yield f"tokenizer.path: folder not found: {tok} (expected a tokenizer directory or a hub id like org/name)"
        elif offline() and _model_config(tok) is None and not _cached_file(tok, "tokenizer_config.json"):
            yield f"tokenizer.path: the hub id {tok} is not in the local cache and downloads are off (HF_HUB_OFFLINE)"


def _checked(fn, folder: Path) -> str | None:
    """``fn(folder)``, once per state of the folder's files (names, sizes, modification times)."""
    stamp = []
    for p in folder.iterdir():
        try:
            stat = p.stat()
        except OSError:  # a broken link: the check itself reports what it lacks
            continue
        stamp.append((p.name, stat.st_size, stat.st_mtime_ns))
    return _once(fn, str(folder.resolve()), tuple(sorted(stamp)))


@functools.lru_cache(maxsize=16)
def _once(fn, folder: str, stamp: tuple) -> str | None:
    return fn(Path(folder))


def _folder_problem(folder: Path) -> str | None:
    """What stops a local model folder from loading as its config.json says: an unreadable or invalid
    config.json, a cut weight file, weights that do not match the config (headers only, no weight loaded)."""
    path = folder / "config.json"
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc})"
    except ValueError as exc:
        return f"{path}: not valid JSON ({exc})"
    try:
        return weights_problem(folder)
    except RopeextError as exc:
        return str(exc)


def _tokenizer_problem(folder: Path) -> str | None:
    """Why the tokenizer of a local folder would stop a job (it does not load; neither BOS nor EOS), or None."""
    try:
        load_tokenizer(folder)
    except RopeextError as exc:
        return str(exc)
    return None


def _cached_file(repo: str, name: str) -> bool:
    folder = local_snapshot(repo)
    return folder is not None and (folder / name).is_file()


def _model_path(config: dict, path: str) -> Iterator[str]:
    folder = Path(path).expanduser()
    if is_gguf_source(path):
        try:  # finds the file without reading it: the geometry check waits for the import's manifest
            resolve_source(path, gguf_file=config["model"]["import"]["gguf_file"])
        except RopeextError as exc:
            yield f"model.path: {str(exc).replace('--source ', '')}"
        return
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            yield f"model.path: {path} has no config.json (expected a Hugging Face model directory)"
            return
        if not any(not n.endswith(".json") for n in weight_files(folder)):
            yield (
                f"model.path: {path} has no weight files (expected model.safetensors, model-*-of-*.safetensors or "
                "pytorch_model.bin)"
            )
        else:
            problem = _checked(_folder_problem, folder)
            if problem:
                yield f"model.path: {problem}"
    elif not is_hub_id(path):
        yield f"model.path: model directory not found: {path} (expected a Hugging Face model directory or a hub id)"
        return
    elif offline() and _model_config(path) is None:
        yield (
            f"model.path: the hub model {path} is not in the local cache and downloads are off (HF_HUB_OFFLINE); "
            "download it once, or point model.path at a local copy"
        )
        return
    own = _model_config(path)
    if own is None:
        return
    arch = config["model"]["architecture"]
    heads = own.get("num_attention_heads")
    theirs = own.get("head_dim") or (own["hidden_size"] // heads if own.get("hidden_size") and heads else None)
    if theirs and theirs != head_dim(config):
        yield (
            f"model.architecture: head dimension {head_dim(config)} (hidden_size / num_attention_heads) differs "
            f"from {path}'s {theirs}; the RoPE solve would use the wrong geometry"
        )
    theta = (own.get("rope_parameters") or {}).get("rope_theta", own.get("rope_theta"))
    if theta and abs(float(theta) - float(arch["rope_theta"])) > 1e-6 * float(theta):
        yield f"model.architecture.rope_theta: {arch['rope_theta']} differs from {path}'s rope_theta {theta}"
