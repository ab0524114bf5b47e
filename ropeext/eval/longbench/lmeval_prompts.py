"""LongBench prompts and generation lengths from the installed lm-eval, and how they differ from the
official ones.

Without the official repository's ``config/`` folder, the prompt template and generation length
of a task come from lm-eval's task file (``lm_eval/tasks/longbench/<task>.yaml``, or
``<task>_e.yaml`` for LongBench-E): its ``doc_to_text`` (a Jinja template over the fields
``context`` and ``question``, lm-eval's name for LongBench's ``input``) and its
``generation_kwargs.max_gen_toks``. Stopping and post-processing stay those of the official
prediction script whatever the prompt source.

lm-eval's templates are not all byte-identical to the official ones. ``DIFFERENCES`` lists each
known difference, checked against lm-eval ``CHECKED_VERSION`` and the official repository's
``config/dataset2prompt.json`` and ``dataset2maxlen.json`` (the generation lengths agree for every
task). A difference is reported for a run only where the installed template still shows it, so a
later lm-eval that fixes one stops reporting it; with another lm-eval version the run also says
that the list was checked against ``CHECKED_VERSION``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ropeext.eval import lmeval_assets as LM

FOLDER = "longbench"
CHECKED_VERSION = "0.4.13"
FIELDS = {"context": "context", "question": "input"}  # lm-eval's document fields -> LongBench's

_VAR = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Difference:
    """One way lm-eval's template of ``tasks`` differs from the official one.

    ``lm_eval`` is a fragment of lm-eval's template (fields written ``{context}`` / ``{input}``);
    the official template has ``official`` in its place (at the very end where ``at_end``).
    """

    tasks: tuple[str, ...]
    note: str
    lm_eval: str
    official: str
    at_end: bool = False

    def holds(self, template: str) -> bool:
        """Whether ``template`` (lm-eval's, converted) still shows this difference."""
        if template.count(self.lm_eval) != 1 or self.official in template:
            return False
        return template.endswith(self.lm_eval) if self.at_end else True

    def to_official(self, template: str) -> str:
        return template.replace(self.lm_eval, self.official)


DIFFERENCES = (
    Difference(("lcc", "repobench-p"), "no newline after the closing 'Next line of code:'",
               "Next line of code:", "Next line of code:\n", at_end=True),
    Difference(("passage_count",), "no space after the closing 'The final answer is:'",
               "The final answer is:", "The final answer is: ", at_end=True),
    Difference(("passage_retrieval_en",), "no space after the closing 'The answer is:'",
               "The answer is:", "The answer is: ", at_end=True),
    Difference(("samsum", "triviaqa"), "one newline instead of a blank line between the examples and the question",
               "{context}\n{input}", "{context}\n\n{input}"),
)


@dataclass(frozen=True)
class LmEvalPrompt:
    template: str                  # a str.format template over LongBench's record fields
    max_new_tokens: int
    source: str                    # lm-eval version and task file
    differences: tuple[str, ...]   # known differences from the official template, in words


def jinja_to_format(text: str, path) -> str:
    """lm-eval's ``doc_to_text`` (plain text and ``{{field}}``) as a ``str.format`` template."""
    if not isinstance(text, str):
        raise LM.error(path, f"doc_to_text: expected a template string, got {text!r}")
    if "{%" in text or "{#" in text:
        raise LM.error(path, "doc_to_text uses Jinja statements or comments, which this reader does not know")
    out, pos = [], 0
    for m in [*_VAR.finditer(text), None]:
        literal = text[pos:m.start() if m else len(text)]
        if "{{" in literal or "}}" in literal:
            raise LM.error(path, f"doc_to_text holds a Jinja expression this reader does not know: {literal!r}")
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if m is None:
            break
        field = FIELDS.get(m.group(1))
        if field is None:
            raise LM.error(path, f"doc_to_text uses {{{{{m.group(1)}}}}}, which is not a LongBench field "
                                 f"(known: {', '.join(FIELDS)})")
        out.append("{" + field + "}")
        pos = m.end()
    return "".join(out)


def differences_for(task: str, template: str) -> tuple[str, ...]:
    notes = [f"{task}: {d.note}" for d in DIFFERENCES if task in d.tasks and d.holds(template)]
    if LM.version() != CHECKED_VERSION:
        notes.append(f"the list of differences was checked against lm-eval {CHECKED_VERSION}; "
                     f"lm-eval {LM.version()} may differ in other ways")
    return tuple(notes)


def lm_eval_prompt(task: str, longbench_e: bool) -> LmEvalPrompt:
    """The template and generation length of ``task`` from lm-eval's (LongBench-E) task file."""
    name = f"{task}_e.yaml" if longbench_e else f"{task}.yaml"
    path = LM.task_file(FOLDER, name)
    cfg = LM.read_yaml(path)
    template = jinja_to_format(cfg.get("doc_to_text"), path)
    if "{context}" not in template:
        raise LM.error(path, "doc_to_text has no {{context}} field")
    max_new = (cfg.get("generation_kwargs") or {}).get("max_gen_toks")
    if not isinstance(max_new, int) or max_new < 1:
        raise LM.error(path, f"generation_kwargs.max_gen_toks: expected a positive integer, got {max_new!r}")
    return LmEvalPrompt(template, max_new, f"{LM.label()}: {LM.relative(path)}", differences_for(task, template))
