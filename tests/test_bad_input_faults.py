"""Faults around a run rather than in its config: two writers on one output, a killed holder, a killed
workflow, a results folder whose path is not a plain shell word (the whole DAG under such a folder is
tests/test_workflow.py's micro run).

Two tables:

- ``WRITERS``: every ``ropeext`` command that writes something, once per output option: while another
  process holds that output (``ropeext.io.lock_output``), the command stops at once with exit status 2
  and one ``error:`` line naming the holder's pid and the lock file;
- ``FAULTS``: the workflow-level cases, each a Snakemake run (or a dry run) on the micro config
  (.test/config.yaml) in a temporary folder, checked for what the issue asked.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from ropeext.cli import build_parser, lock_targets, main
from ropeext.io import held_outputs, lock_file, lock_output
from tests.conftest import REPO
from tests.test_bad_input import _argv, _leaf_parsers
from tests.test_workflow import ODD_NAME, _snakemake

HOLD = """
import sys, time
from ropeext.io import lock_output
held = [lock_output(p, "--output", "ropeext holder") for p in sys.argv[1:]]
print("ready", flush=True)
time.sleep(600)
"""


def _holder(*paths: Path) -> subprocess.Popen:
    """A process that holds the locks of ``paths`` until it is killed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, paths)], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


WRITERS = [
    (" ".join(path), parser, option, kind)
    for path, parser in _leaf_parsers(build_parser())
    for dest, option, kind in parser.get_default("_outputs") or ()
]


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """One output per WRITERS row under a folder named like ODD_NAME, all held by one other process."""
    root = tmp_path_factory.mktemp("writers") / ODD_NAME
    paths = {(name, option): root / f"{name.replace(' ', '-')}{option}" for name, _, option, _ in WRITERS}
    locks = {}  # what each command locks for that output (rope: its folder per target length)
    for name, parser, option, _ in WRITERS:
        args = build_parser().parse_args(_argv(name.split(), parser, {option: paths[(name, option)]}))
        locks[(name, option)] = {opt: p for p, opt in lock_targets(args)}[option]
    proc = _holder(*locks.values())
    yield paths, locks, proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("name,parser,option,kind", WRITERS, ids=[f"{w[0]} {w[2]}" for w in WRITERS])
def test_a_second_writer_stops_at_once_naming_the_first(name, parser, option, kind, held, capsys):
    paths, locks, pid = held
    path, locked = paths[(name, option)], locks[(name, option)]
    start = time.monotonic()
    assert main(_argv(name.split(), parser, {option: path})) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"error: {option} {locked}: another process is writing it: pid {pid} on " in errors[0], errors[0]
    assert "(ropeext holder, since " in errors[0] and f"lock file {lock_file(locked)}" in errors[0]
    assert time.monotonic() - start < 5  # at once: no wait on the lock
    if Path(locked) == Path(path):
        assert not path.exists()
    else:  # the holder's lock lives inside the shared folder: nothing else was written there
        assert [p.name for p in path.iterdir()] == [lock_file(locked).name]


def test_writers_cover_every_stage():
    names = {name for name, *_ in WRITERS}
    assert {"finetune", "pretrain", "eval ppl", "eval longbench", "extend", "pack", "report"} <= names
    assert len(WRITERS) >= 16


# --- the workflow-level cases ------------------------------------------------------------------------------


def _overlay(tmp: Path, **values) -> Path:
    path = tmp / "overlay.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True))
    return path


def holder_killed(tmp: Path) -> None:
    """The lock of a SIGKILLed holder is free at once: the kernel drops it with the process."""
    out = tmp / ODD_NAME / "m"
    proc = _holder(out)
    assert [(o, h.split(" on ")[0]) for o, h in held_outputs(tmp)] == [(out, f"pid {proc.pid}")]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert held_outputs(tmp) == []
    lock_output(out).release()  # taken without waiting
    argv = ["solve", "--rope-theta", "10000", "--head-dim", "32", "--train-length", "32", "--target-length", "64"]
    assert main([*argv, "--method", "pi", "--output", str(out), "--no-mlflow"]) == 0
    assert out.is_file() and not lock_file(out).exists()


def shell_words(tmp: Path) -> None:
    """Every path a rule puts on a command line stays one shell word (dry runs, both eval.jobs shapes, and a
    fine-tune under `ropeext.launch` with its accelerate config in the same folder): each word that names
    the results folder starts with it, in the command and, per_suite, in each command `ropeext each` runs."""
    results = str(tmp / ODD_NAME)
    accelerate = tmp / ODD_NAME / "accelerate" / "ddp.yaml"
    accelerate.parent.mkdir(parents=True)
    accelerate.write_text("distributed_type: MULTI_GPU\n")
    for jobs, launch in (("per_variant", {"accelerate_config": str(accelerate)}), ("per_suite", {})):
        overlay = _overlay(tmp, results_dir=results, eval={"jobs": jobs}, finetune=launch)
        dry = _snakemake(tmp, "-n", "-p", configs=(overlay,)).stdout
        commands = [line.removeprefix("Shell command: ") for line in dry.splitlines() if "python -m ropeext" in line]
        assert len(commands) >= 14, dry[-3000:]
        launched = [c for c in commands if "ropeext.launch --config_file" in c]
        assert len(launched) == (4 if launch else 0)  # the four fine-tunes
        for command in launched:
            words = shlex.split(command)
            assert words[words.index("--config_file") + 1] == str(accelerate), command
        for command in commands:
            words = shlex.split(command)
            if "each" in words:  # `ropeext each 'COMMAND' ... > LOG`: each COMMAND split in turn
                first, end = words.index("each") + 1, words.index(">")
                words = words[:first] + [w for inner in words[first:end] for w in shlex.split(inner)] + words[end:]
            odd = [w for w in words if "ul'ts" in w]
            assert odd and all(w.startswith(results) for w in odd), command


def workflow_sigkill(tmp: Path) -> None:
    """Snakemake SIGKILLed while a job runs: the job stops within seconds (it watches the workflow's pid),
    its output lock is free; a rerun while some process still holds an output stops before any job,
    naming the output and the pid.

    The three jobs before the pre-training one (corpus, tokenizer, pack) run on 20 documents a split and log
    no MLflow run (ROPEEXT_MLFLOW=0): only their outputs matter here, and the pre-training job is killed as
    soon as it holds its output lock, while it still loads torch (before it would open its run)."""
    results = tmp / "results"
    overlay = _overlay(tmp, corpus={"max_documents": 20})
    cmd = [str(Path(sys.executable).parent / "snakemake"), "results/models/micro-base", "-s", str(REPO / "Snakefile")]
    cmd += ["--cores", "2", "--configfile", str(REPO / ".test" / "config.yaml"), str(overlay)]
    env = dict(os.environ, ROPEEXT_MLFLOW="0")
    workflow = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    lock = results / "models" / "micro-base.lock"
    try:
        deadline = time.monotonic() + 600
        while not (lock.exists() and held_outputs(results)) and time.monotonic() < deadline:
            assert workflow.poll() is None, "the workflow ended before the pre-training job started"
            time.sleep(0.2)
        ((output, holder),) = held_outputs(results)
        job = int(holder.split()[1])
    finally:
        workflow.send_signal(signal.SIGKILL)
        workflow.wait()
    killed = time.monotonic()
    while _alive(job) and time.monotonic() - killed < 60:
        time.sleep(0.1)
    assert not _alive(job), "the job ran on after its workflow was killed"
    log = (results / "logs" / "pretrain" / "micro-base.log").read_text()
    assert f"the workflow (Snakemake, pid {workflow.pid}) that started this job is gone" in log, log[-2000:]
    assert held_outputs(results) == [] and not lock.exists()
    print(f"job {job} stopped {time.monotonic() - killed:.1f} s after its workflow was killed")

    _snakemake(tmp, "--unlock", configs=(overlay,))
    proc = _holder(results / "models" / "micro-base")
    try:
        rerun = _snakemake(tmp, "results/models/micro-base", check=False, configs=(overlay,))
    finally:
        proc.kill()
        proc.wait()
    assert rerun.returncode != 0
    assert f"results/models/micro-base: pid {proc.pid} on " in rerun.stderr, rerun.stderr[-3000:]
    assert "still being written by another process" in rerun.stderr
    assert log == (results / "logs" / "pretrain" / "micro-base.log").read_text()  # no job started


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (the killed workflow's child, re-parented) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class Fault:
    id: str
    run: Callable[[Path], None]  # (empty temporary folder): asserts what the issue asks of the case
    slow: bool = False


FAULTS = [
    Fault("holder_sigkilled_releases_the_lock", holder_killed),
    Fault("paths_stay_one_shell_word", shell_words, slow=True),
    Fault("workflow_sigkilled_stops_its_jobs_and_next_start_names_holders", workflow_sigkill, slow=True),
]


@pytest.mark.parametrize(
    "fault", [pytest.param(f, marks=[pytest.mark.slow] if f.slow else []) for f in FAULTS], ids=[f.id for f in FAULTS]
)
def test_fault(fault, tmp_path):
    fault.run(tmp_path)
