"""LongBench prompts from the installed lm-eval: the templates render as lm-eval renders them, the
pinned list of differences from the official templates still holds for the installed version, and a
LongBench-format data folder runs end to end without the official prompt folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ropeext.errors import RopeextError
from ropeext.eval import lmeval_assets
from ropeext.eval.longbench import lmeval_prompts as LP
from ropeext.eval.longbench import protocol

FOLDER = lmeval_assets.package_dir() / "tasks" / "longbench"
YAMLS = sorted(p.name for p in FOLDER.glob("*.yaml") if not p.name.startswith("_"))

# The differences this project knows for the pinned lm-eval, task by task.
PINNED = {
    "lcc": ["lcc: no newline after the closing 'Next line of code:'"],
    "repobench-p": ["repobench-p: no newline after the closing 'Next line of code:'"],
    "passage_count": ["passage_count: no space after the closing 'The final answer is:'"],
    "passage_retrieval_en": ["passage_retrieval_en: no space after the closing 'The answer is:'"],
    "samsum": ["samsum: one newline instead of a blank line between the examples and the question"],
    "triviaqa": ["triviaqa: one newline instead of a blank line between the examples and the question"],
}


def _lm_eval_task(name: str):
    """lm-eval's own task object for a LongBench YAML, on a one-document stand-in dataset."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    def build(doc):
        import datasets

        cfg = load_yaml(FOLDER / name, resolve_func=False)
        cfg["custom_dataset"] = lambda **_: {"test": datasets.Dataset.from_list([doc])}
        cfg.pop("process_results", None)
        cfg["metric_list"] = [{"metric": "exact_match"}]
        return ConfigurableTask(config=cfg)

    return build


def test_the_pinned_lm_eval_is_installed():
    assert lmeval_assets.version() == LP.CHECKED_VERSION  # requirements.lock pins it; the list below is for it
    assert len(YAMLS) == 34  # 21 LongBench tasks, 13 LongBench-E tasks


@pytest.mark.parametrize("name", YAMLS)
def test_templates_render_as_lm_eval_renders_them(name):
    task = name[:-len("_e.yaml")] if name.endswith("_e.yaml") else name[:-len(".yaml")]
    spec = protocol.task_spec(task, {}, {}, benchmark="longbench-e" if name.endswith("_e.yaml") else "longbench")
    record = {"context": "Line one {x}\n}} and {{y}}\nTail", "input": "What is {z}?", "answers": ["a"],
              "length": 10, "all_classes": None, "dataset": task, "language": "en", "_id": "1"}
    doc = {"context": record["context"], "question": record["input"], "answers": record["answers"]}
    task_obj = _lm_eval_task(name)(doc)
    d = task_obj.test_docs()[0]
    expected = task_obj.fewshot_context(d, 0, gen_prefix=task_obj.doc_to_prefix(d))
    assert protocol.format_prompt(spec.prompt, record) == expected
    assert spec.max_new_tokens == task_obj.config.generation_kwargs["max_gen_toks"]
    assert spec.source == f"lm-eval {lmeval_assets.version()}: lm_eval/tasks/longbench/{name}"
    assert list(spec.differences) == PINNED.get(task, [])


def test_each_listed_difference_shows_in_the_installed_yaml():
    """Read with lm-eval's own YAML loader: each difference's lm-eval side is there, its official
    side is not, in the LongBench and the LongBench-E file of every task it names."""
    from lm_eval.tasks._yaml_loader import load_yaml

    assert {t for d in LP.DIFFERENCES for t in d.tasks} == set(PINNED)
    for diff in LP.DIFFERENCES:
        for task in diff.tasks:
            for name in (f"{task}.yaml", f"{task}_e.yaml"):
                text = load_yaml(FOLDER / name, resolve_func=False)["doc_to_text"]
                text = text.replace("{{context}}", "{context}").replace("{{question}}", "{input}")
                assert text.count(diff.lm_eval) == 1 and diff.official not in text, (name, diff.note)
                if diff.at_end:
                    assert text.endswith(diff.lm_eval), (name, diff.note)
                assert diff.holds(text) and diff.to_official(text) != text


def test_a_fixed_difference_is_no_longer_reported():
    lcc = LP.DIFFERENCES[0]
    assert lcc.holds("code:\n{context}Next line of code:")
    assert not lcc.holds("code:\n{context}Next line of code:\n")  # fixed upstream: no longer listed
    assert not lcc.holds("Next line of code:{context}Next line of code:")  # ambiguous: not claimed
    assert LP.differences_for("lcc", "x{context}Next line of code:\n") == ()


@pytest.mark.skipif(not os.environ.get("ROPEEXT_LONGBENCH_CONFIG"),
                    reason="set ROPEEXT_LONGBENCH_CONFIG to the official repository's config/ folder")
def test_list_is_complete_against_an_official_copy():
    """With a user's copy of the official config/ folder: lm-eval's templates with the listed
    differences undone are the official templates, and the generation lengths agree."""
    prompts, maxlens = protocol.load_prompt_assets(os.environ["ROPEEXT_LONGBENCH_CONFIG"])
    for name in YAMLS:
        task = name[:-len("_e.yaml")] if name.endswith("_e.yaml") else name[:-len(".yaml")]
        lm = LP.lm_eval_prompt(task, longbench_e=name.endswith("_e.yaml"))
        rebuilt = lm.template
        for diff in LP.DIFFERENCES:
            if task in diff.tasks:
                rebuilt = diff.to_official(rebuilt)
        assert rebuilt == prompts[task], name
        assert lm.max_new_tokens == maxlens[task], name


def test_jinja_conversion_refuses_what_it_cannot_read(tmp_path):
    assert LP.jinja_to_format("A {{ context }} {b} {{question}}", "f.yaml") == "A {context} {{b}} {input}"
    with pytest.raises(RopeextError, match=r"doc_to_text uses \{\{title\}\}, which is not a LongBench field"):
        LP.jinja_to_format("{{title}} {{context}}", "f.yaml")
    with pytest.raises(RopeextError, match="Jinja statements"):
        LP.jinja_to_format("{% if x %}{{context}}{% endif %}", "f.yaml")
    with pytest.raises(RopeextError, match="Jinja expression"):
        LP.jinja_to_format("{{ context | upper }}", "f.yaml")
    with pytest.raises(RopeextError, match=r"lm-eval .*: lm_eval/tasks/longbench/narrativeqa_e.yaml: not found"):
        protocol.task_spec("narrativeqa", {}, {}, benchmark="longbench-e")


# ----------------------------------------------------------------------------- end to end
def _write(path: Path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_longbench_format_folder_runs_with_lm_eval_prompts(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from ropeext.cli import main
    from ropeext.eval.common import greedy_generate
    from ropeext.modeling import load_causal_lm

    data = tmp_path / "data"
    data.mkdir()
    code = "def add(a, b):\n    return a + b\n"
    _write(data / "lcc_e.jsonl", [
        {"input": "", "context": code * 3, "answers": ["    return a + b"], "length": n, "all_classes": None,
         "dataset": "lcc_e", "language": "python", "_id": f"lcc-{i}"} for i, n in enumerate([120, 5000])])
    _write(data / "passage_retrieval_en_e.jsonl", [
        {"input": "The sky is blue.", "context": "Paragraph 1: The grass is green.\n\nParagraph 2: The sky is blue.",
         "answers": ["Paragraph 2"], "length": n, "all_classes": None, "dataset": "passage_retrieval_en_e",
         "language": "en", "_id": f"pr-{i}"} for i, n in enumerate([90, 9000])])
    out = tmp_path / "out"
    assert main(["eval", "longbench", "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(out),
                 "--tasks", "lcc,passage_retrieval_en", "--max-input-length", "40", "--no-progress",
                 "--no-mlflow"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    version = lmeval_assets.version()
    assert m["prompt_source"] == {
        "lcc": f"lm-eval {version}: lm_eval/tasks/longbench/lcc_e.yaml",
        "passage_retrieval_en": f"lm-eval {version}: lm_eval/tasks/longbench/passage_retrieval_en_e.yaml"}
    assert m["prompt_differences"] == {t: PINNED[t] for t in ("lcc", "passage_retrieval_en")}
    assert m["buckets"] == ["0-4k", "4-8k", "8k+"] and m["tasks"]["lcc"]["n"] == 2

    # the first lcc prediction again by hand, from lm-eval's own rendering of the record
    first = json.loads((data / "lcc_e.jsonl").read_text().splitlines()[0])
    task_obj = _lm_eval_task("lcc_e.yaml")({"context": first["context"], "question": first["input"],
                                            "answers": first["answers"]})
    d = task_obj.test_docs()[0]
    prompt = task_obj.fewshot_context(d, 0, gen_prefix=task_obj.doc_to_prefix(d))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, _ = protocol.encode_prompt(tok, prompt, 40, add_bos=protocol.wants_bos(tok, "auto"))
    model = load_causal_lm(tiny_model_dir).eval()
    preds = [json.loads(x) for x in (out / "predictions" / "lcc.jsonl").read_text().splitlines()]
    assert preds[0]["pred"] == greedy_generate(model, tok, ids, 64)
    assert json.loads((out / "predictions" / "settings.json").read_text())["tasks"]["lcc"]["prompt"].endswith(
        "Next line of code:")
