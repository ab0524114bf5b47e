"""An evaluation suite is one module: a toy suite added as one file in a copy of the checkout is planned by
the workflow, has its command and its report option, and gets its section in the report
(docs/adding-an-evaluation.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ropeext.suites import SUITES
from tests.conftest import REPO

BIN = Path(sys.executable).parent

# the one file a new suite is: its rule's command, its report section and its declaration
TOY = '''"""Toy suite: how many files each model directory holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ropeext.report.tables import load_json, order_rows, section
from ropeext.text import markdown_table
from ropeext.suites._suite import Suite

COMMAND = ("eval", "toy")
HELP = "count the files of a model directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config")
    parser.add_argument("--model", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--variant", required=True)


def run(args) -> None:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = sum(1 for p in Path(args.model).iterdir() if p.is_file())
    (out / "toy.json").write_text(json.dumps({"variant": args.variant, "files": files}))


def report(doc, paths: list) -> None:
    metrics = load_json(paths)
    rows = [{"variant": m["variant"], "files": m["files"]} for m in metrics]
    df = order_rows(pd.DataFrame(rows).set_index("variant"))
    doc.variants |= set(df.index)
    doc.save(df, "toy.csv")
    doc.sections += section("Toy suite (files per model directory)", [markdown_table(df)])


SUITE = Suite(name="toy", section="eval.passkey", rule="eval_toy", order=35, report=report, metrics="toy.json",
              command="eval toy --config {params.cfg} --model {input.model} --output-dir {params.outdir} "
                      "--variant {params.variant}")
'''


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) with the toy suite added."""
    root = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():  # a tracked file deleted in the work tree is left out
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name, follow_symlinks=False)
    (root / "ropeext" / "suites" / "toy.py").write_text(TOY)
    return root


def _run(copy: Path, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    proc = subprocess.run(list(argv), cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _job_counts(text: str) -> dict[str, int]:
    stats = text[text.index("Job stats:") :].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_the_real_suites_are_registered():
    assert [s.name for s in SUITES] == ["ppl", "passkey", "longbench", "openllm", "ruler", "bf16"]
    assert len({s.rule for s in SUITES}) == len(SUITES)


def test_the_workflow_plans_a_new_suite(copy):
    dry = _run(copy, str(BIN / "snakemake"), "-n", "-p", "--configfile", ".test/config.yaml").stdout
    jobs = _job_counts(dry)
    # one job per variant of its config section (here eval.passkey's), as the suite declares
    assert jobs.get("eval_toy") == jobs["eval_passkey"] >= 1, jobs
    toy_files = re.findall(r"results/eval/toy/[\w-]+/toy\.json", dry)
    assert toy_files and all(f.count("/") == 4 for f in toy_files)
    report_cmd = next(line for line in dry.splitlines() if " report --config " in line)
    given = re.search(r" --toy((?: \S+/eval/toy/[\w-]+/toy\.json)+) --", report_cmd)
    assert given and sorted(given[1].split()) == sorted(set(toy_files)), report_cmd
    assert re.search(r"[ ']eval toy --config \S+ --model \S+ --output-dir \S+/eval/toy/[\w-]+ --variant ", dry)


def test_the_workflow_runs_a_job_of_a_new_suite(copy):
    """Its rule, made in the registry's loop, runs its own command (with a model directory standing in)."""
    model = copy / "results" / "models" / "micro-dprope-64-anchor"
    model.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (model / name).write_text("{}")
    target = "results/eval/toy/micro-dprope-64-anchor/toy.json"
    (copy / "per_variant.yaml").write_text("eval: {jobs: per_variant}\n")  # one job for this one variant
    _run(
        copy,
        str(BIN / "snakemake"),
        target,
        "--configfile",
        ".test/config.yaml",
        "per_variant.yaml",
        "--cores",
        "1",
        "--allowed-rules",
        "eval_toy",
    )
    assert json.loads((copy / target).read_text()) == {"variant": "micro-dprope-64-anchor", "files": 2}
    assert (copy / "results" / "benchmarks" / "eval_toy" / "dprope-64-anchor.tsv").is_file()


def test_the_command_line_and_the_report_pick_up_a_new_suite(copy, tmp_path):
    python = sys.executable
    assert "--toy" in _run(copy, python, "-m", "ropeext.cli", "report", "--help").stdout
    assert "count the files of a model directory" in _run(copy, python, "-m", "ropeext.cli", "eval", "--help").stdout

    paths = []
    for name, files in (("micro-dprope-64-anchor", 3), ("micro-dprope-64-noft", 1)):
        model = tmp_path / "models" / name
        model.mkdir(parents=True)
        for i in range(files):
            (model / f"f{i}.bin").write_bytes(b"x")
        out = tmp_path / "eval" / "toy" / name
        _run(
            copy,
            python,
            "-m",
            "ropeext.cli",
            "eval",
            "toy",
            "--model",
            str(model),
            "--output-dir",
            str(out),
            "--variant",
            name,
        )
        paths.append(str(out / "toy.json"))
    assert json.loads(Path(paths[0]).read_text()) == {"variant": "micro-dprope-64-anchor", "files": 3}

    report = tmp_path / "report"
    _run(
        copy,
        python,
        "-m",
        "ropeext.cli",
        "report",
        "--config",
        ".test/config.yaml",
        "--toy",
        *paths,
        "--output-dir",
        str(report),
        "--no-mlflow",
    )
    md = (report / "summary.md").read_text()
    section = md[md.index("## Toy suite (files per model directory)") :]
    section = re.sub(r" +", " ", section)  # the table's cells are padded to their column's width
    assert "| micro-dprope-64-noft | 1 |" in section and "| micro-dprope-64-anchor | 3 |" in section
    assert section.index("noft") < section.index("anchor")  # the shared row order: noft first
    assert (report / "toy.csv").read_text().splitlines()[0] == "variant,files"
