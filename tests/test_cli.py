import json
import subprocess
import sys


def test_help_lists_every_stage():
    out = subprocess.run(
        [sys.executable, "-m", "ropeext.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in (
        "corpus",
        "tokenizer",
        "pack",
        "pretrain",
        "finetune",
        "eval",
        "report",
        "rope",
        "solve",
        "compare",
        "angles",
    ):
        assert cmd in out, cmd
    ev = subprocess.run(
        [sys.executable, "-m", "ropeext.cli", "eval", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "ppl" in ev


def test_each_runs_its_command_lines_in_one_process_and_stops_at_the_first_failure(tmp_path):
    """`ropeext each` (the per_suite evaluation jobs): every command line runs, in order; the first that
    fails (here one that does not parse) ends it with that command's status, and the rest do not run."""
    from ropeext.cli import main

    geometry = "--rope-theta 10000 --head-dim 32 --train-length 256 --target-length 1024 --no-mlflow"
    a, b, c = tmp_path / "a b.json", tmp_path / "b.json", tmp_path / "c.json"
    assert (
        main(["each", f"solve {geometry} --method pi --output '{a}'", f"solve {geometry} --method yarn --output {b}"])
        == 0
    )
    assert json.loads(a.read_text())["method"] == "pi" and json.loads(b.read_text())["method"] == "yarn"
    assert (
        main(["each", f"solve {geometry} --method pi --no-such-option", f"solve {geometry} --method pi --output {c}"])
        == 2
    )
    assert not c.exists()
