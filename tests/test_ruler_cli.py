"""``ropeext eval ruler`` end to end on the tiny fixture model, resume, and bad input."""

from __future__ import annotations

import json

import pytest

from ropeext.cli import main

ESSAY = "Rivers carve valleys over long ages. Each flood moves stones a little further downstream.\n" * 30


@pytest.fixture()
def essay_dir(tmp_path):
    d = tmp_path / "essays"
    d.mkdir()
    (d / "one.txt").write_text(ESSAY)
    return d


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_eval_ruler_end_to_end_and_resume(tmp_path, tiny_model_dir, essay_dir, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "ruler"
    squad = tmp_path / "squad.json"
    squad.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": f"Land {i} has the capital city{i}x.",
                                "qas": [
                                    {
                                        "question": f"Capital of land {i}?",
                                        "id": str(i),
                                        "answers": [{"text": f"city{i}x"}],
                                    }
                                ],
                            }
                            for i in range(5)
                        ]
                    }
                ]
            }
        )
    )
    # short answers keep the CPU test fast (the templates file is the documented way to change them)
    templates = tmp_path / "templates.yaml"
    templates.write_text("".join(f"{k}:\n  max_new_tokens: 6\n" for k in ("niah", "vt", "cwe", "fwe", "qa")))
    args = [
        "eval",
        "ruler",
        "--templates",
        str(templates),
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(out),
        "--lengths",
        "512,1024",
        "--samples",
        "2",
        "--max-length",
        "1024",
        "--essay-source",
        str(essay_dir),
        "--squad",
        str(squad),
        "--no-progress",
        "--variant",
        "tiny",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "skipping qa_2" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["subset"] == "all without qa_2" and len(metrics["tasks"]) == 12
    assert "qa_2" not in metrics["tasks"] and metrics["lengths"] == [512, 1024]
    assert "qa_2" in metrics["skipped"] and "cwe" in metrics["skipped"]  # no file; too long for 1024
    assert metrics["average"]["1024"] is None  # not all 13 tasks ran at 1024
    assert metrics["effective_length"] is None
    recs = _lines(out / "predictions.jsonl")
    ran = {(r["task"], r["length"]) for r in recs}
    assert ("niah_single_1", 512) in ran and ("qa_1", 1024) in ran and ("vt", 1024) in ran
    assert len(recs) == 2 * len(ran)
    assert all(r["max_new_tokens"] == 6 for r in recs)
    for r in recs:
        assert r["length"] - int(0.02 * r["length"]) <= r["total_tokens"] <= r["length"]
        assert 0.0 <= r["score"] <= 1.0
        assert metrics["samples"][r["task"]][str(r["length"])] == 2
    by_cell = {}
    for r in recs:
        by_cell.setdefault((r["task"], r["length"]), []).append(r["score"])
    for (task, length), vals in by_cell.items():
        assert metrics["scores"][task][str(length)] == round(100 * sum(vals) / len(vals), 2)
    assert (out / "heatmap.png").stat().st_size > 0
    assert (out / "heatmaps" / "niah_single_1.png").exists()

    # a rerun resumes: nothing is generated again and no line is duplicated
    before = (out / "predictions.jsonl").read_text()
    assert main(args) == 0
    assert (out / "predictions.jsonl").read_text() == before
    assert json.loads((out / "metrics.json").read_text())["scores"] == metrics["scores"]

    # other settings in the same folder are refused
    assert main(args[:-2] + ["--seed", "9", "--no-mlflow"]) == 2
    assert "other settings" in capsys.readouterr().err

    import mlflow

    runs = mlflow.search_runs(experiment_names=["ropeext"])
    assert (runs["tags.ropeext.stage"] == "eval_ruler").sum() >= 2
    assert "metrics.ruler.niah_single_1_at_512" in runs.columns


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lengths", "2048"], "2048 exceed the model's window of 64"),
        (
            ["--lengths", "512", "--max-length", "1024", "--tasks", "niah_single_9"],
            "unknown RULER task(s): niah_single_9",
        ),
        (["--lengths", "512", "--max-length", "1024", "--tasks", "niah_single_2"], "need an essay haystack"),
        (
            ["--lengths", "512", "--max-length", "1024", "--tasks", "niah_single_2", "--essay-source", "/no/such"],
            "essay source not found: /no/such",
        ),
        (
            ["--lengths", "512", "--max-length", "1024", "--tasks", "qa_1", "--squad", "/no/squad.json"],
            "SQuAD (qa_1) file not found: /no/squad.json",
        ),
        (["--lengths", "5x"], "--lengths: expected comma-separated integers"),
        (["--lengths", "512", "--max-length", "1024", "--subset", "tiny"], "unknown RULER task subset 'tiny'"),
    ],
)
def test_eval_ruler_bad_input(tmp_path, tiny_model_dir, capsys, extra, message):
    code = main(
        [
            "eval",
            "ruler",
            "--model",
            str(tiny_model_dir),
            "--output-dir",
            str(tmp_path / "o"),
            "--no-mlflow",
            "--no-progress",
            *extra,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_eval_ruler_average_and_effective_length(tmp_path, tiny_model_dir):
    templates = tmp_path / "templates.yaml"
    templates.write_text("niah:\n  max_new_tokens: 4\nvt:\n  max_new_tokens: 4\n")
    out = tmp_path / "r"
    assert (
        main(
            [
                "eval",
                "ruler",
                "--model",
                str(tiny_model_dir),
                "--output-dir",
                str(out),
                "--templates",
                str(templates),
                "--tasks",
                "vt,niah_single_1",
                "--lengths",
                "1024,512",
                "--samples",
                "1",
                "--max-length",
                "1024",
                "--threshold",
                "-1",
                "--no-mlflow",
                "--no-progress",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["subset"] == "custom" and m["tasks"] == ["niah_single_1", "vt"] and m["lengths"] == [512, 1024]
    for L in ("512", "1024"):
        assert m["average"][L] == round((m["scores"]["niah_single_1"][L] + m["scores"]["vt"][L]) / 2, 2)
    assert m["effective_length"] == 1024  # every average is above a threshold of -1
    assert m["threshold"] == -1.0


def test_eval_ruler_own_wording_by_default(tmp_path, tiny_model_dir):
    """Without --templates the prompts are the project's own wording, and the metrics say so; every record's
    prompt hash matches a prompt rebuilt with those templates."""
    import hashlib

    from transformers import AutoTokenizer

    from ropeext.eval.ruler.generate import make_sample
    from ropeext.eval.ruler.tasks import load_templates

    out = tmp_path / "r"
    assert (
        main(
            [
                "eval",
                "ruler",
                "--model",
                str(tiny_model_dir),
                "--output-dir",
                str(out),
                "--tasks",
                "niah_single_1,fwe",
                "--lengths",
                "512",
                "--samples",
                "1",
                "--max-length",
                "512",
                "--no-mlflow",
                "--no-progress",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["template_source"] == {k: "ropeext" for k in ("niah", "vt", "cwe", "fwe", "qa")}
    recs = {r["task"]: r for r in _lines(out / "predictions.jsonl")}
    assert recs["niah_single_1"]["max_new_tokens"] == 128 and recs["fwe"]["max_new_tokens"] == 50
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for task, rec in recs.items():
        prompt = make_sample(task, 512, 0, tok, seed=0, templates=load_templates("ropeext"))["prompt"]
        assert hashlib.sha256(prompt.encode()).hexdigest() == rec["prompt_sha256"]
