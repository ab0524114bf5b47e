"""Open LLM tasks: presets, local task building, lm-eval end to end on the tiny model, the table."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from ropeext.errors import RopeextError
from ropeext.eval.openllm import presets, report, runner
from ropeext.eval.openllm.local_tasks import build_local_tasks, read_documents


def _code_doc(k: int) -> str:
    """A small, varied Python module (document ``k``)."""
    lines = [f"import module_{k}", "", f"class Thing{k}:", f"    limit = {k * 7 + 3}", ""]
    for f in range(5):
        lines += [
            f"    def step_{k}_{f}(self, value_{f}):",
            f"        total = value_{f} * {f + k + 2}",
            "        if total > self.limit:",
            f"            return total - {k + f}",
            f"        return total + {f * 3 + 1}",
            "",
        ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [_code_doc(k) for k in range(12)]
    path = tmp_path_factory.mktemp("tokens") / "test.parquet"
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    pq.write_table(pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32()))}), path)
    return path, docs


# ---------------------------------------------------------------- presets


def test_presets_expand_with_paper_shots():
    assert presets.resolve_tasks("dprope_paper") == [
        ("truthfulqa_mc2", 0),
        ("hellaswag", 0),
        ("mmlu", 5),
        ("arc_challenge", 25),
    ]
    assert dict(presets.resolve_tasks("leaderboard_v1")) == {
        "arc_challenge": 25,
        "hellaswag": 10,
        "mmlu": 5,
        "truthfulqa_mc2": 0,
        "winogrande": 5,
        "gsm8k": 5,
    }
    assert presets.resolve_tasks(None) == [("ropeext_nextline", 0), ("ropeext_code_ppl", 0)]
    assert all(n == 3 for _, n in presets.resolve_tasks("leaderboard_v1", num_fewshot=3))
    assert presets.resolve_tasks(None, "hellaswag:10,mmlu", num_fewshot=2) == [("hellaswag", 10), ("mmlu", 2)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "dprope"}, "unknown Open LLM preset 'dprope' \\(did you mean 'dprope_paper'"),
        ({"tasks": "hellaswag:x"}, "must be an integer"),
        ({"tasks": "hellaswag:-1"}, ">= 0"),
        ({"tasks": "mmlu,mmlu:5"}, "listed twice"),
        ({"tasks": " , "}, "no task names"),
        ({"preset": "local", "tasks": "mmlu"}, "not both"),
    ],
)
def test_preset_errors(kwargs, match):
    with pytest.raises(RopeextError, match=match):
        presets.resolve_tasks(**kwargs)


def test_check_known_suggests():
    with pytest.raises(RopeextError, match="'hellaswg' \\(did you mean hellaswag"):
        presets.check_known(["hellaswag", "hellaswg"], {"hellaswag", "arc_easy"}, "lm-eval's tasks")


# ---------------------------------------------------------------- local tasks


def test_local_tasks_are_real_next_lines(heldout, tok, tmp_path):
    path, docs = heldout
    assert read_documents(path, tok) == docs
    man = build_local_tasks(
        path, tok, tmp_path / "tasks", n_items=20, n_fewshot_items=4, context_lines=3, ppl_docs=3, ppl_tokens=40, seed=1
    )
    nl = tmp_path / "tasks" / "ropeext_nextline"
    test = [json.loads(x) for x in (nl / "test.jsonl").read_text().splitlines()]
    train = [json.loads(x) for x in (nl / "train.jsonl").read_text().splitlines()]
    assert len(test) == 20 and len(train) == 4 and man["tasks"]["ropeext_nextline"]["test_items"] == 20
    assert not {(t["doc_index"], t["line"]) for t in test} & {(t["doc_index"], t["line"]) for t in train}
    for item in test + train:
        lines = docs[item["doc_index"]].split("\n")
        j = item["line"]
        # the context is the lines just before line j, and the right choice is line j itself
        assert item["context"] == "\n".join(lines[j - 3 : j]) and item["context"][-1].strip()
        assert item["choices"][item["label"]] == lines[j]
        indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
        for c, choice in enumerate(item["choices"]):
            assert choice.startswith(indent)
            if c != item["label"]:
                assert choice.strip() != lines[j].strip()
                assert any(
                    choice.strip() == x.strip()
                    for k, d in enumerate(docs)
                    if k != item["doc_index"]
                    for x in d.split("\n")
                )
    assert len({t["label"] for t in test}) > 1  # the right answer is not always in one place
    ppl = [json.loads(x) for x in (tmp_path / "tasks" / "ropeext_code_ppl" / "test.jsonl").read_text().splitlines()]
    assert [p["text"] for p in ppl] == [
        tok.decode(tok(d, add_special_tokens=False)["input_ids"][:40]) for d in docs[:3]
    ]
    cfg = yaml.safe_load((nl / "ropeext_nextline.yaml").read_text())
    assert cfg["dataset_path"] == "json"
    assert cfg["dataset_kwargs"]["data_files"]["test"] == str((nl / "test.jsonl").resolve())
    # lm-eval finds and builds the task from the folder, offline
    tm = runner.task_manager([tmp_path / "tasks"], ["ropeext_nextline", "ropeext_code_ppl"])
    top = runner.load_entry(tm, "ropeext_nextline", 2)
    assert len(top) == 1 and len(list(top[0].test_docs())) == 20
    assert top[0].get_config("num_fewshot") == 2
    # same seed, same files
    build_local_tasks(
        path, tok, tmp_path / "again", n_items=20, n_fewshot_items=4, context_lines=3, ppl_docs=3, ppl_tokens=40, seed=1
    )
    assert (tmp_path / "again" / "ropeext_nextline" / "test.jsonl").read_text() == (nl / "test.jsonl").read_text()


def test_local_tasks_are_drawn_once_per_file_tokenizer_and_settings(heldout, tok, tmp_path, monkeypatch):
    """`ropeext each` evaluates several variants in one process: the second build of the same items (a second
    copy of the same tokenizer) writes the same files without drawing again; another seed or file draws anew."""
    import copy

    from ropeext.eval.openllm import local_tasks

    path, _ = heldout
    draws = []
    real = local_tasks.nextline_items
    monkeypatch.setattr(local_tasks, "nextline_items", lambda *a, **k: draws.append(k["seed"]) or real(*a, **k))
    monkeypatch.setattr(local_tasks, "_DRAWS", {})
    opts = dict(n_items=10, n_fewshot_items=2, context_lines=3, ppl_docs=3, ppl_tokens=40)
    first = build_local_tasks(path, tok, tmp_path / "a", seed=3, **opts)
    second = build_local_tasks(path, copy.deepcopy(tok), tmp_path / "b", seed=3, **opts)
    assert draws == [3] and first == second
    for task in ("ropeext_nextline/test.jsonl", "ropeext_nextline/train.jsonl", "ropeext_code_ppl/test.jsonl"):
        assert (tmp_path / "a" / task).read_bytes() == (tmp_path / "b" / task).read_bytes()
    build_local_tasks(path, tok, tmp_path / "c", seed=4, **opts)
    moved = tmp_path / "moved.parquet"
    moved.write_bytes(path.read_bytes())
    build_local_tasks(moved, tok, tmp_path / "d", seed=3, **opts)
    assert draws == [3, 4, 3]


def test_local_task_input_errors(heldout, tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, _ = heldout
    with pytest.raises(RopeextError, match="held-out documents not found: .*nope.parquet"):
        read_documents(tmp_path / "nope.parquet", tok)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": ["a"]}), bad)
    with pytest.raises(RopeextError, match="no column 'input_ids' \\(columns: text\\)"):
        read_documents(bad, tok)
    with pytest.raises(RopeextError, match="only 12 non-blank held-out documents; 50"):
        build_local_tasks(path, tok, tmp_path / "t", ppl_docs=50)
    with pytest.raises(RopeextError, match="items"):
        build_local_tasks(path, tok, tmp_path / "t", n_items=5000)


# ---------------------------------------------------------------- end to end


def _continuation_logprob(model, tok, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context) by a plain forward pass."""
    import torch

    whole = tok(context + continuation)["input_ids"]  # the tokenizer's own special tokens, as lm-eval encodes
    ctx = tok(context)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


def test_cli_end_to_end_local(tiny_model_dir, heldout, tok, tmp_path):
    from transformers import AutoModelForCausalLM

    from ropeext.cli import main

    path, _ = heldout
    out = tmp_path / "ol"
    argv = [
        "eval",
        "openllm",
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(out),
        "--heldout",
        str(path),
        "--no-mlflow",
        "--no-progress",
        "--variant",
        "tiny",
        "--batch-size",
        "4",
    ]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["lm_eval_version"] == "0.4.13" and m["max_length"] == 64 and m["preset"] == "local"
    nl = m["tasks"]["ropeext_nextline"]
    assert nl["version"] == 1.0 and nl["n_shot"] == {"ropeext_nextline": 0}
    assert nl["configs"]["ropeext_nextline"]["dataset_path"] == "json"
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    mc = [p for p in preds if p["task"] == "ropeext_nextline"]
    assert len(mc) == 40
    # acc / acc_norm recomputed from the per-choice log-likelihoods
    acc = sum(max(range(4), key=lambda c: p["filtered_resps"][c][0]) == p["target"] for p in mc) / len(mc)
    acc_norm = sum(
        max(range(4), key=lambda c: p["filtered_resps"][c][0] / len(p["doc"]["choices"][c])) == p["target"] for p in mc
    ) / len(mc)
    assert nl["metrics"]["acc"] == pytest.approx(acc) and nl["score"] == pytest.approx(acc_norm)
    # the log-likelihoods lm-eval got agree with a plain forward pass where the item fits the window
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    checked = 0
    for p in mc:
        for c, choice in enumerate(p["doc"]["choices"]):
            if len(tok(p["doc"]["context"] + "\n" + choice)["input_ids"]) <= 64:
                ref = _continuation_logprob(model, tok, p["doc"]["context"], "\n" + choice)
                assert p["filtered_resps"][c][0] == pytest.approx(ref, rel=1e-4, abs=1e-3)
                checked += 1
    assert checked >= 5
    # bits per byte from the per-document log-likelihoods
    pp = [p for p in preds if p["task"] == "ropeext_code_ppl"]
    bpb = (
        -sum(p["filtered_resps"][0] if isinstance(p["filtered_resps"], list) else p["filtered_resps"] for p in pp)
        / sum(len(p["doc"]["text"].encode()) for p in pp)
        / math.log(2)
    )
    assert m["tasks"]["ropeext_code_ppl"]["score"] == pytest.approx(bpb, rel=1e-6)
    assert m["average"] == pytest.approx(acc_norm)

    # a rerun resumes: no duplicated lines, same metrics
    assert main(argv) == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == len(preds)
    assert json.loads((out / "metrics.json").read_text())["tasks"]["ropeext_nextline"]["metrics"] == nl["metrics"]

    table = report.summary_table([m])
    assert list(table.columns) == ["ropeext_nextline", "ropeext_code_ppl", "Avg"]
    assert table.loc["tiny", "ropeext_nextline"] == round(100 * acc_norm, 2)


def test_cli_fewshot_and_table(tiny_model_dir, heldout, tmp_path):
    from ropeext.cli import main

    path, _ = heldout
    out = tmp_path / "fs"
    assert (
        main(
            [
                "eval",
                "openllm",
                "--model",
                str(tiny_model_dir),
                "--output-dir",
                str(out),
                "--heldout",
                str(path),
                "--tasks",
                "ropeext_nextline:2",
                "--limit",
                "6",
                "--no-mlflow",
                "--no-progress",
                "--variant",
                "fs",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["tasks"]) == ["ropeext_nextline"] and m["preset"] is None
    assert m["tasks"]["ropeext_nextline"]["n_shot"] == {"ropeext_nextline": 2}
    assert m["tasks"]["ropeext_nextline"]["n_samples"]["ropeext_nextline"]["effective"] == 6
    other = {
        "task": "openllm",
        "variant": "base",
        "tasks": {
            "ropeext_nextline": {"headline": "acc_norm", "score": 0.5},
            "ropeext_code_ppl": {"headline": "bits_per_byte", "score": 3.21},
        },
    }
    df = report.summary_table([m, other])
    assert df.loc["base", "ropeext_nextline"] == 50.0 and df.loc["base", "ropeext_code_ppl"] == 3.21
    assert df.loc["base", "Avg"] == 50.0  # bits per byte is not averaged with accuracies
    assert math.isnan(df.loc["fs", "ropeext_code_ppl"])
    with pytest.raises(RopeextError, match="not an Open LLM"):
        report.summary_table([{"task": "passkey"}])


def test_cli_bad_input(tiny_model_dir, heldout, tmp_path, capsys):
    from ropeext.cli import main

    base = ["eval", "openllm", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "o"), "--no-mlflow"]
    assert main(base) == 2
    assert "--heldout" in capsys.readouterr().err
    assert main(base + ["--preset", "leaderbord_v1"]) == 2
    assert "did you mean 'leaderboard_v1'" in capsys.readouterr().err
    assert main(base + ["--heldout", str(tmp_path / "none.parquet")]) == 2
    assert "none.parquet" in capsys.readouterr().err
    assert main(base + ["--tasks", "mmlu", "--include-path", str(tmp_path / "nodir")]) == 2
    assert "nodir" in capsys.readouterr().err
    assert main(base + ["--batch-size", "zero"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_hub_tasks_offline(tmp_path, monkeypatch):
    """The hub path: names are checked against lm-eval's index; a dataset not cached fails clearly."""
    tm = runner.task_manager([], ["hellaswag"])
    assert {"hellaswag", "mmlu", "arc_challenge", "truthfulqa_mc2", "winogrande", "gsm8k"} <= set(tm.all_tasks)
    with pytest.raises(RopeextError, match="lm-eval task 'hellaswag': its dataset could not be loaded"):
        runner.load_entry(tm, "hellaswag", 10)
    with pytest.raises(RopeextError, match="unknown lm-eval task 'hellaswagg' \\(did you mean hellaswag"):
        runner.check_known(["hellaswagg"], set(tm.all_tasks), "lm-eval's tasks")
