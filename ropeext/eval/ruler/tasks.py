"""The 13 RULER tasks: their settings, prompt templates, answer prefixes and task subsets.

Task settings, answer prefixes, generation lengths and metrics follow RULER's task table. The
prompt wording comes from one of two sources (``load_templates``):

- ``ropeext``: this project's own wording (``ROPEEXT_TEMPLATES``), with RULER's generation lengths;
- a templates file (YAML or JSON: kind -> ``FILE_FIELDS``), the user's copy of RULER's wording for
  example, whose fields replace those of the ``ropeext`` wording. Besides ``template``,
  ``answer_prefix`` and ``max_new_tokens``, a kind may give a one-needle wording (``template_single``,
  ``answer_prefix_single``), the raw answer prefix of worked examples (``example_answer_prefix``) and a
  ``delimiter`` put between question and answer prefix (see ``generate.render``). A kind whose
  ``template`` the file gives is recorded as the file's (``template_source``), the others as ``ropeext``.

Prompts use the base-model format: instructions, then the answer prefix, no chat template.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from ropeext.errors import RopeextError

TASKS: dict[str, dict] = {
    "niah_single_1": {"kind": "niah", "haystack": "noise", "key": "words", "value": "numbers", "k": 1, "v": 1, "q": 1},
    "niah_single_2": {"kind": "niah", "haystack": "essay", "key": "words", "value": "numbers", "k": 1, "v": 1, "q": 1},
    "niah_single_3": {"kind": "niah", "haystack": "essay", "key": "words", "value": "uuids", "k": 1, "v": 1, "q": 1},
    "niah_multikey_1": {
        "kind": "niah",
        "haystack": "essay",
        "key": "words",
        "value": "numbers",
        "k": 4,
        "v": 1,
        "q": 1,
    },
    "niah_multikey_2": {
        "kind": "niah",
        "haystack": "needle",
        "key": "words",
        "value": "numbers",
        "k": 1,
        "v": 1,
        "q": 1,
    },
    "niah_multikey_3": {"kind": "niah", "haystack": "needle", "key": "uuids", "value": "uuids", "k": 1, "v": 1, "q": 1},
    "niah_multivalue": {
        "kind": "niah",
        "haystack": "essay",
        "key": "words",
        "value": "numbers",
        "k": 1,
        "v": 4,
        "q": 1,
    },
    "niah_multiquery": {
        "kind": "niah",
        "haystack": "essay",
        "key": "words",
        "value": "numbers",
        "k": 1,
        "v": 1,
        "q": 4,
    },
    "vt": {"kind": "vt", "chains": 1, "hops": 4},
    "cwe": {"kind": "cwe", "num_cw": 10, "freq_cw": 30, "freq_ucw": 3},
    "fwe": {"kind": "fwe", "alpha": 2.0},
    "qa_1": {"kind": "qa", "dataset": "squad"},
    "qa_2": {"kind": "qa", "dataset": "hotpotqa"},
}

TASK_NAMES = tuple(TASKS)
QA_TASKS = ("qa_1", "qa_2")

SUBSETS: dict[str, tuple[str, ...]] = {
    "all": TASK_NAMES,
    "synthetic": tuple(t for t in TASK_NAMES if t not in QA_TASKS),
    # The AnchorAttention paper's Llama-2-7B tables leave out niah_multikey_3 and cwe.
    "anchor_llama2": tuple(t for t in TASK_NAMES if t not in ("niah_multikey_3", "cwe")),
}

METRICS = {
    "niah": "string_match_all",
    "vt": "string_match_all",
    "cwe": "string_match_all",
    "fwe": "string_match_all",
    "qa": "string_match_part",
}

ROPEEXT_TEMPLATES: dict[str, dict] = {
    "niah": {
        "template": "Memorize the special magic {type_v} hidden in the text below; a question about "
        "{them} follows.\n{context}\nWhat {verb} the special magic {type_v} for {query} "
        "mentioned in the provided text?",
        "answer_prefix": " The special magic {type_v} for {query} mentioned in the provided text {verb}",
        "max_new_tokens": 128,
    },
    "vt": {
        "template": "Follow the chain(s) of variable assignments hidden in the text below and keep "
        "track of them.\n\n{context}\nQuestion: Which variables are assigned the value "
        "{query} in the text above?",
        "answer_prefix": " Answer: According to the chain(s) of variable assignment in the text above, "
        "{num_v} variables are assgined the value {query}, they are: ",
        "max_new_tokens": 30,
    },
    "cwe": {
        "template": "Here is a numbered list of words. Some words occur in it more often than others; "
        "memorize the most frequent ones.\n{context}\nQuestion: Which {num_cw} words occur "
        "most often in the list above?",
        "answer_prefix": " Answer: The top {num_cw} words that appear most often in the list are:",
        "max_new_tokens": 120,
    },
    "fwe": {
        "template": "Read the coded text below and count how often each coded word occurs; find the "
        "three coded words that occur most often. {context}\nQuestion: Give no explanation "
        "and ignore the dots '....'. Which three words occur most often in the coded text above?",
        "answer_prefix": " Answer: According to the coded text above, the three most frequently appeared words are:",
        "max_new_tokens": 50,
    },
    "qa": {
        "template": "Answer the question using the documents below. Reply with the answer only and "
        "no other words.\n\nThe documents:\n\n{context}\n\nAnswer the question using the "
        "documents above. Reply with the answer only and no other words.\n\nQuestion: {query}",
        "answer_prefix": " Answer:",
        "max_new_tokens": 32,
    },
}


def resolve_tasks(tasks: list[str] | str | None = None, subset: str | None = None) -> tuple[list[str], str]:
    """The task list and a label for it (the subset name, or ``custom``).

    ``tasks`` (names or a comma-separated string) wins over ``subset``; neither means ``all``.
    """
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if tasks:
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise RopeextError(f"unknown RULER task(s): {', '.join(unknown)} (known: {', '.join(TASK_NAMES)})")
        ordered = [t for t in TASK_NAMES if t in set(tasks)]
        label = next((name for name, members in SUBSETS.items() if list(members) == ordered), "custom")
        return ordered, label
    subset = subset or "all"
    if subset not in SUBSETS:
        raise RopeextError(f"unknown RULER task subset {subset!r} (known: {', '.join(SUBSETS)})")
    return list(SUBSETS[subset]), subset


FILE_FIELDS = (
    "template",
    "template_single",
    "answer_prefix",
    "answer_prefix_single",
    "example_answer_prefix",
    "delimiter",
    "max_new_tokens",
)


def load_templates(source: str | Path | None = "ropeext") -> dict[str, dict]:
    """The templates of ``source``: ``ropeext`` (also None) or a templates file; every kind's entry names
    where it came from (``source``)."""
    templates = copy.deepcopy(ROPEEXT_TEMPLATES)
    for entry in templates.values():
        entry["source"] = "ropeext"
    if source is None or str(source) == "ropeext":
        return templates
    return _overlay_file(templates, Path(source))


def describe_templates(templates: dict[str, dict]) -> dict:
    """What the metrics record about the prompts: each kind's source."""
    return {"template_source": {kind: e.get("source", "ropeext") for kind, e in templates.items()}}


def _overlay_file(templates: dict[str, dict], path: Path) -> dict[str, dict]:
    """``templates`` with any kind's fields replaced by those in the file at ``path``."""
    if not path.is_file():
        raise RopeextError(
            f"templates file not found: {path} (eval.ruler.templates takes ropeext or the path of "
            "a YAML/JSON templates file)"
        )
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text()) or {}
        else:
            data = json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001 - YAML and JSON errors alike
        raise RopeextError(f"templates file {path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise RopeextError(f"templates file {path}: expected a mapping of task kind -> fields")
    for kind, fields in data.items():
        if kind not in templates:
            raise RopeextError(f"templates file {path}: unknown task kind {kind!r} (known: {', '.join(templates)})")
        if not isinstance(fields, dict):
            raise RopeextError(f"templates file {path}: {kind}: expected a mapping")
        for key, value in fields.items():
            if key not in FILE_FIELDS:
                raise RopeextError(
                    f"templates file {path}: {kind}.{key}: unknown field (allowed: {', '.join(FILE_FIELDS)})"
                )
            if key == "max_new_tokens" and (not isinstance(value, int) or value <= 0):
                raise RopeextError(f"templates file {path}: {kind}.max_new_tokens: {value!r} is not a positive integer")
            if key != "max_new_tokens" and not isinstance(value, str):
                raise RopeextError(f"templates file {path}: {kind}.{key}: expected a string")
            templates[kind][key] = value
        own = "template" not in fields
        templates[kind]["source"] = f"ropeext, with fields from {path}" if own else f"templates file {path}"
        if "{context}" not in templates[kind]["template"]:
            raise RopeextError(f"templates file {path}: {kind}.template has no {{context}} placeholder")
    return templates
