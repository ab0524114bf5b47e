"""The SLURM workflow profile, run through snakemake-executor-plugin-slurm against fake SLURM commands.

tests/fake_slurm/ puts sbatch, srun, sacct, squeue, scancel, sinfo, sacctmgr and scontrol first on PATH:
they record every call, run each submitted batch script on this machine and report it COMPLETED or
FAILED. The micro DAG up to one fine-tuned model goes through the real executor plugin, so the test
sees the exact sbatch flags the profile produces on a cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ropeext.suites import SUITES
from tests.conftest import REPO

pytest.importorskip("snakemake_executor_plugin_slurm")

BIN = Path(sys.executable).parent
FAKE = REPO / "tests" / "fake_slurm"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
GPU_RULES = ("finetune", *(suite.rule for suite in SUITES))  # the profile sends each to the GPU partition
GROUP = {"finetune": "finetune", **{rule: "eval" for rule in GPU_RULES[1:]}}
TARGET = "results/models/micro-dprope-64-anchor"
# what a user sets once in their config for a GPU cluster (the micro DAG itself runs on CPU here)
RESOURCES = {
    "finetune": {"threads": 2, "gpu": 8, "mem_mb": 480000, "runtime": 2880},
    "data": {"threads": 1, "gpu": 0, "mem_mb": 12000, "runtime": 90},
    "pretrain": {"threads": 1, "gpu": 0, "mem_mb": 9000, "runtime": 45},
}
# The data and training sizes of this run only (the flags and the job flow under test do not depend on
# them): a handful of whole stdlib files, two steps each way. Every job's cost is then its start-up.
SMALL = {
    "corpus": {
        "max_documents": 8,
        "max_tokens": 8000,
        "definitions_as_documents": False,
        "split_fractions": {"validation": 0.3, "test": 0.3},
    },
    "pretrain": {"steps": 2, "warmup_steps": 1},
    "finetune": {"steps": 2, "warmup_steps": 1, "val_windows": 2},
    "rope": {"compare_methods": ["none", "dprope"], "angles_methods": ["none", "dprope"]},
}
FILLED = {  # the profile's commented placeholders, as a user fills them in
    '# slurm_account: "<account>"': 'slurm_account: "testacct"',
    '# slurm_partition: "<cpu-partition>"': 'slurm_partition: "cpu"',
    '# slurm_partition: "<gpu-partition>"   # FILL IN': 'slurm_partition: "gpu"',
}


def _fake_module():
    spec = importlib.util.spec_from_file_location("fake_slurm", FAKE / "fake_slurm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake = _fake_module()


def _profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def _fill_profile(folder: Path) -> Path:
    text = PROFILE.read_text()
    for placeholder, value in FILLED.items():
        assert placeholder in text, f"placeholder {placeholder!r} missing from {PROFILE}"
        text = text.replace(placeholder, value)
    folder.mkdir()
    (folder / "config.yaml").write_text(text)
    return folder


def _env(state: Path) -> dict:
    env = dict(
        os.environ,
        PATH=f"{FAKE}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
        FAKE_SLURM_DIR=str(state),
        FAKE_SLURM_ACCOUNTS="testacct",
        FAKE_SLURM_PARTITIONS="cpu*,gpu",
    )
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "ROPEEXT_PARENT_RUN_ID", "ROPEEXT_MLFLOW"):
        env.pop(key, None)
    env.pop("SLURM_JOB_ID", None)
    return env


def _calls(state: Path, command: str) -> list[dict]:
    lines = (state / "calls.jsonl").read_text().splitlines()
    return [c for c in map(json.loads, lines) if c["command"] == command]


def _sbatch_options(call: dict) -> dict:
    opts, rest = fake.parse_options(call["argv"], fake.SBATCH_VALUED, fake.SBATCH_FLAGS, stop_at_positional=True)
    assert not rest
    return opts


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    workdir, state = root / "work", root / "fake"
    workdir.mkdir()
    profile = _fill_profile(root / "profile")
    overlay = root / "resources.yaml"
    overlay.write_text(yaml.safe_dump({**SMALL, "resources": RESOURCES}))
    cmd = [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        str(overlay),
        "--workflow-profile",
        str(profile),
        "--jobs",
        "2",
        "--retries",
        "0",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--slurm-keep-successful-logs",
        TARGET,
    ]
    proc = subprocess.run(cmd, cwd=workdir, env=_env(state), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        slurm_logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log"))
        )
        pytest.fail(f"snakemake --executor slurm failed:\n{proc.stderr[-5000:]}\n{slurm_logs}")
    jobs = [json.loads(p.read_text()) for p in sorted((state / "jobs").glob("*.json"))]
    return SimpleNamespace(workdir=workdir, state=state, stderr=proc.stderr, jobs={j["id"]: j for j in jobs})


@pytest.mark.slow
def test_dag_completes_through_the_slurm_executor(slurm_run):
    model = slurm_run.workdir / TARGET
    assert (model / "config.json").exists()
    executed = sorted(slurm_run.workdir.glob("results/benchmarks/*/*.tsv"))  # one per job that ran
    rules = sorted(p.parent.name for p in executed)
    assert rules == ["corpus", "finetune", "pack", "pack", "pretrain", "rope", "tokenizer"]
    submitted = _calls(slurm_run.state, "sbatch")
    # rope is a local rule (seconds of arithmetic): it runs on the submitting host, not through sbatch
    assert len(submitted) == len(executed) - 1 == len(slurm_run.jobs)
    assert not any(j["options"]["comment"].startswith("rule_rope") for j in slurm_run.jobs.values())
    assert all(j["state"] == "COMPLETED" and j["exit_code"] == 0 for j in slurm_run.jobs.values())
    # the executor learned the outcome from sacct, filtered on its run's job name
    polls = _calls(slurm_run.state, "sacct")
    names = {j["name"] for j in slurm_run.jobs.values()}
    assert len(names) == 1 and any("--name" in c["argv"] and names.pop() in c["argv"] for c in polls)
    # every job ran its rule exactly once, in one job step started with -n1
    steps = _calls(slurm_run.state, "srun")
    assert sorted(c["job"] for c in steps) == sorted(slurm_run.jobs)
    assert all(c["argv"][0] == "-n1" for c in steps)


def _job_for(slurm_run, rule: str) -> tuple[dict, dict]:
    matches = [j for j in slurm_run.jobs.values() if j["options"]["comment"].startswith(f"rule_{rule}")]
    assert len(matches) == 1, [j["options"]["comment"] for j in slurm_run.jobs.values()]
    call = next(
        c for c in _calls(slurm_run.state, "sbatch") if f"rule_{rule}" in c["argv"][c["argv"].index("--comment") + 1]
    )
    return matches[0], _sbatch_options(call)


@pytest.mark.slow
def test_finetune_is_one_task_holding_every_gpu(slurm_run):
    want = RESOURCES["finetune"]
    threads = want["threads"]
    job, opts = _job_for(slurm_run, "finetune")
    assert opts["gpus"] == str(want["gpu"]) and job["gpus"] == want["gpu"] > 1
    assert "ntasks-per-gpu" not in opts and opts.get("ntasks", "1") == "1"
    assert job["ntasks"] == 1  # what SLURM allocates for these flags
    assert opts["cpus-per-task"] == str(threads)
    assert opts["mem"] == str(want["mem_mb"]) and opts["time"] == str(want["runtime"])
    assert opts["nodes"] == "1" and opts["partition"] == "gpu" and opts["account"] == "testacct"
    assert opts["chdir"] == str(slurm_run.workdir) and opts["export"] == "ALL"
    # inside the allocation: one step, one task, all GPUs; the rule's command ran once
    steps = [c for c in _calls(slurm_run.state, "srun") if c["job"] == job["id"]]
    assert len(steps) == 1
    step, command = fake.parse_options(steps[0]["argv"], fake.SRUN_VALUED, fake.SRUN_FLAGS, stop_at_positional=True)
    assert step["ntasks"] == "1" and step["gpus"] == str(want["gpu"]) and step["nodes"] == "1"
    assert "--target-jobs" in command and "finetune:method=dprope,target=64,layout=anchor" in command


@pytest.mark.slow
def test_cpu_rules_get_their_config_resources(slurm_run):
    for rule, group in (("corpus", "data"), ("tokenizer", "data"), ("pretrain", "pretrain")):
        job, opts = _job_for(slurm_run, rule)
        assert "gpus" not in opts and "gres" not in opts and job["gpus"] == 0
        assert opts["ntasks"] == "1" and job["ntasks"] == 1
        assert opts["partition"] == "cpu" and opts["account"] == "testacct"
        want = RESOURCES[group]
        assert opts["mem"] == str(want["mem_mb"]) and opts["time"] == str(want["runtime"]), rule


@pytest.mark.slow
def test_jobs_log_under_the_invocation_parent_run(slurm_run):
    """ROPEEXT_PARENT_RUN_ID reaches the jobs through sbatch --export=ALL: one parent, a child per job."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{slurm_run.workdir}/results/mlflow.db")
    exp = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([exp[0].experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ropeext.stage") == "workflow"]
    children = [r for r in runs if r.data.tags.get("ropeext.stage") != "workflow"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(slurm_run.jobs) + 1  # the submitted jobs and the local RoPE job
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    submitted_with = {j["submit_env"].get("ROPEEXT_PARENT_RUN_ID") for j in slurm_run.jobs.values()}
    assert submitted_with == {parents[0].info.run_id}


class _Resources(dict):
    """What the plugin reads from a job: `resources.get(key)` and `resources.key`."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _submit_flags(resources: dict, threads: int) -> dict:
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(resources=_Resources(resources), threads=threads)
    params = {
        "run_uuid": "run",
        "slurm_logfile": "log/%j.log",
        "comment_str": "rule_x",
        "account": "-A acct",
        "partition": "-p gpu",
        "workdir": "/work",
    }
    call = get_submit_command(job, params) + set_gres_string(job)
    argv = shlex.split(call)
    assert argv[0] == "sbatch"
    opts, rest = fake.parse_options(argv[1:], fake.SBATCH_VALUED, fake.SBATCH_FLAGS, stop_at_positional=True)
    assert not rest
    return opts


@pytest.mark.parametrize("config", ["llama2-dprope.yaml", "llama2-anchor.yaml"])
def test_every_gpu_rule_of_a_paper_config_is_one_task_and_the_guard_matters(config):
    from ropeext.config import load_config

    profile = _profile()
    groups = load_config(REPO / "config" / config)["resources"]
    for rule in GPU_RULES:
        # what the executor sees: the rule's resources (from the config), then the profile's blocks
        mine = {k: v for k, v in groups[GROUP[rule]].items() if k != "threads"}
        resources = {**profile["default-resources"], **mine, **profile["set-resources"][rule]}
        threads = groups[GROUP[rule]]["threads"]
        opts = _submit_flags(resources, threads)
        assert fake.gpu_count(opts) == resources["gpu"] >= 1, rule
        assert fake.task_count(opts) == 1, (rule, opts)
        assert opts["cpus-per-task"] == str(threads), rule
        assert opts["mem"] == str(mine["mem_mb"]) and opts["time"] == str(mine["runtime"]), rule
    # `tasks: 1` (usual for CPU rules) reaching the GPU rules: `tasks_per_gpu: 0` keeps them at one
    # task, without it SLURM allocates one task per GPU
    finetune = {"tasks": 1, **profile["default-resources"], **groups["finetune"]}
    assert fake.task_count(_submit_flags(finetune, 32)) == 1
    del finetune["tasks_per_gpu"]
    opts = _submit_flags(finetune, 32)
    assert opts["ntasks-per-gpu"] == "1" and fake.task_count(opts) == finetune["gpu"]


def test_profile_names_only_rules_of_the_workflow(tmp_path):
    proc = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(REPO / ".test" / "config.yaml"),
            "--list-rules",
        ],
        cwd=tmp_path,
        env=_env(tmp_path / "fake"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = set(proc.stdout.split())
    profile = _profile()
    named = set(profile["set-resources"]) | set(profile.get("set-threads", {}))
    assert named <= rules, named - rules
    # every evaluation suite's rule is listed (a YAML profile cannot read the registry)
    assert set(GPU_RULES) <= set(profile["set-resources"]), set(GPU_RULES) - set(profile["set-resources"])
