import subprocess
import sys


def test_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "ropeext.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("corpus", "tokenizer", "pack", "pretrain", "finetune", "eval", "report", "rope", "solve", "compare", "angles"):
        assert cmd in out, cmd
    ev = subprocess.run([sys.executable, "-m", "ropeext.cli", "eval", "--help"], capture_output=True, text=True, check=True).stdout
    assert "ppl" in ev
