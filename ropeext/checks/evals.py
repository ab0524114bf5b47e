"""Checks of the evaluation suites: the models each selects, lengths against windows, task names, data files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ropeext.checks.registry import check, offline
from ropeext.config import model_window, selected_models
from ropeext.errors import RopeextError
from ropeext.eval.lmeval_engine import engine_problems
from ropeext.eval.longbench import data, metrics, protocol
from ropeext.eval.longbench.data import MANIFEST
from ropeext.eval.longbench.embedded import default_edges
from ropeext.eval.longbench.results import edge_buckets
from ropeext.eval.longbench.run import embedded_windows
from ropeext.eval.openllm.presets import parse_task_list
from ropeext.eval.ruler.tasks import QA_TASKS, TASKS, load_templates, resolve_tasks
from ropeext.suites import SUITES


def _suites(config: dict) -> dict[str, dict]:
    """The config sections of the evaluation suites that run (ppl always), by dotted key."""
    sections = {suite.section: suite.config(config) for suite in SUITES}
    return {key: section for key, section in sections.items() if section.get("enabled", True)}


@check("extension.finetune_methods", "a fine-tuned method that is not among extension.methods")
def _finetune_methods(config: dict) -> Iterator[str]:
    ext = config["extension"]
    extra = [m for m in ext["finetune_methods"] or () if m not in ext["methods"]]
    if extra:
        yield (
            f"extension.finetune_methods: {', '.join(extra)} not in extension.methods "
            f"({', '.join(ext['methods'])}); a fine-tuned method must also be extended"
        )


@check("eval.*.variants", "an enabled evaluation whose variants select no model")
def _variants(config: dict) -> Iterator[str]:
    for key, section in _suites(config).items():
        if not selected_models(config, section["variants"]):
            yield (
                f"{key}.variants: {section['variants']} select no model (extension.layouts: "
                f"{', '.join(config['extension']['layouts'])}); the suite would run on nothing"
            )


@check("eval.ppl", "a stride above the shortest context length")
def _ppl(config: dict) -> Iterator[str]:
    ppl = config["eval"]["ppl"]
    if ppl["stride"] > min(ppl["lengths"]):
        yield (
            f"eval.ppl.stride: {ppl['stride']} is larger than the shortest of eval.ppl.lengths ({min(ppl['lengths'])})"
        )
    if min(ppl["lengths"]) < 2:
        yield f"eval.ppl.lengths: every length must be >= 2, got {ppl['lengths']}"


@check("eval.passkey", "lengths that with the generated tokens exceed eval.passkey.max_length")
def _passkey(config: dict) -> Iterator[str]:
    p = config["eval"]["passkey"]
    if not p["enabled"] or p["max_length"] is None:
        return
    too_long = [n for n in p["lengths"] if n + p["max_new_tokens"] > p["max_length"]]
    if too_long:
        yield (
            f"eval.passkey.lengths: {', '.join(map(str, too_long))} (+ eval.passkey.max_new_tokens "
            f"{p['max_new_tokens']}) exceed eval.passkey.max_length {p['max_length']}; drop them or raise the limit"
        )


@check(
    "eval.ruler",
    "unknown tasks; lengths beyond eval.ruler.max_length, or beyond an evaluated model's window "
    "when it is null; a task list of QA tasks only without their files (every cell skipped)",
)
def _ruler(config: dict) -> Iterator[str]:
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
        yield (
            f"eval.ruler.tasks: {', '.join(tasks)} are QA tasks and eval.ruler.squad / eval.ruler.hotpotqa are "
            "null: every one would be skipped and the suite would measure nothing"
        )
    if r["max_length"] is not None:
        too_long = [n for n in r["lengths"] if n > r["max_length"]]
        if too_long:
            yield (
                f"eval.ruler.lengths: {', '.join(map(str, too_long))} exceed eval.ruler.max_length {r['max_length']}"
            )
        return
    for window, names in _windows(config, r["variants"]).items():
        too_long = [n for n in r["lengths"] if n > window]
        if too_long:
            yield (
                f"eval.ruler.lengths: {', '.join(map(str, too_long))} exceed the {window}-token window of "
                f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}, and eval.ruler.max_length is null "
                "(= the model's window): the RULER job would stop; set eval.ruler.max_length to measure past "
                "the window, or drop those lengths"
            )


def _windows(config: dict, selection: list[str]) -> dict[int, list[str]]:
    """{window: [model names]} of the models a selection evaluates. Every evaluated model carries a
    scaling, whose max_position_embeddings is the target length (the pre-training length for dynamic_ntk,
    which grows its base with the running length)."""
    name = config["model"]["name"]
    out: dict[int, list[str]] = {}
    for method, target, layout in selected_models(config, selection):
        out.setdefault(int(model_window(config, method, target)), []).append(f"{name}-{method}-{target}-{layout}")
    return out


@check(
    "eval.ruler files",
    "an essay source, SQuAD or HotpotQA file that does not exist; a templates file that does not parse",
    paths=True,
)
def _ruler_files(config: dict) -> Iterator[str]:
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


@check(
    "eval.longbench",
    "task names the benchmark does not have; an embedded task other than the one ropeext "
    "scores; bucket windows or edges that do not increase",
)
def _longbench(config: dict) -> Iterator[str]:
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
        yield (
            f"eval.longbench.tasks: unknown task(s) {', '.join(unknown)} for "
            f"{'the embedded data' if lb['data_dir'] is None else 'benchmark ' + lb['benchmark']} "
            f"(known: {', '.join(known)})"
        )


def _embedded(config: dict) -> Iterator[str]:
    emb = config["eval"]["longbench"]["embedded"]
    if emb["task"] != protocol.EMBEDDED_TASK:
        yield (
            f"eval.longbench.embedded.task: {emb['task']!r} cannot be scored: the embedded task is "
            f"{protocol.EMBEDDED_TASK} (its code-similarity metric is registered under that name)"
        )
    L, targets = config["model"]["train_length"], config["extension"]["target_lengths"]
    try:
        if emb["bucket_edges"]:
            edge_buckets(emb["bucket_edges"])
        else:
            default_edges(embedded_windows(config["eval"]["longbench"], L, targets), emb["margin"])
    except RopeextError as exc:
        yield f"eval.longbench.embedded: {exc}"


@check(
    "eval.longbench files",
    "a data_dir that is neither a folder, a .zip nor hf:<repo> in the cache; a task "
    "file missing from the folder; a prompts_dir without the two official JSON files",
    paths=True,
)
def _longbench_files(config: dict) -> Iterator[str]:
    lb = config["eval"]["longbench"]
    if not lb["enabled"] or lb["data_dir"] is None:
        return
    spec = str(lb["data_dir"])
    if spec.startswith(data.HF_PREFIX):
        repo = spec[len(data.HF_PREFIX) :] or data.HF_DEFAULT_REPO
        if offline() and not _cached_dataset_file(repo, "data.zip"):
            yield (
                f"eval.longbench.data_dir: {spec}: data.zip of {repo} is not in the local cache and downloads are "
                "off; download the benchmark's data.zip and give its path or the unpacked folder"
            )
    elif Path(spec).is_file():
        if Path(spec).suffix != ".zip":
            yield (
                f"eval.longbench.data_dir: {spec} is a file but not a .zip (expected LongBench's data.zip or a folder)"
            )
    elif not Path(spec).is_dir():
        yield (
            f"eval.longbench.data_dir: LongBench data not found: {spec} (a folder of <task>.jsonl / "
            "<task>_e.jsonl files, the benchmark's data.zip, or hf:THUDM/LongBench)"
        )
    elif not (Path(spec) / data.MANIFEST).is_file():
        longbench_e = lb["benchmark"] == "longbench-e"
        tasks = lb["tasks"] or (protocol.LONGBENCH_E_TASKS if longbench_e else protocol.LONGBENCH_TASKS)
        suffix = "_e.jsonl" if longbench_e else ".jsonl"
        missing = [t for t in tasks if not (Path(spec) / f"{t.removesuffix('_e')}{suffix}").is_file()]
        if missing:
            yield (
                f"eval.longbench.data_dir: {spec} lacks the file(s) of {', '.join(missing)} "
                f"(<task>{suffix}, benchmark {lb['benchmark']})"
            )
    prompts = lb["prompts_dir"]
    if prompts:
        try:
            protocol.load_prompt_assets(prompts)
        except RopeextError as exc:
            yield f"eval.longbench.prompts_dir: {exc}"
    elif (
        lb["engine"] == "ropeext"
        and (spec.startswith(data.HF_PREFIX) or Path(spec).exists())
        and not (Path(spec) / data.MANIFEST).is_file()
    ):
        yield (
            "eval.longbench.prompts_dir: null, but the benchmark's tasks in data_dir need its prompt templates: "
            "the official repository's config/ folder, or eval.longbench.engine: lm_eval"
        )


def _cached_dataset_file(repo: str, name: str) -> bool:
    try:
        # heavy: huggingface_hub's API module takes ~0.2 s to import; only hub look-ups need it
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, name, repo_type="dataset"), str)
    except Exception:  # noqa: BLE001 - an unusable cache counts as not cached
        return False


@check(
    "eval.openllm",
    "a preset and a task list at once; a task list that does not parse; a batch size that is "
    "neither a positive integer nor auto",
)
def _openllm(config: dict) -> Iterator[str]:
    o = config["eval"]["openllm"]
    if not o["enabled"]:
        return
    if o["preset"] is not None and o["tasks"]:
        yield (
            "eval.openllm.preset and eval.openllm.tasks are both set: a run evaluates a preset or a task list; "
            "give one of them"
        )
    if o["tasks"]:
        try:
            parse_task_list(o["tasks"])
        except RopeextError as exc:
            yield f"eval.openllm.tasks: {str(exc).replace('--tasks: ', '')}"
    bs = o["batch_size"]
    if not ((isinstance(bs, int) and bs > 0) or bs == "auto"):
        yield f"eval.openllm.batch_size: {bs!r} is neither a positive integer nor auto"


@check(
    "eval.*.engine",
    "an lm_eval engine whose tasks cannot load their data here (lm-eval asked; what to fetch and how)",
    paths=True,
)
def _engines(config: dict) -> Iterator[str]:
    if all(
        config["eval"][s]["engine"] != "lm_eval" or not config["eval"][s]["enabled"] for s in ("ruler", "longbench")
    ):
        return

    yield from engine_problems(config)
