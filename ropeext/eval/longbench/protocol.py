"""The LongBench prediction protocol: task lists, prompt assets, middle truncation.

The per-task prompt templates and generation lengths are the benchmark's own files
(``dataset2prompt.json`` and ``dataset2maxlen.json`` in the ``config/`` folder of the official
repository); they are read at run time from the user's copy and never shipped here (without it, a
benchmark task does not run on this engine; lm-eval's own tasks are ``eval.longbench.engine:
lm_eval``). What lives in code are facts of the protocol: which tasks skip a chat template, which
stop at a newline, and the prompt of this project's own embedded code-completion task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ropeext.errors import RopeextError
from ropeext.eval.common import tokenizer_adds_bos
from ropeext.eval.longbench import metrics

LONGBENCH_E_TASKS = (
    "qasper",
    "multifieldqa_en",
    "hotpotqa",
    "2wikimqa",
    "gov_report",
    "multi_news",
    "trec",
    "triviaqa",
    "samsum",
    "passage_count",
    "passage_retrieval_en",
    "lcc",
    "repobench-p",
)
LONGBENCH_TASKS = (
    "narrativeqa",
    "qasper",
    "multifieldqa_en",
    "multifieldqa_zh",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "dureader",
    "gov_report",
    "qmsum",
    "multi_news",
    "vcsum",
    "trec",
    "triviaqa",
    "samsum",
    "lsht",
    "passage_count",
    "passage_retrieval_en",
    "passage_retrieval_zh",
    "lcc",
    "repobench-p",
)
# Tasks whose prompt is never wrapped in a chat template (few-shot and code tasks).
NO_CHAT_TASKS = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
# Tasks whose generation also stops at the first newline token (after at least one new token).
NEWLINE_STOP_TASKS = frozenset({"samsum"})

# ---- this project's embedded task (a LongBench-E-style lcc built from held-out code) ----------
EMBEDDED_TASK = "heldout_lcc"
# Our own template: a Python comment, so that a small model trained on raw code sees familiar text.
EMBEDDED_PROMPT = "# ropeext held-out code completion: continue with the next line.\n{context}"
EMBEDDED_MAX_NEW_TOKENS = 32
metrics.EXTRA_TASK_METRIC[EMBEDDED_TASK] = "code_sim"
NO_CHAT_EMBEDDED = frozenset({EMBEDDED_TASK})

PROMPT_FILE = "dataset2prompt.json"
MAXLEN_FILE = "dataset2maxlen.json"


@dataclass(frozen=True)
class TaskSpec:
    name: str  # base task name (no ``_e``)
    prompt: str  # str.format template over the record's fields
    max_new_tokens: int
    metric: str
    use_chat: bool  # whether a chat template may be applied
    stop_at_newline: bool
    source: str  # where the template came from


def load_prompt_assets(prompts_dir: str | Path | None) -> tuple[dict, dict]:
    """Read the benchmark's ``dataset2prompt.json`` and ``dataset2maxlen.json`` from ``prompts_dir``."""
    if prompts_dir is None:
        return {}, {}
    folder = Path(prompts_dir)
    if not folder.is_dir():
        raise RopeextError(
            f"LongBench prompt folder not found: {folder} (expected the official repository's config/ "
            f"folder holding {PROMPT_FILE} and {MAXLEN_FILE})"
        )
    out = []
    for name in (PROMPT_FILE, MAXLEN_FILE):
        path = folder / name
        if not path.is_file():
            raise RopeextError(
                f"{path} not found (the LongBench prompt folder must hold {PROMPT_FILE} and {MAXLEN_FILE})"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RopeextError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RopeextError(f"{path}: expected a JSON object mapping task names, got {type(data).__name__}")
        out.append(data)
    return out[0], out[1]


def task_spec(
    task: str, prompts: dict, maxlens: dict, *, prompts_dir=None, embedded_max_new_tokens: int | None = None
) -> TaskSpec:
    """Everything the prediction loop needs for one task.

    The template and generation length come from the official files (``prompts``/``maxlens``
    read from ``prompts_dir``); the embedded task has its own.
    """
    name = metrics.base_task(task)
    metric = metrics.metric_name(name)  # raises for an unknown task
    if name == EMBEDDED_TASK:
        return TaskSpec(
            name,
            EMBEDDED_PROMPT,
            int(embedded_max_new_tokens or EMBEDDED_MAX_NEW_TOKENS),
            metric,
            use_chat=False,
            stop_at_newline=False,
            source="ropeext (embedded task)",
        )
    where = Path(prompts_dir) if prompts_dir else None
    if where is None and name not in prompts:
        raise RopeextError(
            f"LongBench task {name!r} needs the benchmark's prompt templates: set "
            f"eval.longbench.prompts_dir (--prompts) to the official repository's config/ folder "
            f"({PROMPT_FILE}, {MAXLEN_FILE}), or run lm-eval's own task (eval.longbench.engine: lm_eval)"
        )
    if name not in prompts or name not in maxlens:
        missing = PROMPT_FILE if name not in prompts else MAXLEN_FILE
        raise RopeextError(f"{where / missing if where else missing}: no entry for task {name!r}")
    max_new = maxlens[name]
    if not isinstance(max_new, int) or max_new < 1:
        raise RopeextError(f"{where / MAXLEN_FILE}: {name}: expected a positive integer, got {max_new!r}")
    return TaskSpec(
        name,
        str(prompts[name]),
        max_new,
        metric,
        use_chat=name not in NO_CHAT_TASKS,
        stop_at_newline=name in NEWLINE_STOP_TASKS,
        source=str(where),
    )


def format_prompt(template: str, record: dict, *, where: str = "") -> str:
    """``template.format(**record)`` with a clear message for a field the record lacks."""
    try:
        return template.format(**record)
    except KeyError as exc:
        raise RopeextError(
            f"{where}: the prompt template needs field {exc.args[0]!r}, which the record lacks "
            f"(fields: {', '.join(sorted(record))})"
        ) from None
    except (IndexError, ValueError) as exc:
        raise RopeextError(f"{where}: the prompt template cannot be formatted: {exc}") from None


def wants_bos(tokenizer, mode: str) -> bool:
    """Whether raw prompts start with BOS under ``eval.longbench.bos``.

    ``auto``: as the tokenizer itself does (the official prediction script tokenizes with the
    tokenizer's defaults; this project's tokenizers add BOS because their models were trained with
    it, SmolLM2's adds none); ``always``: BOS first even where the tokenizer does not add it;
    ``never``: no BOS, even where the tokenizer adds one. Chat-template prompts are encoded as the
    template renders them; only ``always`` puts a BOS in front of one that lacks it.
    """
    if mode not in ("auto", "always", "never"):
        raise RopeextError(f"--bos: {mode!r} is not one of auto, always, never")
    if tokenizer.bos_token_id is None or mode == "never":
        return False
    if mode == "always":
        return True
    return tokenizer_adds_bos(tokenizer)


def _raw_ids(tokenizer, text: str, add_bos: bool | None) -> list[int]:
    """The tokenizer's own encoding of ``text``; BOS put first (``add_bos`` True) or taken away (False)."""
    ids = list(tokenizer(text).input_ids)
    bos = tokenizer.bos_token_id
    starts = bool(ids) and bos is not None and ids[0] == bos
    if add_bos and not starts:
        ids = [bos] + ids
    elif add_bos is False and starts and tokenizer_adds_bos(tokenizer):
        ids = ids[1:]
    return ids


def encode_prompt(
    tokenizer, prompt: str, max_length: int, *, chat: bool = False, add_bos: bool | None = None
) -> tuple[list[int], dict]:
    """Tokenize a prompt the way the official prediction script does.

    A prompt longer than ``max_length`` tokens (BOS included) keeps its first and last
    ``max_length // 2`` tokens; both halves are decoded and the joined text re-tokenized (after the chat template, where
    used: the ids are then exactly ``tokenizer.apply_chat_template(...)``'s). Raw prompts start
    with BOS iff ``add_bos`` is True (see ``wants_bos``). Re-tokenization can change the count by a few
    tokens; if the result still exceeds ``max_length`` it is cut again in the middle, in token
    space, so the input always fits. ``add_bos`` None: the tokenizer's own special tokens.
    Returns the ids and a record of what happened.
    """
    if max_length < 2:
        raise RopeextError(f"maximum input length {max_length} leaves no room for a prompt (need >= 2 tokens)")
    ids = _raw_ids(tokenizer, prompt, add_bos)
    info = {"prompt_tokens": len(ids), "truncated": False, "recut": False}
    if len(ids) > max_length:
        half = max_length // 2
        prompt = tokenizer.decode(ids[:half], skip_special_tokens=True) + tokenizer.decode(
            ids[-half:], skip_special_tokens=True
        )
        info["truncated"] = True
    if chat:
        ids = list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True, return_dict=False
            )
        )
        if add_bos and (not ids or ids[0] != tokenizer.bos_token_id):
            ids = [tokenizer.bos_token_id] + ids
    else:
        ids = _raw_ids(tokenizer, prompt, add_bos)
    if len(ids) > max_length:
        head = max_length // 2
        ids = ids[:head] + ids[len(ids) - (max_length - head) :]
        info["recut"] = True
    info["input_tokens"] = len(ids)
    return ids, info


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def use_chat_for(spec: TaskSpec, tokenizer, mode: str) -> bool:
    """``auto``: a chat template where the tokenizer has one and the task allows it (base models
    have none); ``never``: plain prompts everywhere."""
    if mode not in ("auto", "never"):
        raise RopeextError(f"--chat-template: {mode!r} is not one of auto, never")
    return mode == "auto" and spec.use_chat and has_chat_template(tokenizer)
