"""The lm_eval engine of RULER and LongBench: the start check, and real lm-eval runs on local stand-in data.

Nothing downloads. LongBench's hub dataset is stood in for by a datasets cache that ``datasets`` itself
writes from a local folder and that the test then lays out under the hub id, where an offline
``load_dataset`` looks; RULER's niah tasks with the ``repeat`` / ``needle`` haystacks need no data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ropeext.config import resolve_config
from ropeext.errors import RopeextError
from ropeext.eval.lmeval_engine import common, engine_problems
from ropeext.eval.lmeval_engine import longbench as lb_engine
from ropeext.eval.lmeval_engine import ruler as ruler_engine

LONGBENCH_REPO = "Xnhyacinth/LongBench"  # lm-eval 0.4.13's LongBench task files name this dataset


def _lm_eval_file(folder: str, name: str) -> str:
    import lm_eval.tasks

    return (Path(lm_eval.tasks.__file__).parent / folder / name).read_text(encoding="utf-8")


def build_hub_cache(cache: Path, work: Path, repo: str, configs: dict[str, list[dict]], split: str = "test") -> None:
    """``repo``'s configs in the datasets cache ``cache``, prepared by ``datasets`` from a local folder of
    the same name and moved to the folder an offline ``load_dataset(repo, config)`` reads (a stand-in the
    test builds; the package itself never looks into the cache)."""
    import datasets
    import yaml

    src = work / repo.split("/")[-1]
    src.mkdir(parents=True)
    cards = [{"config_name": c, "data_files": [{"split": split, "path": f"{c}/{split}.jsonl"}]} for c in configs]
    (src / "README.md").write_text("---\n" + yaml.safe_dump({"configs": cards}) + "---\n")
    for config, rows in configs.items():
        (src / config).mkdir()
        (src / config / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        datasets.load_dataset(str(src), config, split=split, cache_dir=str(cache))
    local = cache / datasets.naming.camelcase_to_snakecase(src.name)
    namespace, name = repo.split("/")
    target = cache / f"{namespace}___{datasets.naming.camelcase_to_snakecase(name)}"
    if target.exists():
        for config_dir in local.iterdir():
            config_dir.rename(target / config_dir.name)
    else:
        local.rename(target)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty datasets cache and nltk data path, offline."""
    import datasets
    import nltk

    cache = tmp_path / "hf-datasets"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk")])
    return cache


def _config(**eval_sections) -> dict:
    return resolve_config({"eval": eval_sections})


# ----------------------------------------------------------------------------- the start check
def test_start_check_says_what_lm_eval_could_not_load_and_how_to_get_it(offline_cache, tmp_path, capsys):
    config = _config(
        ruler={"engine": "lm_eval", "tasks": ["niah_single_2", "vt", "qa_1"]},
        longbench={"engine": "lm_eval", "tasks": ["lcc", "trec"]},
    )
    problems = engine_problems(config)
    assert len(problems) == 2
    ruler, longbench = problems

    # RULER: what lm-eval's own RULER functions failed to load, in lm-eval's (datasets', nltk's, requests') words
    essay = re.search(r'load_dataset\(\s*"([^"]+)"', _lm_eval_file("ruler", "prepare_niah.py")).group(1)
    assert ruler.startswith("eval.ruler.engine: lm_eval runs lm-eval 0.4.13's own RULER tasks")
    assert (
        f"- the essay haystack (prepare_niah.get_haystack), for niah_single_2: ConnectionError: Couldn't reach "
        f"'{essay}' on the Hub" in ruler
    )
    assert (
        "- the sentence splitter's nltk data (prepare_niah.cached_sent_tokenize), for niah_single_2: LookupError: "
        "Resource 'punkt_tab' not found." in ruler
    )
    assert "- the squad file (qa_utils.read_squad, fetched at every run), for qa_1: " in ruler
    assert "hotpot" not in ruler and " vt" not in ruler  # not asked for: qa_2 not chosen, vt needs nothing
    assert "p.get_haystack(type_haystack='essay')" in ruler and "leave their tasks out (eval.ruler.tasks)" in ruler
    assert ruler.endswith("Or set eval.ruler.engine: ropeext (this project's offline implementation).")

    # LongBench: each task built through lm-eval's TaskManager; datasets names the hub dataset it could not reach
    for task in ("lcc", "trec"):
        text = _lm_eval_file("longbench", f"{task}_e.yaml")
        assert re.search(r"^dataset_path: (\S+)$", text, re.M).group(1) == LONGBENCH_REPO
    for task in ("lcc", "trec"):
        assert (
            f"- the data of longbench_{task}_e, for {task}: ConnectionError: Couldn't reach '{LONGBENCH_REPO}' "
            "on the Hub" in longbench
        )
    assert "TaskManager().load(['longbench_lcc_e', 'longbench_trec_e'])" in longbench

    # a suite left on the ropeext engine, or disabled, is not checked; tasks that fetch nothing pass
    assert engine_problems(_config(ruler={"engine": "lm_eval", "enabled": False, "tasks": ["qa_1"]})) == []
    assert engine_problems(_config(longbench={"tasks": ["lcc"]})) == []
    assert engine_problems(_config(ruler={"engine": "lm_eval", "tasks": ["niah_single_1", "vt"]})) == []

    # a run by hand stops with the same message before loading anything
    from ropeext.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"eval": {"longbench": {"engine": "lm_eval", "tasks": ["lcc", "trec"]}}}))
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "longbench",
                "--config",
                str(cfg),
                "--model",
                str(tmp_path / "no-model"),
                "--output-dir",
                str(out),
                "--no-mlflow",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip() == f"error: {longbench}"
    assert not out.exists()


def test_every_ruler_task_has_its_lm_eval_task():
    from ropeext.eval.ruler.tasks import TASKS

    assert set(ruler_engine.LM_EVAL_TASKS) == set(TASKS)
    tm = common.task_manager(ruler_engine.FOLDER, list(ruler_engine.LM_EVAL_TASKS.values()))
    assert set(ruler_engine.LM_EVAL_TASKS.values()) <= set(tm.all_tasks)


def test_a_cached_dataset_passes_the_check(offline_cache, tmp_path):
    """The check passes exactly when ``datasets`` loads the task's config offline."""
    import datasets

    rows = [{"input": "", "context": "x = 1\n", "answers": ["y = 2"], "length": 10, "all_classes": None, "_id": "0"}]
    build_hub_cache(offline_cache, tmp_path / "src", LONGBENCH_REPO, {"lcc_e": rows})
    assert datasets.load_dataset(LONGBENCH_REPO, "lcc_e", split="test")[0]["answers"] == ["y = 2"]
    assert engine_problems(_config(longbench={"engine": "lm_eval", "tasks": ["lcc"]})) == []
    [message] = engine_problems(_config(longbench={"engine": "lm_eval", "tasks": ["lcc", "trec"]}))
    assert "- the data of longbench_trec_e, for trec: " in message and "lcc" not in message
    # what a built task says of itself: its generation length, which a run checks against the model's window
    failures, gen = lb_engine.load_tasks(_config(longbench={"tasks": ["lcc", "trec"]})["eval"]["longbench"])
    assert list(failures) == ["trec"] and gen == {"lcc": 64}


def test_bad_task_names(monkeypatch):
    import lm_eval.tasks

    with pytest.raises(RopeextError, match="heldout_lcc is this project's embedded task"):
        lb_engine.task_list({"benchmark": "longbench-e", "tasks": ["heldout_lcc"]})
    # A name the LongBench folder lacks is looked up in lm-eval's whole index next (14k task files, most of this
    # test's time; tests/test_openllm.py::test_hub_tasks_offline builds that one): here the folder's own index
    # stands in for it, through the same lookup and message.
    real = lm_eval.tasks.TaskManager

    def folder_only(*args, include_defaults=True, **kwargs):
        return real(*args, include_defaults=False, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", folder_only)
    [message] = engine_problems(_config(longbench={"engine": "lm_eval", "tasks": ["nosuch"]}))
    assert message.startswith("eval.longbench.engine: lm_eval: unknown lm-eval task 'longbench_nosuch_e'")


# ----------------------------------------------------------------------------- metrics from lm-eval's output
def test_ruler_metrics_from_lm_eval_samples():
    """Scores per task and length come from the per-sample metric named by the sample's length; lm-eval's
    -1 for the lengths a sample does not have never enters; skipped cells stay without a score."""
    records = [{"task": "niah_single_1", "length": 4096, "score": s} for s in (1.0, 0.0, 1.0, 1.0)]
    records += [{"task": "vt", "length": 4096, "score": s} for s in (0.8, 0.6)]
    records += [{"task": "niah_single_1", "length": 8192, "score": s} for s in (0.5, 0.0)]
    entries = {
        ("niah_single_1", 4096): {
            "results": {"niah_single_1": {"4096,none": 0.75}},
            "lm_eval_version": "0.4.13",
            "configs": {"niah_single_1": {"task": "niah_single_1"}},
        },
        ("niah_single_1", 8192): {"results": {"niah_single_1": {"4096,none": -1, "8192,none": 0.25}}},
        ("vt", 4096): {"results": {"ruler_vt": {"4096,none": 0.7}}, "configs": {"ruler_vt": {"task": "ruler_vt"}}},
    }
    m = ruler_engine.build_metrics(
        records,
        entries,
        names={"niah_single_1": "niah_single_1", "vt": "ruler_vt"},
        tasks=["niah_single_1", "vt"],
        lengths=[4096, 8192],
        subset="custom",
        threshold=70.0,
        skipped={"vt": {"8192": "lm-eval built no sample"}},
        samples=4,
        meta={"variant": "v"},
    )
    assert m["scores"] == {"niah_single_1": {"4096": 75.0, "8192": 25.0}, "vt": {"4096": 70.0}}
    assert m["average"] == {"4096": 72.5, "8192": None} and m["effective_length"] == 4096
    assert m["lm_eval_scores"] == {"niah_single_1": {"4096": 75.0, "8192": 25.0}, "vt": {"4096": 70.0}}
    assert ruler_engine.lm_eval_score(entries[("niah_single_1", 8192)], "niah_single_1", 4096) is None
    assert m["engine"] == "lm_eval" and m["lm_eval_version"] == "0.4.13"
    assert m["lm_eval_tasks"] == {"niah_single_1": "niah_single_1", "vt": "ruler_vt"}
    assert m["lm_eval_config"]["vt"] == {"task": "ruler_vt"}
    assert set(m["template_source"]) == {"niah", "vt"}
    assert all(v.startswith("lm-eval 0.4.13") for v in m["template_source"].values())
    assert m["skipped"] == {"vt": {"8192": "lm-eval built no sample"}}
    # lm-eval's RULER tasks carry RULER's own wording: nothing about the templates keeps them from the papers
    from ropeext.report.references import load_references, protocol_reasons
    from ropeext.report.summary import REPOSITORY_REFERENCES

    tables = load_references(REPOSITORY_REFERENCES).of(("ruler",))
    assert tables
    for table in tables:
        assert not [r for r in protocol_reasons(table, m) if "wording" in r or "template" in r]


def test_longbench_buckets_from_lm_eval_samples():
    from ropeext.eval.longbench.results import STANDARD_BUCKETS

    def sample(doc_id, length, score):
        return {"doc_id": doc_id, "doc": {"length": length}, "score": score, "metrics": ["score", "qa_f1_score"]}

    samples = [sample(0, 100, 1.0), sample(1, 3999, 0.5), sample(2, 4000, 0.25), sample(3, 12000, 0.0)]
    rec = lb_engine.task_record(samples, STANDARD_BUCKETS)
    assert rec["metric"] == "qa_f1_score" and rec["n"] == 4 and rec["score"] == 43.75
    assert rec["buckets"] == {  # with each sample's score, for an interval over samples
        "0-4k": {"score": 75.0, "n": 2, "scores": [1.0, 0.5]},
        "4-8k": {"score": 25.0, "n": 1, "scores": [0.25]},
        "8k+": {"score": 0.0, "n": 1, "scores": [0.0]},
    }
    assert lb_engine.task_record(samples, None)["scores"] == [1.0, 0.5, 0.25, 0.0]
    m = lb_engine.build_metrics(
        {"hotpotqa": samples},
        {"hotpotqa": {"results": {"longbench_hotpotqa_e": {"score,none": 0.4375}}}},
        names={"hotpotqa": "longbench_hotpotqa_e"},
        benchmark="longbench-e",
        meta={},
    )
    assert m["bucket_avg"] == {"0-4k": 75.0, "4-8k": 25.0, "8k+": 0.0}
    assert m["Avg"] == 33.33 and m["Avg>4k"] == 12.5 and m["lm_eval_scores"] == {"hotpotqa": 43.75}
    plain = lb_engine.build_metrics(
        {"hotpotqa": samples},
        {"hotpotqa": {}},
        names={"hotpotqa": "longbench_hotpotqa"},
        benchmark="longbench",
        meta={},
    )
    assert plain["Avg"] == 43.75 and "buckets" not in plain["tasks"]["hotpotqa"]
    # lm-eval cuts long prompts at their beginning: never the papers' LongBench protocol
    from ropeext.report.references import load_references, protocol_reasons
    from ropeext.report.summary import REPOSITORY_REFERENCES

    [table, *_] = load_references(REPOSITORY_REFERENCES).of(("longbench-e",))
    assert any("at its beginning, LongBench's script in the middle" in r for r in protocol_reasons(table, m))
    assert not any("at its beginning" in r for r in protocol_reasons(table, {**m, "engine": "ropeext"}))


def test_stored_samples_keep_long_fields_as_hashes():
    import hashlib

    long = "word " * 1000
    kept = common.keep_sample(
        {"doc_id": 0, "doc": {"context": long, "length": 7}, "arguments": [("prompt", {})], "resps": [["x"]]}
    )
    assert "arguments" not in kept and kept["resps"] == [["x"]]
    assert kept["doc"] == {
        "context": {"sha256": hashlib.sha256(long.encode()).hexdigest(), "chars": len(long)},
        "length": 7,
    }


# ----------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def model512(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """The tiny test Llama with a 512-token window (lm-eval's generation lengths need room)."""
    from transformers import AutoTokenizer

    from ropeext.modeling import build_tiny_llama

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = build_tiny_llama(
        len(tok),
        512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("model512")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _lcc_rows(answers: list[list[str]]) -> list[dict]:
    code = [
        "def area(r):\n    return 3.14 * r * r\n",
        "class Box:\n    def __init__(self, w):\n        self.w = w\n",
        "for i in range(3):\n    print(i)\n",
    ]
    lengths = [120, 5000, 9000]  # words: one record per LongBench-E bucket
    return [
        {
            "input": "",
            "context": c,
            "answers": a,
            "length": n,
            "dataset": "lcc_e",
            "language": "python",
            "all_classes": None,
            "_id": str(i),
        }
        for i, (c, a, n) in enumerate(zip(code, answers, lengths))
    ]


def test_longbench_lm_eval_end_to_end(offline_cache, tmp_path, model512, monkeypatch):
    """lm-eval's own longbench_lcc_e on a cached stand-in of its dataset: predictions, lm-eval's scores
    re-derived with this project's LongBench scorer, bucket summary, report line."""
    import datasets

    from ropeext.cli import main
    from ropeext.eval.longbench import metrics as lb_metrics
    from ropeext.eval.longbench.results import table1
    from ropeext.report.references import beside_ours, load_references
    from ropeext.report.summary import REPOSITORY_REFERENCES

    def run(cache: Path, out: Path) -> dict:
        monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(json.dumps({"eval": {"longbench": {"engine": "lm_eval", "tasks": ["lcc"]}}}))
        assert (
            main(
                [
                    "eval",
                    "longbench",
                    "--config",
                    str(cfg),
                    "--model",
                    str(model512),
                    "--output-dir",
                    str(out),
                    "--no-mlflow",
                    "--no-progress",
                    "--variant",
                    "tiny-none-512-noft",
                ]
            )
            == 0
        )
        return json.loads((out / "metrics.json").read_text())

    build_hub_cache(offline_cache, tmp_path / "src1", LONGBENCH_REPO, {"lcc_e": _lcc_rows([["pass"]] * 3)})
    run(offline_cache, tmp_path / "run1")
    preds = {
        p["doc_id"]: p["filtered_resps"][0]
        for p in map(json.loads, (tmp_path / "run1" / "predictions.jsonl").read_text().splitlines())
    }
    assert sorted(preds) == [0, 1, 2]

    # the same documents, answered by the model's own prediction, half of it, and something else
    first = [lb_metrics.first_code_line(preds[i]) for i in range(3)]
    assert all(first), preds
    answers = [[first[0]], [first[1][: max(1, len(first[1]) // 2)]], ["zzzz qqqq"]]
    cache2 = tmp_path / "hf-datasets-2"
    build_hub_cache(cache2, tmp_path / "src2", LONGBENCH_REPO, {"lcc_e": _lcc_rows(answers)})
    out = tmp_path / "run2"
    m = run(cache2, out)
    stored = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [s["filtered_resps"][0] for s in stored] == [preds[i] for i in range(3)]  # greedy: same predictions
    expected = [round(100 * lb_metrics.score("lcc", preds[i], answers[i], None), 2) for i in range(3)]
    assert expected[0] == 100.0 and expected[1] < 100.0
    lcc = m["tasks"]["lcc"]
    assert [lcc["buckets"][b]["score"] for b in ("0-4k", "4-8k", "8k+")] == expected
    assert lcc["score"] == pytest.approx(sum(expected) / 3, abs=0.01) == m["lm_eval_scores"]["lcc"]
    assert m["bucket_avg"] == dict(zip(("0-4k", "4-8k", "8k+"), expected))
    assert m["Avg"] == pytest.approx(sum(expected) / 3, abs=0.01)
    assert m["Avg>4k"] == pytest.approx((expected[1] + expected[2]) / 2, abs=0.01)
    assert m["engine"] == "lm_eval" and m["lm_eval_version"] == "0.4.13" and m["benchmark"] == "longbench-e"
    assert m["lm_eval_tasks"] == {"lcc": "longbench_lcc_e"}
    assert m["lm_eval_config"]["lcc"]["dataset_path"] == LONGBENCH_REPO
    assert m["max_length"] == 512 and m["data"] == {"lcc": f"{LONGBENCH_REPO}:lcc_e"}
    assert m["prompt_source"]["lcc"] == "lm-eval 0.4.13: longbench_lcc_e" and m["max_new_tokens"] == {"lcc": 64}
    assert (out / "longbench.png").is_file() and (out / "results.jsonl").is_file()

    # the report reads it as any LongBench metrics.json and says which engine produced it
    df = table1([m])
    assert list(df.columns) == ["0-4k", "4-8k", "8k+", "Avg", "Avg>4k"]
    config = resolve_config({})
    found = beside_ours("longbench", df, [m], config, load_references(REPOSITORY_REFERENCES))
    assert found.lines[0].startswith(
        f"Produced with: engine: lm_eval (lm-eval 0.4.13's own tasks longbench_lcc_e); data {LONGBENCH_REPO}:lcc_e"
    )


@pytest.mark.slow
def test_ruler_lm_eval_end_to_end(offline_cache, tmp_path, model512, monkeypatch):
    """lm-eval's own niah_single_1 at two lengths: one too short for lm-eval to build a sample (skipped),
    one scored; scores re-derived with this project's RULER metric; a rerun resumes."""
    import nltk

    from ropeext.cli import main
    from ropeext.eval.ruler.metrics import string_match_all
    from ropeext.eval.ruler.report import ruler_table
    from ropeext.report.references import describe_run

    # lm-eval's RULER module looks nltk's punkt_tab up at import and downloads it when missing; the
    # repeat haystack never sentence-splits, so an empty stand-in folder keeps the run offline
    (tmp_path / "nltk" / "tokenizers" / "punkt_tab").mkdir(parents=True)
    assert nltk.data.find("tokenizers/punkt_tab")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        json.dumps(
            {"eval": {"ruler": {"engine": "lm_eval", "tasks": ["niah_single_1"], "lengths": [256, 512], "samples": 2}}}
        )
    )
    out = tmp_path / "ruler"
    argv = [
        "eval",
        "ruler",
        "--config",
        str(cfg),
        "--model",
        str(model512),
        "--output-dir",
        str(out),
        "--no-mlflow",
        "--no-progress",
        "--variant",
        "tiny-none-512-noft",
    ]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["engine"] == "lm_eval" and m["lm_eval_tasks"] == {"niah_single_1": "niah_single_1"}
    assert "Could not generate any sample" in m["skipped"]["niah_single_1"]["256"]
    assert m["samples"] == {"niah_single_1": {"512": 2}} and m["max_length"] == 512
    stored = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [s["entry"] for s in stored] == ["niah_single_1@512"] * 2
    assert all(s["doc"]["max_length"] == 512 and s["doc"]["length"] <= 512 for s in stored)
    score = 100 * sum(string_match_all(s["filtered_resps"][0], s["target"]) for s in stored) / 2
    assert m["scores"] == {"niah_single_1": {"512": round(score, 2)}}
    assert m["lm_eval_scores"]["niah_single_1"]["512"] == round(score, 2)
    assert m["average"] == {"256": None, "512": round(score, 2)} and m["effective_length"] is None
    assert m["lm_eval_config"]["niah_single_1"]["metadata"]["max_seq_lengths"] == [512]
    assert (out / "heatmap.png").is_file() and (out / "heatmaps" / "niah_single_1.png").is_file()

    before = (out / "results.jsonl").read_text()
    assert main(argv) == 0  # the 512 entry is reused, the 256 one tried again and skipped again
    assert (out / "results.jsonl").read_text() == before
    assert json.loads((out / "metrics.json").read_text())["scores"] == m["scores"]

    table = ruler_table([m])
    assert table.loc["tiny-none-512-noft", 512] == round(score, 2)
    assert describe_run("ruler", m, resolve_config({})).startswith(
        "engine: lm_eval (lm-eval 0.4.13's own tasks niah_single_1); data generated by lm-eval"
    )
