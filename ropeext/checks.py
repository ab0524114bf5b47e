"""Every check of a resolved config that needs only the config and the file system.

The schema (``ropeext.config``) checks each value on its own; the checks here look at values
together, and at the files and folders they name, so that a config which would stop a job hours
into a run stops before any job runs. ``problems(config)`` runs them all and returns every problem
found, each naming the key (and the file) and what was expected. The workflow calls it at start
(``workflow/rules/common.smk``) and ``ropeext check --config FILE`` prints it.

Each check is a small function registered with ``@check`` in ``CHECKS``, in the order they run.
Checks marked ``paths`` read the file system (never write to it); they run while the config's
``check_paths`` is true, so the jobs of a config meant for another machine can still be listed.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ropeext.errors import RopeextError
from ropeext.io import is_hub_id

FLOAT32_MAX = float.fromhex("0x1.fffffep+127")  # the largest float32: a learning rate beyond it overflows


@dataclass(frozen=True)
class Check:
    name: str                                   # what it looks at (config keys)
    rejects: str                                # one line: what it rejects
    paths: bool                                 # whether it reads the file system
    run: Callable[[dict], Iterable[str]]        # the problems it finds in a resolved config


CHECKS: list[Check] = []


def check(name: str, rejects: str, *, paths: bool = False):
    """Register a check: a function of the resolved config yielding problem messages."""

    def register(fn):
        CHECKS.append(Check(name, rejects, paths, fn))
        return fn

    return register


def selected_checks(config: dict) -> list[Check]:
    """The checks that run for ``config``: all of them, or the value checks alone without ``check_paths``."""
    with_paths = config.get("check_paths", True)
    return [c for c in CHECKS if with_paths or not c.paths]


def problems(config: dict) -> list[str]:
    """Every problem the checks find in a resolved config (``ropeext.config.resolve_config``)."""
    found: list[str] = []
    for c in selected_checks(config):
        try:
            found.extend(c.run(config))
        except RopeextError as exc:
            found.append(f"{c.name}: {exc}")
        except OSError as exc:
            found.append(f"{c.name}: {exc.filename or ''} {exc.strerror or exc}".strip())
    return found


def raise_problems(config: dict, source: str = "config") -> None:
    """One RopeextError listing every problem of ``config``; nothing when there is none."""
    found = problems(config)
    if found:
        lines = "\n  - ".join(found)
        raise RopeextError(f"{source}: {len(found)} problem{'s' * (len(found) != 1)} found before any job runs "
                           f"(`ropeext check --config FILE` lists them too):\n  - {lines}")


# ---- helpers -------------------------------------------------------------------------------------

def _head_dim(config: dict) -> int:
    arch = config["model"]["architecture"]
    return arch["hidden_size"] // arch["num_attention_heads"]


def _method_lists(config: dict) -> dict[str, list[str]]:
    return {"extension.methods": config["extension"]["methods"],
            "rope.compare_methods": config["rope"]["compare_methods"],
            "rope.angles_methods": config["rope"]["angles_methods"]}


def _uses(config: dict, method: str) -> str | None:
    """Which method lists name ``method`` ("extension.methods, rope.compare_methods"), or None."""
    keys = [key for key, methods in _method_lists(config).items() if method in methods]
    return ", ".join(keys) or None


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def _models(config: dict, selection: list[str]) -> list[tuple[str, int, str]]:
    from ropeext.config import selected_models

    return selected_models(config, selection)


def _suites(config: dict) -> dict[str, dict]:
    """The evaluation sections that run (ppl always), by dotted key."""
    ev = config["eval"]
    suites = {f"eval.{name}": section for name, section in ev.items() if section.get("enabled", True)}
    if config["analysis"]["bf16"]["enabled"]:
        suites["analysis.bf16"] = config["analysis"]["bf16"]
    return suites


def _model_config(path: str) -> dict | None:
    """The config.json of a local model directory or of a hub id in the local cache, or None."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        from ropeext.modeling import local_snapshot

        folder = local_snapshot(path) if is_hub_id(path) else None
    if folder is None or not (folder / "config.json").is_file():
        return None
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---- training ------------------------------------------------------------------------------------

@check("finetune/pretrain batch and lr",
       "a batch_size that grad_accum (times the processes of resources.finetune.gpu) does not divide; an lr "
       "beyond float32")
def _training(config: dict) -> Iterator[str]:
    sections = ["finetune"] + (["pretrain"] if config["model"]["path"] is None else [])
    for name in sections:
        s = config[name]
        procs = 1
        if name == "finetune" and s["accelerate_config"] and config["resources"]["finetune"]["gpu"] > 0:
            procs = config["resources"]["finetune"]["gpu"]
        if s["batch_size"] % (s["grad_accum"] * procs):
            on = (f" on each of {procs} processes (resources.finetune.gpu with finetune.accelerate_config)"
                  if procs > 1 else "")
            yield (f"{name}.batch_size: {s['batch_size']} sequences do not split into {name}.grad_accum "
                   f"{s['grad_accum']} micro-batches{on}; expected a multiple of {s['grad_accum'] * procs}")
        if s["lr"] > FLOAT32_MAX:
            yield f"{name}.lr: {s['lr']:g} overflows float32 (largest {FLOAT32_MAX:.4g})"


@check("finetune.accelerate_config", "a launch config that is missing or not YAML; its num_processes not dividing "
       "the batch; DeepSpeed with grad_accum > 1", paths=True)
def _accelerate(config: dict) -> Iterator[str]:
    import yaml

    from ropeext.config import describe_yaml_error

    ft = config["finetune"]
    path = ft["accelerate_config"]
    if not path:
        return
    if not Path(path).is_file():
        yield f"finetune.accelerate_config: file not found: {path} (relative paths are read from the working directory)"
        return
    try:
        launch = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        yield f"finetune.accelerate_config: {describe_yaml_error(path, exc)}"
        return
    if not isinstance(launch, dict):
        yield f"finetune.accelerate_config: {path}: expected a mapping of accelerate settings"
        return
    gpus = config["resources"]["finetune"]["gpu"]
    procs = launch.get("num_processes")
    if not gpus and isinstance(procs, int) and procs > 0 and ft["batch_size"] % (ft["grad_accum"] * procs):
        yield (f"finetune.batch_size: {ft['batch_size']} sequences do not split into finetune.grad_accum "
               f"{ft['grad_accum']} micro-batches on each of the {procs} processes of {path} (num_processes)")
    if str(launch.get("distributed_type", "")).upper() == "DEEPSPEED" and ft["grad_accum"] != 1:
        yield (f"finetune.grad_accum: must be 1 under DeepSpeed ({path}), which steps its optimizer inside "
               "backward; raise the per-process batch or use config/accelerate/fsdp.yaml")


# ---- RoPE ----------------------------------------------------------------------------------------

@check("rope.threshold / rope.interpolated_dims",
       "both set at once; interpolated_dims odd, negative or above the head dimension (per target in the "
       "mapping form); a mapping without an entry for a target DPRoPE is solved at")
def _selection(config: dict) -> Iterator[str]:
    rope = config["rope"]
    dims = rope["interpolated_dims"]
    if rope["threshold"] is not None and dims is not None and _uses(config, "dprope") \
            and not _uses(config, "dprope_threshold"):
        yield ("rope.threshold and rope.interpolated_dims are both set: they are two ways of choosing the pairs "
               "DPRoPE interpolates (by disturbance gap, or by count); give one of them, or list dprope_threshold "
               "beside dprope (it takes the threshold, dprope the count)")
    if dims is None:
        return
    head = _head_dim(config)

    def bad(key, n):
        if isinstance(n, bool) or not isinstance(n, int) or n % 2 or not 0 <= n <= head:
            return (f"{key}: {n!r} must be an even number of dimensions (two per rotary pair) between 0 and the "
                    f"head dimension {head} (model.architecture hidden_size / num_attention_heads)")
        return None

    if not isinstance(dims, dict):
        problem = bad("rope.interpolated_dims", dims)
        if problem:
            yield problem
        return
    covered = set()
    for key, n in dims.items():
        try:
            covered.add(int(key))
        except (TypeError, ValueError):
            yield f"rope.interpolated_dims: {key!r} is not a target length (expected an integer key)"
            continue
        problem = bad(f"rope.interpolated_dims.{key}", n)
        if problem:
            yield problem
    missing = [t for t in config["extension"]["target_lengths"] if t not in covered]
    if missing and _uses(config, "dprope"):
        yield (f"rope.interpolated_dims: no entry for target length {', '.join(map(str, missing))} "
               f"(extension.target_lengths), where dprope is solved ({_uses(config, 'dprope')}); add one per "
               "target, or give one integer")


@check("rope methods", "base_change without a valid rope.new_rope_theta, longrope without rope.factors_file, "
       "llama3 factors out of order, a DPRoPE grid candidate below 2, a geometry the solver refuses")
def _methods(config: dict) -> Iterator[str]:
    from ropeext.rope.geometry import make_geometry

    rope = config["rope"]
    where = _uses(config, "base_change")
    if where:
        new = rope["new_rope_theta"]
        if new is None:
            yield (f"rope.new_rope_theta: required by base_change ({where}): the new RoPE base, written as a "
                   "number, e.g. 5.0e+6")
        elif not (math.isfinite(new) and new > 1):
            yield f"rope.new_rope_theta: {new!r} must be a finite number > 1 (base_change, {where})"
    where = _uses(config, "longrope")
    if where and not rope["factors_file"]:
        yield f"rope.factors_file: required by longrope ({where}): a CSV of one factor per rotary pair"
    where = _uses(config, "llama3")
    low, high = rope["llama3"]["low_freq_factor"], rope["llama3"]["high_freq_factor"]
    if where and not high > low:
        yield (f"rope.llama3.high_freq_factor: {high} must be greater than rope.llama3.low_freq_factor {low} "
               f"(llama3, {where})")
    if _uses(config, "dprope"):
        for name in rope["candidates"] or ():
            if name.startswith("grid:") and int(name.split(":", 1)[1]) < 2:
                yield f"rope.candidates: {name!r} must be grid:K with K >= 2"
    arch, train = config["model"]["architecture"], config["model"]["train_length"]
    for target in config["extension"]["target_lengths"]:
        try:
            make_geometry(arch["rope_theta"], _head_dim(config), train, target, warn=False)
        except RopeextError as exc:
            yield f"extension.target_lengths: {target}: {exc}"


@check("rope.factors_file", "a longrope factors file that is missing, unparsable or has the wrong count or a "
       "factor <= 0 (read with the solver's own parser)", paths=True)
def _factors(config: dict) -> Iterator[str]:
    from ropeext.rope.geometry import Geometry
    from ropeext.rope.methods import check_factors, read_factors_file

    path = config["rope"]["factors_file"]
    if not (path and _uses(config, "longrope")):
        return
    if not Path(path).is_file():
        yield f"rope.factors_file: file not found: {path} (longrope, {_uses(config, 'longrope')})"
        return
    arch, train = config["model"]["architecture"], config["model"]["train_length"]
    geometry = Geometry(arch["rope_theta"], _head_dim(config), train, max(config["extension"]["target_lengths"]))
    try:
        check_factors(read_factors_file(path), geometry, source=str(path))
    except RopeextError as exc:
        yield f"rope.factors_file: {str(exc).replace('--factors-file ', '')}"


# ---- data and models -----------------------------------------------------------------------------

@check("corpus.path", "a corpus folder, file or glob that matches nothing; an hf dataset that is neither a local "
       "folder nor in the cache while offline", paths=True)
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
        found = next((p for p in base.rglob("*") if p.is_file()), None) if base.is_dir() else \
            (base if base.is_file() else next(iter(glob.glob(path, recursive=True)), None))
        if found is None:
            yield f"corpus.path: no text file at {path!r} (corpus.source text: a folder, a file or a glob)"
    elif source in ("jsonl", "parquet"):
        if not (Path(path).is_file() or glob.glob(path, recursive=True)):
            yield f"corpus.path: no {source} file at {path!r} (a file or a glob)"
    elif source == "hf":
        if Path(path).expanduser().is_dir():
            return
        if not is_hub_id(path):
            yield f"corpus.path: dataset folder not found: {path} (corpus.source hf: a save_to_disk folder or a hub id)"
        elif _offline() and not _dataset_cached(path):
            yield (f"corpus.path: the hub dataset {path} is not in the local cache and downloads are off "
                   "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); download it once, or point corpus.path at a local copy")


def _dataset_cached(repo: str) -> bool:
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
    datasets = os.environ.get("HF_DATASETS_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "datasets")
    names = [Path(hub) / f"datasets--{repo.replace('/', '--')}", Path(datasets) / repo.replace("/", "___")]
    return any(p.exists() or p.with_name(p.name.lower()).exists() for p in names)


@check("model.path / tokenizer.path",
       "a model source that does not resolve (GGUF file, package shipping one, model folder, hub id), a model "
       "folder without config.json or weights, a truncated .safetensors file, model.architecture disagreeing "
       "with the model's config.json; a hub id outside the cache while offline", paths=True)
def _model(config: dict) -> Iterator[str]:
    m = config["model"]
    if m["path"]:
        yield from _model_path(config, m["path"])
    tok = config["tokenizer"]["path"]
    if tok:
        if Path(tok).expanduser().is_dir():
            return
        if not is_hub_id(tok):
            yield f"tokenizer.path: folder not found: {tok} (expected a tokenizer directory or a hub id like org/name)"
        elif _offline() and _model_config(tok) is None and not _cached_file(tok, "tokenizer_config.json"):
            yield f"tokenizer.path: the hub id {tok} is not in the local cache and downloads are off (HF_HUB_OFFLINE)"


def _cached_file(repo: str, name: str) -> bool:
    from ropeext.modeling import local_snapshot

    folder = local_snapshot(repo)
    return folder is not None and (folder / name).is_file()


def _model_path(config: dict, path: str) -> Iterator[str]:
    from ropeext.modeling import weight_file_problem, weight_files

    from ropeext.model_import import is_gguf_source, resolve_source

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
        names = weight_files(folder)
        if not any(not n.endswith(".json") for n in names):
            yield (f"model.path: {path} has no weight files (expected model.safetensors, model-*-of-*.safetensors or "
                   "pytorch_model.bin)")
        for name in names:
            problem = weight_file_problem(folder / name)
            if problem:
                yield f"model.path: {folder / name}: {problem}"
    elif not is_hub_id(path):
        yield f"model.path: model directory not found: {path} (expected a Hugging Face model directory or a hub id)"
        return
    elif _offline() and _model_config(path) is None:
        yield (f"model.path: the hub model {path} is not in the local cache and downloads are off (HF_HUB_OFFLINE); "
               "download it once, or point model.path at a local copy")
        return
    own = _model_config(path)
    if own is None:
        return
    arch = config["model"]["architecture"]
    heads = own.get("num_attention_heads")
    head_dim = own.get("head_dim") or (own["hidden_size"] // heads if own.get("hidden_size") and heads else None)
    if head_dim and head_dim != _head_dim(config):
        yield (f"model.architecture: head dimension {_head_dim(config)} (hidden_size / num_attention_heads) differs "
               f"from {path}'s {head_dim}; the RoPE solve would use the wrong geometry")
    theta = (own.get("rope_parameters") or {}).get("rope_theta", own.get("rope_theta"))
    if theta and abs(float(theta) - float(arch["rope_theta"])) > 1e-6 * float(theta):
        yield f"model.architecture.rope_theta: {arch['rope_theta']} differs from {path}'s rope_theta {theta}"


# ---- evaluations ---------------------------------------------------------------------------------

@check("extension.finetune_methods", "a fine-tuned method that is not among extension.methods")
def _finetune_methods(config: dict) -> Iterator[str]:
    ext = config["extension"]
    extra = [m for m in ext["finetune_methods"] or () if m not in ext["methods"]]
    if extra:
        yield (f"extension.finetune_methods: {', '.join(extra)} not in extension.methods "
               f"({', '.join(ext['methods'])}); a fine-tuned method must also be extended")


@check("eval.*.variants", "an enabled evaluation whose variants select no model")
def _variants(config: dict) -> Iterator[str]:
    for key, section in _suites(config).items():
        if not _models(config, section["variants"]):
            yield (f"{key}.variants: {section['variants']} select no model (extension.layouts: "
                   f"{', '.join(config['extension']['layouts'])}); the suite would run on nothing")


@check("eval.ppl", "a stride above the shortest context length")
def _ppl(config: dict) -> Iterator[str]:
    ppl = config["eval"]["ppl"]
    if ppl["stride"] > min(ppl["lengths"]):
        yield f"eval.ppl.stride: {ppl['stride']} is larger than the shortest of eval.ppl.lengths ({min(ppl['lengths'])})"
    if min(ppl["lengths"]) < 2:
        yield f"eval.ppl.lengths: every length must be >= 2, got {ppl['lengths']}"


@check("eval.passkey", "lengths that with the generated tokens exceed eval.passkey.max_length")
def _passkey(config: dict) -> Iterator[str]:
    p = config["eval"]["passkey"]
    if not p["enabled"] or p["max_length"] is None:
        return
    too_long = [n for n in p["lengths"] if n + p["max_new_tokens"] > p["max_length"]]
    if too_long:
        yield (f"eval.passkey.lengths: {', '.join(map(str, too_long))} (+ eval.passkey.max_new_tokens "
               f"{p['max_new_tokens']}) exceed eval.passkey.max_length {p['max_length']}; drop them or raise the limit")


@check("eval.ruler", "unknown tasks; lengths beyond eval.ruler.max_length, or beyond an evaluated model's window "
       "when it is null; a task list of QA tasks only without their files (every cell skipped)")
def _ruler(config: dict) -> Iterator[str]:
    from ropeext.eval.ruler.tasks import QA_TASKS, TASKS, resolve_tasks

    r = config["eval"]["ruler"]
    if not r["enabled"]:
        return
    try:
        tasks, _ = resolve_tasks(r["tasks"], r["subset"])
    except RopeextError as exc:
        yield f"eval.ruler.tasks: {exc}"
        return
    runnable = [t for t in tasks if t not in QA_TASKS or r[TASKS[t]["dataset"]]]
    if not runnable:
        yield (f"eval.ruler.tasks: {', '.join(tasks)} are QA tasks and eval.ruler.squad / eval.ruler.hotpotqa are "
               "null: every one would be skipped and the suite would measure nothing")
    if r["max_length"] is not None:
        too_long = [n for n in r["lengths"] if n > r["max_length"]]
        if too_long:
            yield (f"eval.ruler.lengths: {', '.join(map(str, too_long))} exceed eval.ruler.max_length "
                   f"{r['max_length']}")
        return
    for window, names in _windows(config, r["variants"]).items():
        too_long = [n for n in r["lengths"] if n > window]
        if too_long:
            yield (f"eval.ruler.lengths: {', '.join(map(str, too_long))} exceed the {window}-token window of "
                   f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}, and eval.ruler.max_length is null "
                   "(= the model's window): the RULER job would stop; set eval.ruler.max_length to measure past "
                   "the window, or drop those lengths")


def _windows(config: dict, selection: list[str]) -> dict[int, list[str]]:
    """{window: [model names]} of the models a selection evaluates. Every evaluated model carries a
    scaling, whose max_position_embeddings is the target length (the pre-training length for dynamic_ntk,
    which grows its base with the running length)."""
    name, train = config["model"]["name"], config["model"]["train_length"]
    out: dict[int, list[str]] = {}
    for method, target, layout in _models(config, selection):
        window = train if method == "dynamic_ntk" else target
        out.setdefault(int(window), []).append(f"{name}-{method}-{target}-{layout}")
    return out


@check("eval.ruler files", "an essay source, SQuAD or HotpotQA file that does not exist; a templates file that "
       "does not parse; official templates without lm-eval", paths=True)
def _ruler_files(config: dict) -> Iterator[str]:
    from ropeext.eval.ruler.tasks import load_templates

    r = config["eval"]["ruler"]
    if not r["enabled"]:
        return
    essay = r["essay_source"]
    if essay and not (Path(essay).is_dir() or Path(essay).is_file()):
        yield f"eval.ruler.essay_source: not found: {essay} (a folder of .txt files or a tokens Parquet)"
    for key in ("squad", "hotpotqa"):
        if r[key] and not Path(r[key]).is_file():
            yield f"eval.ruler.{key}: file not found: {r[key]}"
    try:
        load_templates(r["templates"])
    except RopeextError as exc:
        yield f"eval.ruler.templates: {exc}"


@check("eval.longbench", "task names the benchmark does not have; an embedded task other than the one ropeext "
       "scores; bucket windows or edges that do not increase")
def _longbench(config: dict) -> Iterator[str]:
    from ropeext.eval.longbench import metrics, protocol
    from ropeext.eval.longbench.data import MANIFEST

    lb = config["eval"]["longbench"]
    if not lb["enabled"]:
        return
    if lb["data_dir"] is None:
        yield from _embedded(config)
        known = [lb["embedded"]["task"]]
    else:
        known = list(protocol.LONGBENCH_E_TASKS if lb["benchmark"] == "longbench-e" else protocol.LONGBENCH_TASKS)
        manifest = Path(lb["data_dir"]) / MANIFEST
        if manifest.is_file():  # a folder written by --build-embedded names its own tasks
            try:
                known += list(json.loads(manifest.read_text()).get("tasks", {}))
            except (ValueError, AttributeError):
                yield f"eval.longbench.data_dir: {manifest}: not valid JSON with a 'tasks' object"
    unknown = [t for t in (lb["tasks"] or ()) if metrics.base_task(t) not in known]
    if unknown:
        yield (f"eval.longbench.tasks: unknown task(s) {', '.join(unknown)} for "
               f"{'the embedded data' if lb['data_dir'] is None else 'benchmark ' + lb['benchmark']} "
               f"(known: {', '.join(known)})")


def _embedded(config: dict) -> Iterator[str]:
    from ropeext.eval.longbench import protocol
    from ropeext.eval.longbench.embedded import default_edges
    from ropeext.eval.longbench.results import edge_buckets
    from ropeext.eval.longbench.run import embedded_windows

    emb = config["eval"]["longbench"]["embedded"]
    if emb["task"] != protocol.EMBEDDED_TASK:
        yield (f"eval.longbench.embedded.task: {emb['task']!r} cannot be scored: the embedded task is "
               f"{protocol.EMBEDDED_TASK} (its code-similarity metric is registered under that name)")
    L, targets = config["model"]["train_length"], config["extension"]["target_lengths"]
    try:
        if emb["bucket_edges"]:
            edge_buckets(emb["bucket_edges"])
        else:
            default_edges(embedded_windows(config["eval"]["longbench"], L, targets), emb["margin"])
    except RopeextError as exc:
        yield f"eval.longbench.embedded: {exc}"


@check("eval.longbench files", "a data_dir that is neither a folder, a .zip nor hf:<repo> in the cache; a task "
       "file missing from the folder; a prompts_dir without the two official JSON files", paths=True)
def _longbench_files(config: dict) -> Iterator[str]:
    from ropeext.eval.longbench import data, protocol

    lb = config["eval"]["longbench"]
    if not lb["enabled"] or lb["data_dir"] is None:
        return
    spec = str(lb["data_dir"])
    if spec.startswith(data.HF_PREFIX):
        repo = spec[len(data.HF_PREFIX):] or data.HF_DEFAULT_REPO
        if _offline() and not _cached_dataset_file(repo, "data.zip"):
            yield (f"eval.longbench.data_dir: {spec}: data.zip of {repo} is not in the local cache and downloads are "
                   "off; download the benchmark's data.zip and give its path or the unpacked folder")
    elif Path(spec).is_file():
        if Path(spec).suffix != ".zip":
            yield f"eval.longbench.data_dir: {spec} is a file but not a .zip (expected LongBench's data.zip or a folder)"
    elif not Path(spec).is_dir():
        yield (f"eval.longbench.data_dir: LongBench data not found: {spec} (a folder of <task>.jsonl / "
               "<task>_e.jsonl files, the benchmark's data.zip, or hf:THUDM/LongBench)")
    elif not (Path(spec) / data.MANIFEST).is_file():
        longbench_e = lb["benchmark"] == "longbench-e"
        tasks = lb["tasks"] or (protocol.LONGBENCH_E_TASKS if longbench_e else protocol.LONGBENCH_TASKS)
        suffix = "_e.jsonl" if longbench_e else ".jsonl"
        missing = [t for t in tasks if not (Path(spec) / f"{t.removesuffix('_e')}{suffix}").is_file()]
        if missing:
            yield (f"eval.longbench.data_dir: {spec} lacks the file(s) of {', '.join(missing)} "
                   f"(<task>{suffix}, benchmark {lb['benchmark']})")
    prompts = lb["prompts_dir"]
    if prompts:
        try:
            protocol.load_prompt_assets(prompts)
        except RopeextError as exc:
            yield f"eval.longbench.prompts_dir: {exc}"


def _cached_dataset_file(repo: str, name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, name, repo_type="dataset"), str)
    except Exception:  # noqa: BLE001 - an unusable cache counts as not cached
        return False


@check("eval.openllm", "a preset and a task list at once; a task list that does not parse; a batch size that is "
       "neither a positive integer nor auto")
def _openllm(config: dict) -> Iterator[str]:
    from ropeext.eval.openllm.presets import parse_task_list

    o = config["eval"]["openllm"]
    if not o["enabled"]:
        return
    if o["preset"] is not None and o["tasks"]:
        yield ("eval.openllm.preset and eval.openllm.tasks are both set: a run evaluates a preset or a task list; "
               "give one of them")
    if o["tasks"]:
        try:
            parse_task_list(o["tasks"])
        except RopeextError as exc:
            yield f"eval.openllm.tasks: {str(exc).replace('--tasks: ', '')}"
    bs = o["batch_size"]
    if not ((isinstance(bs, int) and bs > 0) or bs == "auto"):
        yield f"eval.openllm.batch_size: {bs!r} is neither a positive integer nor auto"


# ---- packing, outputs, report --------------------------------------------------------------------

@check("packing", "interleave settings that cannot cut the documents they name; a tag template the anchor_tag "
       "layout cannot render")
def _packing(config: dict) -> Iterator[str]:
    from ropeext.data.packing import INTERLEAVED, TAGGED, check_interleave, render_tag

    layouts = config["extension"]["layouts"]
    p = config["packing"]
    if any(layout in INTERLEAVED for layout in layouts):
        try:
            check_interleave(p["interleave"])
        except RopeextError as exc:
            yield str(exc)
    if any(layout in TAGGED for layout in layouts):
        try:
            render_tag(p["tag_template"], "domain")
        except RopeextError as exc:
            yield str(exc)


@check("results_dir", "a results folder that is a file, lies under a file or cannot be written", paths=True)
def _results_dir(config: dict) -> Iterator[str]:
    from ropeext.io import output_problem

    problem = output_problem(config["results_dir"], "folder")
    if problem:
        yield f"results_dir: {problem}"


@check("report.references", "a published-values file that is missing or does not load", paths=True)
def _references(config: dict) -> Iterator[str]:
    from ropeext.report.references import load_references
    from ropeext.report.summary import REPOSITORY_REFERENCES

    path = Path(config["report"]["references"] or REPOSITORY_REFERENCES)
    try:
        stat = path.stat()
    except OSError:
        stat = None
    try:
        _loads(load_references, str(path), stat and (stat.st_mtime_ns, stat.st_size))
    except RopeextError as exc:
        yield f"report.references: {exc}"


@functools.lru_cache(maxsize=8)
def _loads(load, path: str, version) -> bool:
    """``load(path)`` once per version (modification time and size) of the file: it loads or raises."""
    load(path)
    return True


@check("eval.*.engine", "an lm_eval engine whose datasets are neither in the local cache nor reachable (what to "
       "download and where to cache it)", paths=True)
def _engines(config: dict) -> Iterator[str]:
    if all(config["eval"][s]["engine"] != "lm_eval" or not config["eval"][s]["enabled"] for s in ("ruler", "longbench")):
        return
    from ropeext.eval.lmeval_engine import engine_problems

    yield from engine_problems(config)
