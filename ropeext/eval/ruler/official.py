"""RULER's own prompt templates, answer prefixes and generation lengths, read from the installed lm-eval.

lm-eval's RULER tasks (``lm_eval/tasks/ruler/``) carry RULER's wording: the needle template in
``niah_utils.py`` (with the single-needle rewording rules and the answer prefix in
``prepare_niah.py``), and one ``CONFIG`` per task in ``vt_utils.py``, ``cwe_utils.py``,
``fwe_utils.py`` and ``qa_utils.py``; the generation lengths (``max_gen_toks``) and the separator
put before the answer prefix (``target_delimiter``) are in the task YAMLs. They are read as data
(see ``ropeext.eval.lmeval_assets``); nothing of lm-eval's task code runs.

The prompt is then assembled as lm-eval assembles it for a base model: the filled template, the
task's ``target_delimiter`` where neither side has whitespace at the seam, then the answer prefix
stripped of surrounding whitespace (lm-eval's ``gen_prefix``). A worked example keeps the raw
answer prefix, as RULER's generators write it. Where that assembly departs from RULER's own
scripts, ``notes`` says so (derived from what was read, so a fix in lm-eval drops the note).
"""

from __future__ import annotations

import ast
import copy
import string
from functools import lru_cache

from ropeext.eval import lmeval_assets as LM

FOLDER = "ruler"

# lm-eval's task file for each of this project's RULER tasks.
TASK_YAML = {
    "niah_single_1": "niah_single_1.yaml", "niah_single_2": "niah_single_2.yaml",
    "niah_single_3": "niah_single_3.yaml", "niah_multikey_1": "niah_multikey_1.yaml",
    "niah_multikey_2": "niah_multikey_2.yaml", "niah_multikey_3": "niah_multikey_3.yaml",
    "niah_multivalue": "niah_multivalue.yaml", "niah_multiquery": "niah_multiquery.yaml",
    "vt": "vt.yaml", "cwe": "cwe.yaml", "fwe": "fwe.yaml", "qa_1": "qa_squad.yaml", "qa_2": "qa_hotpot.yaml",
}
# Where each kind's CONFIG lives, and the key of its entry (None: the CONFIG is the entry).
CONFIG_FILE = {"vt": ("vt_utils.py", "variable_tracking"), "cwe": ("cwe_utils.py", None),
               "fwe": ("fwe_utils.py", None), "qa": ("qa_utils.py", None)}
NIAH_TEMPLATE_FILE = "niah_utils.py"
NIAH_CODE_FILE = "prepare_niah.py"
SINGLE_TEST = "num_needle_q * num_needle_v == 1"  # lm-eval's condition for the one-needle wording

# The placeholders each kind's text may use (the fields the generators fill).
FIELDS = {"niah": {"context", "query", "type_needle_v"}, "vt": {"context", "query", "num_v"},
          "cwe": {"context", "query", "num_cw"}, "fwe": {"context", "query"}, "qa": {"context", "query"}}
KIND_OF = {t: ("niah" if t.startswith("niah") else "qa" if t.startswith("qa") else t) for t in TASK_YAML}


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _check_fields(kind: str, text: str, path, what: str) -> None:
    try:
        names = _placeholders(text)
    except ValueError as exc:
        raise LM.error(path, f"{kind} {what} is not a format string ({exc})") from None
    unknown = names - FIELDS[kind]
    if unknown:
        raise LM.error(path, f"{kind} {what} uses unknown placeholder(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(FIELDS[kind]))})")


def _generation(kind: str) -> tuple[int, str, list[str]]:
    """max_gen_toks and target_delimiter shared by every task of ``kind``, and the files read."""
    values, files = set(), []
    for task, name in TASK_YAML.items():
        if KIND_OF[task] != kind:
            continue
        path = LM.task_file(FOLDER, name)
        cfg = LM.read_yaml(path)
        gen = cfg.get("generation_kwargs") or {}
        n = gen.get("max_gen_toks")
        if not isinstance(n, int) or n <= 0:
            raise LM.error(path, f"generation_kwargs.max_gen_toks: expected a positive integer, got {n!r}")
        delim = cfg.get("target_delimiter", " ")
        if not isinstance(delim, str):
            raise LM.error(path, f"target_delimiter: expected a string, got {delim!r}")
        values.add((n, delim))
        files.append(name)
    if len(values) != 1:
        raise LM.error(LM.package_dir() / "tasks" / FOLDER, f"the {kind} tasks disagree on max_gen_toks / "
                                                             f"target_delimiter: {sorted(values)}")
    n, delim = values.pop()
    return n, delim, files


def _fstring(node: ast.AST, singular: bool, path) -> str:
    """lm-eval's answer-prefix f-string as a format string over this project's fields.

    The one-needle branch spells the value type ``type_needle_v[:-1]`` (singular), the other
    ``type_needle_v``; both become ``{type_needle_v}``, which the generator fills in the number
    the template needs.
    """
    if not isinstance(node, ast.JoinedStr):
        raise LM.error(path, "the niah gen_prefix is not an f-string")
    want = "type_needle_v[:-1]" if singular else "type_needle_v"
    out = []
    for part in node.values:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            out.append(part.value.replace("{", "{{").replace("}", "}}"))
        elif isinstance(part, ast.FormattedValue) and part.conversion == -1 and part.format_spec is None:
            expr = ast.unparse(part.value)
            if expr == "query":
                out.append("{query}")
            elif expr == want:
                out.append("{type_needle_v}")
            else:
                raise LM.error(path, f"the niah gen_prefix uses {{{expr}}}, which this reader does not know")
        else:
            raise LM.error(path, "the niah gen_prefix has a formatted field this reader does not know")
    return "".join(out)


def _niah_rules(module: ast.Module, path) -> tuple[list[tuple[str, str]], str, str]:
    """The single-needle rewording (template.replace pairs) and the two answer prefixes."""
    replaces: list[tuple[str, str]] = []
    gen = LM.function_def(module, "generate_input_output", path)
    for node in ast.walk(gen):
        if isinstance(node, ast.If) and ast.unparse(node.test) == SINGLE_TEST:
            for stmt in node.body:
                call = stmt.value if isinstance(stmt, ast.Assign) else None
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "replace"
                        and ast.unparse(call.func.value) == "template"
                        and [ast.unparse(t) for t in stmt.targets] == ["template"]):
                    try:
                        old, new = (ast.literal_eval(a) for a in call.args)
                    except (ValueError, TypeError):
                        raise LM.error(path, "a template.replace() call of the single-needle wording has "
                                             "arguments that are not string literals") from None
                    replaces.append((old, new))
    if not replaces:
        raise LM.error(path, f"no single-needle rewording (template.replace under `if {SINGLE_TEST}:`) "
                             "in generate_input_output()")
    samples = LM.function_def(module, "generate_samples", path)
    for node in ast.walk(samples):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "gen_prefix":
                    if not (isinstance(value, ast.IfExp) and ast.unparse(value.test) == SINGLE_TEST):
                        raise LM.error(path, f"gen_prefix is not `<single> if {SINGLE_TEST} else <multi>`")
                    return replaces, _fstring(value.body, True, path), _fstring(value.orelse, False, path)
    raise LM.error(path, "no 'gen_prefix' entry in generate_samples()")


def _niah() -> dict:
    tpl_path = LM.task_file(FOLDER, NIAH_TEMPLATE_FILE)
    template = LM.module_constant(tpl_path, "TEMPLATE")
    if not isinstance(template, str):
        raise LM.error(tpl_path, "TEMPLATE is not a string")
    code_path = LM.task_file(FOLDER, NIAH_CODE_FILE)
    replaces, single_prefix, multi_prefix = _niah_rules(LM.parse_module(code_path), code_path)
    single = template
    for old, new in replaces:
        single = single.replace(old, new)
    for text, what, path in ((template, "template", tpl_path), (single, "template (one needle)", code_path),
                             (multi_prefix, "gen_prefix", code_path), (single_prefix, "gen_prefix (one needle)",
                                                                       code_path)):
        _check_fields("niah", text, path, what)
    return {"template": template, "template_single": single,
            "answer_prefix": multi_prefix.strip(), "answer_prefix_single": single_prefix.strip(),
            "files": [NIAH_TEMPLATE_FILE, NIAH_CODE_FILE]}


def _from_config(kind: str) -> dict:
    name, key = CONFIG_FILE[kind]
    path = LM.task_file(FOLDER, name)
    config = LM.module_constant(path, "CONFIG")
    entry = config.get(key) if key and isinstance(config, dict) else config
    where = f"CONFIG[{key!r}]" if key else "CONFIG"
    if not isinstance(entry, dict):
        raise LM.error(path, f"{where} is not a mapping")
    out = {}
    for field in ("template", "answer_prefix"):
        value = entry.get(field)
        if not isinstance(value, str):
            raise LM.error(path, f"{where}[{field!r}]: expected a string, got {value!r}")
        _check_fields(kind, value, path, field)
        out[field] = value
    return {"template": out["template"], "answer_prefix": out["answer_prefix"].strip(),
            "example_answer_prefix": out["answer_prefix"], "files": [name]}


@lru_cache(maxsize=1)
def _load() -> dict[str, dict]:
    templates = {"niah": _niah(), **{kind: _from_config(kind) for kind in CONFIG_FILE}}
    for kind, entry in templates.items():
        if "{context}" not in entry["template"]:
            raise LM.error(LM.package_dir() / "tasks" / FOLDER / entry["files"][0],
                           f"the {kind} template has no {{context}} placeholder")
        n, delim, yamls = _generation(kind)
        files = entry.pop("files") + yamls
        entry.update(max_new_tokens=n, delimiter=delim, lm_eval_version=LM.version(),
                     source=f"{LM.label()}: lm_eval/tasks/{FOLDER}/ " + ", ".join(files))
    return templates


def official_templates() -> dict[str, dict]:
    """Per task kind: template, answer_prefix, delimiter, max_new_tokens (and the niah one-needle
    wording, the raw answer prefix of worked examples), with their source and the lm-eval version."""
    return copy.deepcopy(_load())


def notes(templates: dict[str, dict]) -> list[str]:
    """How prompts assembled from lm-eval's RULER files depart from RULER's own scripts."""
    out = []
    vt, cwe = templates.get("vt", {}), templates.get("cwe", {})
    if vt.get("example_answer_prefix", "").endswith(" ") and not vt.get("answer_prefix", " ").endswith(" "):
        out.append("vt: the question's answer prefix ends at 'they are:' (lm-eval strips the trailing space "
                   "RULER's scripts keep; worked examples keep it)")
    if "assgined" in vt.get("answer_prefix", ""):
        out.append("vt: the answer prefix spells 'assgined', as lm-eval's copy of RULER does (RULER's current "
                   "repository spells 'assigned')")
    if cwe.get("delimiter", " ") != " ":
        out.append(f"cwe: {cwe['delimiter']!r} before the answer prefix, lm-eval's target_delimiter (RULER's "
                   "scripts put a space)")
    if cwe:
        out.append("cwe: one worked example precedes the question, as RULER's scripts write it (lm-eval's task "
                   "leaves it out)")
    return out
