"""RULER's official templates read from the installed lm-eval: every task kind's prompt, rendered by
ropeext, equals the prompt lm-eval itself builds from the same needles, keys and context.

The reference side runs lm-eval's own code: its RULER generators (``prepare_niah``, ``vt_utils``,
``cwe_utils``, ``fwe_utils``, ``qa_utils``) build a document with a word-counting stand-in for the
tokenizer, and lm-eval's ``ConfigurableTask``, configured from the installed task YAML, turns it
into the prompt it would send to a base model (``fewshot_context`` with the document's
``gen_prefix``, as ``build_all_requests`` does). The context, keys and values are then read out of
that document with lm-eval's own template constants and handed to ropeext's renderer.
Nothing downloads: the essay haystack (a hub dataset) and the hub QA files are not used; the
template wording does not depend on the haystack.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
import types
from types import SimpleNamespace

import pytest

from ropeext.errors import RopeextError
from ropeext.eval import lmeval_assets
from ropeext.eval.ruler import generate as G
from ropeext.eval.ruler import official
from ropeext.eval.ruler.tasks import TASK_NAMES, TASKS, load_templates

NIAH = [t for t in TASK_NAMES if t.startswith("niah")]
REAL_PACKAGE_DIR = lmeval_assets.package_dir
INSTALLED = lmeval_assets.package_dir()


class WordCounter:
    """Counts whitespace-separated words: lm-eval's generators only call ``tok(text).input_ids``."""

    def __call__(self, text):
        return SimpleNamespace(input_ids=text.split())


@pytest.fixture(scope="module")
def lm():
    """lm-eval's RULER modules. ``prepare_niah`` builds RULER's six-million-entry key list when
    imported (20 s, 1 GB) and may ask nltk to download a sentence splitter: it is imported here with
    a small stand-in word list (the keys only fill ``{query}``) and LOCAL_RANK=1 (no download)."""
    from ropeext.eval.ruler import words as W

    import lm_eval.tasks.ruler.cwe_utils as cwe_utils  # the real word lists (8k words, fast)
    import lm_eval.tasks.ruler.fwe_utils as fwe_utils
    import lm_eval.tasks.ruler.qa_utils as qa_utils
    import lm_eval.tasks.ruler.vt_utils as vt_utils

    fake = types.ModuleType("wonderwords")
    fake.RandomWord = lambda: SimpleNamespace(_categories={
        "nouns": list(W.wonderwords_list("nouns")[:40]), "adjectives": list(W.wonderwords_list("adjectives")[:40]),
        "verbs": list(W.wonderwords_list("verbs")[:40])})
    saved = {k: sys.modules.get(k) for k in ("wonderwords", "lm_eval.tasks.ruler.prepare_niah",
                                             "lm_eval.tasks.ruler.niah_utils")}
    rank = os.environ.get("LOCAL_RANK")
    try:
        sys.modules["wonderwords"] = fake
        sys.modules.pop("lm_eval.tasks.ruler.prepare_niah", None)
        sys.modules.pop("lm_eval.tasks.ruler.niah_utils", None)
        os.environ["LOCAL_RANK"] = "1"
        import lm_eval.tasks.ruler.niah_utils as niah_utils
        import lm_eval.tasks.ruler.prepare_niah as prepare_niah
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        if rank is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = rank
    return SimpleNamespace(niah=niah_utils, prepare=prepare_niah, vt=vt_utils, cwe=cwe_utils, fwe=fwe_utils,
                           qa=qa_utils)


@pytest.fixture(scope="module")
def tpl():
    return load_templates("official")


def lm_eval_prompt(task: str, doc: dict) -> tuple[str, int]:
    """The prompt lm-eval builds for ``doc`` under the installed task YAML, and its max_gen_toks."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(lmeval_assets.package_dir() / "tasks" / "ruler" / official.TASK_YAML[task], resolve_func=False)
    cfg["custom_dataset"] = lambda **_: {"test": datasets.Dataset.from_list([doc])}
    cfg.pop("process_results", None)
    cfg["metric_list"] = [{"metric": "exact_match"}]
    task_obj = ConfigurableTask(config=cfg)
    d = task_obj.test_docs()[0]
    prompt = task_obj.fewshot_context(d, 0, gen_prefix=task_obj.doc_to_prefix(d))
    return prompt, task_obj.config.generation_kwargs["max_gen_toks"]


def _between(text: str, head: str, tail_marker: str) -> str:
    assert text.startswith(head), (head, text[:200])
    return text[len(head):text.rindex(tail_marker)]


# ------------------------------------------------------------------ every task kind


@pytest.mark.parametrize("task", NIAH)
def test_niah_prompt_equals_lm_eval(lm, tpl, task):
    spec = TASKS[task]
    haystack = "needle" if spec["haystack"] == "needle" else "repeat"  # essay: a hub dataset
    random.seed(11)
    doc = lm.prepare.generate_samples(
        lm.prepare.get_haystack(haystack), TOKENIZER=WordCounter(), max_seq_length=700, type_haystack=haystack,
        type_needle_k=spec["key"], type_needle_v=spec["value"], num_needle_k=spec["k"], num_needle_v=spec["v"],
        num_needle_q=spec["q"], template=lm.niah.TEMPLATE, num_samples=1,
        tokens_to_generate=tpl["niah"]["max_new_tokens"])[0]
    expected, max_gen = lm_eval_prompt(task, doc)

    assert lm.niah.TEMPLATE.count("\n") == 2  # instructions \n {context} \n question
    context = doc["input"][doc["input"].index("\n") + 1:doc["input"].rindex("\n")]
    query = re.fullmatch(r"The special magic \w+ for (.+) mentioned in the provided text (?:is|are)",
                         doc["gen_prefix"]).group(1)
    queries = re.split(r", (?:and )?", query)
    assert len(queries) == spec["q"] and all(a in context for a in doc["outputs"])
    fields = G.niah_fields(spec["value"], queries, spec["v"])
    ours = G.render(tpl["niah"], "niah", context, fields, single=spec["q"] * spec["v"] == 1)
    assert ours == expected
    assert tpl["niah"]["max_new_tokens"] == max_gen == 128


def test_vt_prompt_with_example_equals_lm_eval(lm, tpl):
    import numpy as np

    random.seed(12)
    np.random.seed(12)
    icl = lm.vt.sys_vartrack_w_noise_random(tokenizer=WordCounter(), num_samples=1, max_seq_length=500,
                                            incremental=5)[0]
    doc = lm.vt.sys_vartrack_w_noise_random(tokenizer=WordCounter(), num_samples=1, max_seq_length=900,
                                            icl_example=icl)[0]
    expected, max_gen = lm_eval_prompt("vt", doc)

    config = lm.vt.CONFIG["variable_tracking"]
    head = config["template"].split("{context}")[0]
    text = doc["input"]
    start = text.rindex(head)  # the question follows the worked example
    example, question = text[:start], text[start:]
    context = _between(question, head, "\nQuestion: ")
    value = re.search(r"assigned the value (\d+) in the text above\.$", question).group(1)
    ex_context = _between(example[:example.index("\nQuestion: ") + 1], head, "\n")
    ex_value = re.search(r"assigned the value (\d+) in the text above\.", example).group(1)
    ex_names = example[example.rindex("they are:") + len("they are:"):].split()
    assert len(ex_names) == 5

    ours = (G.vt_example(tpl["vt"], ex_context, {"query": ex_value, "num_v": len(ex_names)}, ex_names)
            + G.render(tpl["vt"], "vt", context, {"query": value, "num_v": len(doc["outputs"])}))
    assert ours == expected
    assert tpl["vt"]["max_new_tokens"] == max_gen == 30


def test_cwe_prompt_equals_lm_eval(lm, tpl):
    random.seed(13)
    doc = lm.cwe.sys_word_pair_random(num_samples=1, max_seq_length=1500, tokenizer=WordCounter())[0]
    expected, max_gen = lm_eval_prompt("cwe", doc)

    context = _between(doc["input"], lm.cwe.CONFIG["template"].split("{context}")[0], "\nQuestion: ")
    assert all(f". {w} " in context + " " for w in doc["outputs"])
    ours = G.render(tpl["cwe"], "cwe", context, {"num_cw": 10, "query": ""})
    assert ours == expected
    assert "\n\nAnswer:" in ours  # lm-eval's cwe task joins the answer prefix with a blank line
    assert tpl["cwe"]["max_new_tokens"] == max_gen == 120


def test_fwe_prompt_equals_lm_eval(lm, tpl):
    random.seed(14)
    doc = lm.fwe.sys_kwext(tokenizer=WordCounter(), max_seq_length=600, num_samples=1)[0]
    expected, max_gen = lm_eval_prompt("fwe", doc)

    context = _between(doc["input"], lm.fwe.CONFIG["template"].split("{context}")[0], "\nQuestion: ")
    assert all(w in context.split() for w in doc["outputs"])
    ours = G.render(tpl["fwe"], "fwe", context, {"query": ""})
    assert ours == expected
    assert tpl["fwe"]["max_new_tokens"] == max_gen == 50


@pytest.mark.parametrize("task", ["qa_1", "qa_2"])
def test_qa_prompt_equals_lm_eval(lm, tpl, task):
    docs = [f"Document text number {i}: the river {i} flows north." for i in range(12)]
    qas = [{"query": f"Which way does river {i} flow?", "outputs": ["north"], "context": [i]} for i in range(3)]
    random.seed(15)
    doc = lm.qa.generate_samples(tokenizer=WordCounter(), docs=docs, qas=qas, max_seq_length=150, num_samples=1,
                                 tokens_to_generate=32)[0]
    expected, max_gen = lm_eval_prompt(task, doc)

    head, tail = lm.qa.CONFIG["template"].split("{context}")
    tail = tail.format(query=qas[0]["query"])
    assert doc["input"].endswith(tail)
    context = doc["input"][len(head):len(doc["input"]) - len(tail)]
    assert docs[0] in context
    ours = G.render(tpl["qa"], "qa", context, {"query": qas[0]["query"]})
    assert ours == expected
    assert tpl["qa"]["max_new_tokens"] == max_gen == 32


# ------------------------------------------------------------------ samples, sources, errors


def test_official_samples_use_the_official_wording(tiny_tokenizer_dir, tpl):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    one = G.make_sample("niah_single_1", 1024, 0, tok, seed=1, templates=tpl)
    assert one["prompt"].startswith("A special magic number is hidden within the following text.")
    assert re.search(r"\? The special magic number for \S+ mentioned in the provided text is$", one["prompt"])
    assert one["max_new_tokens"] == 128
    vt = G.make_sample("vt", 2048, 0, tok, seed=1, templates=tpl)
    assert vt["fewshot"] and vt["prompt"].count("Memorize and track the chain(s)") == 2
    assert vt["prompt"].endswith("they are:") and re.search(r"they are:  [A-Z]{3}( [A-Z]{3}){4}\n\n\n\nMemorize",
                                                             vt["prompt"])
    ropeext = G.make_sample("niah_single_1", 1024, 0, tok, seed=1, templates=load_templates("ropeext"))
    assert ropeext["prompt"].startswith("Memorize the special magic number hidden in the text below")
    assert ropeext["answers"] == one["answers"]  # the same needle; only the wording differs


def test_sources_are_recorded(tpl):
    from ropeext.eval.ruler.tasks import describe_templates

    info = describe_templates(tpl)
    assert info["lm_eval_version"] == lmeval_assets.version() != "unknown"
    assert all(s.startswith(f"lm-eval {lmeval_assets.version()}: lm_eval/tasks/ruler/")
               for s in info["template_source"].values())
    assert "vt_utils.py" in info["template_source"]["vt"] and "vt.yaml" in info["template_source"]["vt"]
    assert [n.split(":")[0] for n in info["template_notes"]] == ["vt", "vt", "cwe", "cwe"]
    assert any("'\\n\\n' before the answer prefix" in n for n in info["template_notes"])
    own = describe_templates(load_templates("ropeext"))
    assert own == {"template_source": {k: "ropeext" for k in tpl}, "lm_eval_version": None}
    assert load_templates(None) == tpl


@pytest.fixture()
def fake_lm_eval(tmp_path, monkeypatch):
    """A copy of the installed RULER task folder that a test may break."""
    root = tmp_path / "lm_eval"
    shutil.copytree(lmeval_assets.package_dir() / "tasks" / "ruler", root / "tasks" / "ruler",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(lmeval_assets, "package_dir", lambda: root)
    official._load.cache_clear()
    yield root / "tasks" / "ruler"
    official._load.cache_clear()


def test_missing_or_changed_files_fail_clearly(fake_lm_eval):
    version = lmeval_assets.version()
    (fake_lm_eval / "vt_utils.py").unlink()
    with pytest.raises(RopeextError,
                       match=rf"lm-eval {re.escape(version)}: lm_eval/tasks/ruler/vt_utils.py: not found"):
        load_templates("official")
    shutil.copy(INSTALLED / "tasks" / "ruler" / "vt_utils.py", fake_lm_eval)
    official._load.cache_clear()
    assert load_templates("official")["vt"]["max_new_tokens"] == 30

    code = fake_lm_eval / "prepare_niah.py"
    code.write_text(code.read_text().replace('f"The special magic {type_needle_v[:-1]}',
                                             'f"The special magic {type_needle_v.upper()}'))
    official._load.cache_clear()
    with pytest.raises(RopeextError, match=r"prepare_niah.py: the niah gen_prefix uses \{type_needle_v.upper\(\)\}"):
        load_templates("official")


def test_notes_follow_the_installed_files(fake_lm_eval):
    from ropeext.eval.ruler.tasks import describe_templates

    y = fake_lm_eval / "cwe.yaml"
    y.write_text(y.read_text().replace('target_delimiter: "\\n\\n"', 'target_delimiter: " "'))
    tpl = load_templates("official")
    assert tpl["cwe"]["delimiter"] == " "
    assert not any("before the answer prefix" in n for n in describe_templates(tpl)["template_notes"])


def test_bad_generation_length_and_missing_package(fake_lm_eval, monkeypatch):
    y = fake_lm_eval / "fwe.yaml"
    y.write_text(y.read_text().replace("max_gen_toks: 50", "max_gen_toks: many"))
    with pytest.raises(RopeextError, match=r"lm_eval/tasks/ruler/fwe.yaml: generation_kwargs.max_gen_toks: "
                                           r"expected a positive integer, got 'many'"):
        load_templates("official")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RopeextError, match="lm-eval is not installed"):
        REAL_PACKAGE_DIR.__wrapped__()
