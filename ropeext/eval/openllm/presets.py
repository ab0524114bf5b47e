"""Task lists and the metric each task is reported by."""

from __future__ import annotations

import difflib

from ropeext.errors import RopeextError

NEXTLINE_TASK = "ropeext_nextline"
CODE_PPL_TASK = "ropeext_code_ppl"
LOCAL_TASKS = (NEXTLINE_TASK, CODE_PPL_TASK)

# (task, num_fewshot)
PRESETS: dict[str, list[tuple[str, int]]] = {
    # the DPRoPE paper's Table 2
    "dprope_paper": [("truthfulqa_mc2", 0), ("hellaswag", 0), ("mmlu", 5), ("arc_challenge", 25)],
    # the original Open LLM Leaderboard
    "leaderboard_v1": [
        ("arc_challenge", 25),
        ("hellaswag", 10),
        ("mmlu", 5),
        ("truthfulqa_mc2", 0),
        ("winogrande", 5),
        ("gsm8k", 5),
    ],
    # the embedded default: tasks built from the held-out corpus
    "local": [(NEXTLINE_TASK, 0), (CODE_PPL_TASK, 0)],
}

# metric key as lm-eval reports it ("<metric>" for the "none" filter, else "<metric>,<filter>")
HEADLINE: dict[str, str] = {
    "arc_challenge": "acc_norm",
    "hellaswag": "acc_norm",
    "mmlu": "acc",
    "truthfulqa_mc2": "acc",
    "winogrande": "acc",
    "gsm8k": "exact_match,strict-match",
    NEXTLINE_TASK: "acc_norm",
    CODE_PPL_TASK: "bits_per_byte",
}
# metrics in [0, 1] where higher is better: reported x100 and averaged
PERCENT_METRICS = ("acc", "acc_norm", "exact_match", "mc2", "f1")


def headline_metric(task: str, metrics: dict[str, float]) -> str | None:
    """The metric a task is reported by: the known one, else acc_norm, acc, or the first metric."""
    if task in HEADLINE and HEADLINE[task] in metrics:
        return HEADLINE[task]
    for name in ("acc_norm", "acc", "exact_match", "word_perplexity"):
        if name in metrics:
            return name
    return next(iter(metrics), None)


def is_percent(metric: str) -> bool:
    return metric.split(",")[0] in PERCENT_METRICS


def parse_task_list(text: str) -> list[tuple[str, int | None]]:
    """``"hellaswag:10,mmlu:5,winogrande"`` -> [("hellaswag", 10), ("mmlu", 5), ("winogrande", None)]."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, _, shots = item.partition(":")
        if not name:
            raise RopeextError(f"--tasks: empty task name in {text!r}")
        if shots:
            try:
                n = int(shots)
            except ValueError:
                raise RopeextError(f"--tasks: {item!r}: the few-shot count after ':' must be an integer") from None
            if n < 0:
                raise RopeextError(f"--tasks: {item!r}: the few-shot count must be >= 0")
            out.append((name, n))
        else:
            out.append((name, None))
    if not out:
        raise RopeextError(f"--tasks: no task names in {text!r}")
    return out


def preset_label(preset: str | None, tasks) -> str | None:
    """The preset a run used: None for an explicit task list, ``local`` when none is named."""
    return None if tasks else (preset or "local")


def resolve_tasks(
    preset: str | None = None, tasks: str | list | None = None, num_fewshot: int | None = None
) -> list[tuple[str, int]]:
    """The (task, num_fewshot) list a run evaluates: a preset, or an explicit list.

    Explicit entries without a count take ``num_fewshot`` (default 0). A task named twice is an error.
    """
    if preset is not None and tasks:
        raise RopeextError("give either --preset or --tasks, not both")
    if tasks:
        items = parse_task_list(tasks) if isinstance(tasks, str) else [tuple(t) for t in tasks]
        resolved = [(name, n if n is not None else (num_fewshot or 0)) for name, n in items]
    else:
        name = preset or "local"
        if name not in PRESETS:
            close = difflib.get_close_matches(name, PRESETS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RopeextError(f"unknown Open LLM preset {name!r}{hint}; expected one of {', '.join(PRESETS)}")
        resolved = [(t, num_fewshot if num_fewshot is not None else n) for t, n in PRESETS[name]]
    seen = set()
    for name, _ in resolved:
        if name in seen:
            raise RopeextError(f"task {name!r} is listed twice")
        seen.add(name)
    return resolved


def check_known(names: list[str], known: set[str], where: str) -> None:
    """Raise a clear error for task names lm-eval does not know, with the closest known names."""
    missing = [n for n in names if n not in known]
    if not missing:
        return
    msgs = []
    for n in missing:
        close = difflib.get_close_matches(n, sorted(known), n=3)
        msgs.append(f"{n!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    raise RopeextError(f"unknown lm-eval task {', '.join(msgs)}: not among {where}")
