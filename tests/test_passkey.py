"""Passkey retrieval: prompt construction, length fitting, scoring, resume and the CLI end to end."""

from __future__ import annotations

import json

import pytest

from ropeext import tracking
from ropeext.errors import RopeextError
from ropeext.eval import passkey
from ropeext.eval.common import ResumableJsonl


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def test_template_and_depth():
    text, before = passkey.build_text(4, 0.5, 31337)
    assert before == 2
    assert text.count(passkey.FILLER) == 4
    key_line = "The pass key is 31337. Remember it. 31337 is the pass key."
    assert text.index(key_line) > text.index(passkey.FILLER)
    assert text.split(key_line)[0].count(passkey.FILLER) == 2
    assert text.endswith("What is the pass key? The pass key is")
    assert passkey.build_text(4, 0.0, 1)[0].startswith("The pass key is 1.")
    assert passkey.build_text(4, 1.0, 1)[0].endswith(key_line.replace("31337", "1") + " " + passkey.QUESTION)


@pytest.mark.parametrize("length", [60, 100, 257, 1000])
def test_prompt_is_longest_fitting(tok, length):
    key = 48213
    p = passkey.make_prompt(tok, length, 0.3, key)
    # brute force: the token count with one more block exceeds the length, this one does not
    assert len(p.input_ids) <= length
    longer = passkey.encode(tok, passkey.build_text(p.filler_blocks + 1, 0.3, key)[0])
    assert len(longer) > length
    assert p.input_ids == passkey.encode(tok, p.text)
    assert p.input_ids[0] == tok.bos_token_id
    assert tok.decode(p.input_ids, skip_special_tokens=True) == p.text


def test_too_short_length(tok):
    with pytest.raises(RopeextError, match="too short"):
        passkey.make_prompt(tok, 5, 0.5, 12345)


def test_first_integer_and_keys():
    assert passkey.first_integer(" 12345. Remember") == 12345
    assert passkey.first_integer(" the key 77 or 88") == 77
    assert passkey.first_integer(" none") is None
    k = passkey.sample_key(0, 256, 0.5, 3)
    assert k == passkey.sample_key(0, 256, 0.5, 3)
    assert 10000 <= k <= 99999
    assert len({passkey.sample_key(0, 256, 0.5, i) for i in range(20)}) > 15
    assert len(str(passkey.sample_key(1, 256, 0.5, 0, digits=3))) == 3


def test_check_grid():
    passkey.check_grid([128, 256], [0, 0.5, 1], 2, None, 8)
    with pytest.raises(RopeextError, match="exceeds --max-length 256"):
        passkey.check_grid([128, 256], [0.5], 2, 256, 8)
    with pytest.raises(RopeextError, match="depth 1.5"):
        passkey.check_grid([128], [1.5], 2, None, 8)
    with pytest.raises(RopeextError, match="samples"):
        passkey.check_grid([128], [0.5], 0, None, 8)


def _oracle(tok):
    """A 'model' that reads the key out of the prompt it is given."""
    calls = []

    def generate(ids):
        calls.append(len(ids))
        return f" {passkey.first_integer(tok.decode(ids, skip_special_tokens=True))}. Remember"

    return generate, calls


def test_evaluate_summary_and_resume(tok, tmp_path):
    lengths, depths = [60, 120], [0.0, 1.0]
    gen, calls = _oracle(tok)
    store = ResumableJsonl(tmp_path / "p.jsonl")
    recs = passkey.evaluate(gen, tok, lengths=lengths, depths=depths, samples=2, seed=0, digits=5, store=store)
    assert len(recs) == 8 and all(r["correct"] for r in recs)
    assert all(r["prompt_tokens"] <= r["length"] for r in recs)
    # a wrong answer in one cell shows in the grid at that cell only
    recs[0] = {**recs[0], "correct": False}
    s = passkey.summarize(recs, lengths, depths)
    assert s["grid"] == [[0.5, 1.0], [1.0, 1.0]]
    assert s["accuracy"] == pytest.approx(7 / 8)
    assert s["accuracy_by_length"] == {"60": 0.75, "120": 1.0}

    # resume: a second run asks nothing again and the file has no duplicate lines
    n = len(calls)
    store2 = ResumableJsonl(tmp_path / "p.jsonl")
    passkey.evaluate(gen, tok, lengths=lengths, depths=depths, samples=2, seed=0, digits=5, store=store2)
    assert len(calls) == n
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 8 and len({json.loads(x)["_id"] for x in lines}) == 8


def test_summary_table():
    a = {"task": "passkey", "variant": "pi", "accuracy": 0.5, "accuracy_by_length": {"512": 0.25, "256": 0.75}}
    b = {"task": "passkey", "variant": "none", "accuracy": 1.0, "accuracy_by_length": {"256": 1.0}}
    df = passkey.summary_table([a, b])
    assert list(df.columns) == ["256", "512", "Avg"]
    assert df.loc["pi", "512"] == 25.0 and df.loc["pi", "Avg"] == 50.0
    assert df.loc["none", "256"] == 100.0
    import math

    assert math.isnan(df.loc["none", "512"])
    with pytest.raises(RopeextError, match="not a passkey"):
        passkey.summary_table([{"task": "openllm"}])


def test_cli_end_to_end(tiny_model_dir, tmp_path):
    from ropeext.cli import main

    out = tmp_path / "pk"
    argv = [
        "eval",
        "passkey",
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(out),
        "--lengths",
        "48,96",
        "--depths",
        "0,0.5,1",
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--no-mlflow",
        "--no-progress",
        "--variant",
        "tiny",
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12
    assert (out / "heatmap.png").stat().st_size > 1000
    # the metrics agree with the predictions, recounted here
    for L in (48, 96):
        rs = [p for p in preds if p["length"] == L]
        assert metrics["accuracy_by_length"][str(L)] == sum(p["key"] == p["predicted"] for p in rs) / len(rs)
        assert all(p["prompt_tokens"] <= L for p in rs)
    assert metrics["max_position_embeddings"] == 64  # 96 runs past the window: allowed
    assert metrics["variant"] == "tiny" and metrics["task"] == "passkey"
    # a rerun resumes: nothing duplicated, same metrics
    assert main(argv) == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 12
    assert json.loads((out / "metrics.json").read_text())["grid"] == metrics["grid"]


def test_cli_refuses_length_past_limit(tiny_model_dir, tmp_path, capsys):
    from ropeext.cli import main

    code = main(
        [
            "eval",
            "passkey",
            "--model",
            str(tiny_model_dir),
            "--output-dir",
            str(tmp_path / "x"),
            "--lengths",
            "48,200",
            "--max-length",
            "128",
            "--no-mlflow",
        ]
    )
    assert code == 2
    assert "length 200" in capsys.readouterr().err
    assert not (tmp_path / "x" / "metrics.json").exists()
    code = main(
        ["eval", "passkey", "--model", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "y"), "--no-mlflow"]
    )
    assert code == 2
    assert "missing" in capsys.readouterr().err


def test_cli_logs_mlflow_run(tiny_model_dir, tmp_path, monkeypatch):
    import mlflow

    from ropeext.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "passkey-test")
    out = tmp_path / "pk"
    assert (
        main(
            [
                "eval",
                "passkey",
                "--model",
                str(tiny_model_dir),
                "--output-dir",
                str(out),
                "--lengths",
                "48",
                "--depths",
                "0.5",
                "--samples",
                "2",
                "--max-new-tokens",
                "3",
                "--no-progress",
                "--variant",
                "v1",
            ]
        )
        == 0
    )
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["passkey-test"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    acc = json.loads((out / "metrics.json").read_text())["accuracy"]
    assert runs[0].data.metrics["passkey.accuracy"] == acc
    assert runs[0].data.tags["ropeext.variant"] == "v1"
    names = tracking.run_artifacts(uri, runs[0].info.run_id)
    assert {"metrics.json", "heatmap.png", "predictions.jsonl"} <= names
