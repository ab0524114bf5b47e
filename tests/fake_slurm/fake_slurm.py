"""A single-machine stand-in for the SLURM client commands the Snakemake SLURM executor calls.

Each executable in this folder (sbatch, srun, sacct, squeue, scancel, sinfo, sacctmgr, scontrol)
is a two-line shell wrapper that runs ``fake_slurm.py <command> <args...>``. Every call is appended
as one JSON line to ``$FAKE_SLURM_DIR/calls.jsonl``; job records live in ``$FAKE_SLURM_DIR/jobs/``.

sbatch parses its options the way SLURM does (unknown options are an error, as on a real cluster),
works out the task count SLURM would allocate (``--ntasks``, else ``--ntasks-per-gpu`` x GPUs, else
``--ntasks-per-node`` x nodes, else 1), and runs the batch script once on this machine with the
environment SLURM would give it. ``FAKE_SLURM_MODE=sync`` (the default) runs the job before sbatch
returns, so the job is already COMPLETED (or FAILED) when the executor first asks; ``background``
detaches it and sacct/squeue report it RUNNING until it ends.

srun runs its command once per task (``-n``/``--ntasks``, default 1), like a job step.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR") or Path(os.environ.get("TMPDIR", "/tmp")) / "fake_slurm")
JOBS = STATE / "jobs"

# sbatch options that take a value (long name -> short letter, if any); the rest are flags.
SBATCH_VALUED = {
    "account": "A",
    "array": "a",
    "chdir": "D",
    "clusters": "M",
    "comment": None,
    "constraint": "C",
    "cpus-per-gpu": None,
    "cpus-per-task": "c",
    "error": "e",
    "exclude": "x",
    "export": None,
    "gpus": "G",
    "gpus-per-node": None,
    "gres": None,
    "job-name": "J",
    "mem": None,
    "mem-per-cpu": None,
    "mem-per-gpu": None,
    "nodes": "N",
    "ntasks": "n",
    "ntasks-per-gpu": None,
    "ntasks-per-node": None,
    "output": "o",
    "partition": "p",
    "qos": "q",
    "reservation": None,
    "time": "t",
    "wrap": None,
}
SBATCH_FLAGS = {"parsable": None, "requeue": None, "no-requeue": None, "exclusive": None}
SRUN_VALUED = {
    "cpu-bind": None,
    "cpus-per-task": "c",
    "gpus": "G",
    "job-name": "J",
    "mem": None,
    "nodes": "N",
    "ntasks": "n",
    "ntasks-per-gpu": None,
    "jobid": None,
    "cpus-per-gpu": None,
    "gres": None,
}
SRUN_FLAGS = {"exclusive": None, "overlap": None}


class Usage(Exception):
    """Bad command line: printed as `<command>: error: ...` with exit code 1, as SLURM does."""


def _log_call(command: str, argv: list[str]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {
            "command": command,
            "argv": argv,
            "cwd": os.getcwd(),
            "time": time.time(),
            "job": os.environ.get("SLURM_JOB_ID"),
        }
    )
    with open(STATE / "calls.jsonl", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(line + "\n")


def parse_options(argv: list[str], valued: dict, flags: dict, stop_at_positional: bool):
    """Split argv into ({long option: value}, positional args) the way getopt_long would."""
    short = {v: k for k, v in {**valued, **flags}.items() if v}
    opts: dict[str, str | bool] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            if name in valued:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise Usage(f"option '--{name}' requires an argument")
                    value = argv[i]
                opts[name] = value
            elif name in flags and not eq:
                opts[name] = True
            else:
                raise Usage(f"unrecognized option '--{name}'")
        elif arg.startswith("-") and len(arg) > 1:
            letter = arg[1]
            name = short.get(letter)
            if name is None:
                raise Usage(f"invalid option -- '{letter}'")
            if name in flags:
                opts[name] = True
            else:
                value = arg[2:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise Usage(f"option requires an argument -- '{letter}'")
                    value = argv[i]
                opts[name] = value
        else:
            if stop_at_positional:
                return opts, argv[i:]
            rest.append(arg)
        i += 1
    return opts, rest


def gpu_count(opts: dict) -> int:
    """GPUs requested through --gpus [type:]N or --gres gpu[:type]:N (0 when none)."""
    if opts.get("gpus"):
        return int(str(opts["gpus"]).rsplit(":", 1)[-1])
    for item in str(opts.get("gres") or "").split(","):
        parts = item.split(":")
        if parts[0] == "gpu":
            return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return 0


def task_count(opts: dict) -> int:
    """Tasks SLURM allocates for the batch job."""
    nodes = int(str(opts.get("nodes") or 1).split("-")[0])
    if opts.get("ntasks"):
        return int(opts["ntasks"])
    if opts.get("ntasks-per-gpu"):
        return int(opts["ntasks-per-gpu"]) * max(gpu_count(opts), 1)
    if opts.get("ntasks-per-node"):
        return int(opts["ntasks-per-node"]) * nodes
    return 1


def _next_id() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "next_id", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read().strip()
        job_id = int(text) if text else 1001
        fh.seek(0)
        fh.truncate()
        fh.write(str(job_id + 1))
    return job_id


def _job_file(job_id) -> Path:
    return JOBS / f"{job_id}.json"


def read_job(job_id) -> dict | None:
    try:
        return json.loads(_job_file(job_id).read_text())
    except (OSError, ValueError):
        return None


def write_job(job: dict) -> None:
    JOBS.mkdir(parents=True, exist_ok=True)
    tmp = _job_file(job["id"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(job, indent=1))
    os.replace(tmp, _job_file(job["id"]))


def all_jobs() -> list[dict]:
    return [j for j in (read_job(p.stem) for p in sorted(JOBS.glob("*.json"))) if j] if JOBS.exists() else []


def sbatch(argv: list[str]) -> int:
    opts, rest = parse_options(argv, SBATCH_VALUED, SBATCH_FLAGS, stop_at_positional=True)
    if opts.get("array"):
        raise Usage("job arrays are not emulated by this fake; leave array_jobs off")
    if opts.get("wrap") and rest:
        raise Usage("script arguments not permitted with --wrap option")
    if opts.get("wrap"):
        script = f"#!/bin/sh\n{opts['wrap']}\n"
    elif rest:
        script = sys.stdin.read() if rest[0] in ("-", "/dev/stdin") else Path(rest[0]).read_text()
    else:
        raise Usage("no batch script and no --wrap given")
    job_id = _next_id()
    workdir = str(Path(opts.get("chdir") or os.getcwd()).resolve())
    output = str(opts.get("output") or "slurm-%j.out").replace("%j", str(job_id))
    if not os.path.isabs(output):
        output = os.path.join(workdir, output)
    script_path = JOBS / f"{job_id}.sh"
    JOBS.mkdir(parents=True, exist_ok=True)
    script_path.write_text(script)
    script_path.chmod(0o755)
    job = {
        "id": str(job_id),
        "name": opts.get("job-name") or "wrap",
        "state": "PENDING",
        "exit_code": None,
        "options": opts,
        "ntasks": task_count(opts),
        "gpus": gpu_count(opts),
        "cpus_per_task": int(opts.get("cpus-per-task") or 1),
        "account": opts.get("account") or "",
        "partition": opts.get("partition") or "",
        "workdir": workdir,
        "output": output,
        "script": str(script_path),
        "pid": None,
        "submit_env": {k: os.environ[k] for k in ("MLFLOW_TRACKING_URI", "ROPEEXT_PARENT_RUN_ID") if k in os.environ},
    }
    write_job(job)
    runner = [sys.executable, os.path.abspath(__file__), "_run", str(job_id)]
    if os.environ.get("FAKE_SLURM_MODE", "sync") == "background":
        proc = subprocess.Popen(
            runner,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        job.update(pid=proc.pid)
        _update(job_id, pid=proc.pid)
    else:
        subprocess.run(runner, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(job_id if opts.get("parsable") else f"Submitted batch job {job_id}")
    return 0


def _update(job_id, **fields) -> dict:
    with open(JOBS / f"{job_id}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job = read_job(job_id)
        if job["state"] == "CANCELLED" and fields.get("state") not in (None, "CANCELLED"):
            fields.pop("state")
        job.update(fields)
        write_job(job)
    return job


def run_job(job_id: str) -> int:
    """Execute one submitted batch script the way slurmd would (batch step on the first node)."""
    job = _update(job_id, state="RUNNING", pid=os.getpid(), start=time.time())
    env = dict(os.environ) if job["options"].get("export", "ALL") in ("ALL", True) else {"PATH": os.environ["PATH"]}
    for key in [k for k in env if k.startswith(("SBATCH_", "SLURM_"))]:
        del env[key]
    env.update(
        SLURM_JOB_ID=job["id"],
        SLURM_JOBID=job["id"],
        SLURM_JOB_NAME=job["name"],
        SLURM_NTASKS=str(job["ntasks"]),
        SLURM_NPROCS=str(job["ntasks"]),
        SLURM_CPUS_PER_TASK=str(job["cpus_per_task"]),
        SLURM_JOB_NUM_NODES="1",
        SLURM_NNODES="1",
        SLURM_SUBMIT_DIR=job["workdir"],
        SLURM_CLUSTER_NAME="fake",
        SLURMD_NODENAME="fake-node",
    )
    if job["gpus"]:
        env["SLURM_GPUS"] = str(job["gpus"])
    if job["partition"]:
        env["SLURM_JOB_PARTITION"] = job["partition"]
    Path(job["output"]).parent.mkdir(parents=True, exist_ok=True)
    with open(job["output"], "ab") as out:
        rc = subprocess.call(
            [job["script"]], cwd=job["workdir"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    _update(job_id, state="COMPLETED" if rc == 0 else "FAILED", exit_code=rc, end=time.time())
    return 0


def srun(argv: list[str]) -> int:
    opts, command = parse_options(argv, SRUN_VALUED, SRUN_FLAGS, stop_at_positional=True)
    if not command:
        raise Usage("no command given")
    if not os.environ.get("SLURM_JOB_ID"):
        raise Usage("srun outside an allocation is not emulated")
    ntasks = int(opts.get("ntasks") or 1)
    stdin = sys.stdin.read() if command == ["sh", "-s"] else None
    procs = []
    for rank in range(ntasks):
        env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_STEP_NUM_TASKS=str(ntasks))
        if opts.get("gpus"):
            env["SLURM_STEP_GPUS"] = str(opts["gpus"])
        procs.append(
            subprocess.Popen(command, env=env, stdin=subprocess.PIPE if stdin is not None else None, text=True)
        )
        if stdin is not None:
            procs[-1].communicate(stdin)
    return max(p.wait() for p in procs)


def _fields(spec: str) -> list[str]:
    return [re.sub(r"%-?\d+$", "", f).strip().lower() for f in spec.split(",") if f.strip()]


def _value(job: dict, field: str) -> str:
    return {
        "jobidraw": job["id"],
        "jobid": job["id"],
        "state": job["state"],
        "jobname": job["name"],
        "account": job["account"],
        "partition": job["partition"],
        "nodelist": "fake-node",
        "exitcode": f"{job['exit_code'] or 0}:0",
        "reason": "None",
        "alloctres": f"gres/gpu={job['gpus']}",
    }.get(field, "")


def sacct(argv: list[str]) -> int:
    valued = {"format": "o", "name": None, "jobs": "j", "starttime": "S", "endtime": "E", "clusters": "M", "user": "u"}
    flags = {"parsable2": "P", "noheader": "n", "allocations": "X", "allusers": "a"}
    # `-nu user` bundles two short options; split bundles of flags the simple way
    expanded = []
    for arg in argv:
        if re.fullmatch(r"-[nXPa]+[uojSEM]?", arg) and len(arg) > 2:
            expanded.extend(f"-{c}" for c in arg[1:])
        else:
            expanded.append(arg)
    opts, _ = parse_options(expanded, valued, flags, stop_at_positional=False)
    fields = _fields(str(opts.get("format") or "JobID,JobName,Partition,Account,State,ExitCode"))
    jobs = all_jobs()
    if opts.get("name"):
        jobs = [j for j in jobs if j["name"] in str(opts["name"]).split(",")]
    if opts.get("jobs"):
        wanted = str(opts["jobs"]).split(",")
        jobs = [j for j in jobs if j["id"] in wanted]  # job steps ("<id>.<n>") are not recorded
    sep = "|" if opts.get("parsable2") else " "
    if not opts.get("noheader"):
        print(sep.join(f.capitalize() for f in fields))
    for job in jobs:
        print(sep.join(_value(job, f) for f in fields))
    return 0


def squeue(argv: list[str]) -> int:
    valued = {"format": "o", "name": "n", "states": "t", "jobs": "j", "user": "u", "me": None}
    opts, _ = parse_options(argv, valued, {"noheader": "h"}, stop_at_positional=False)
    fmt = str(opts.get("format") or "%i %j %T")
    jobs = all_jobs()
    if opts.get("name"):
        jobs = [j for j in jobs if j["name"] in str(opts["name"]).split(",")]
    if str(opts.get("states") or "").lower() != "all":
        jobs = [j for j in jobs if j["state"] in ("PENDING", "RUNNING")]
    codes = {"%i": "id", "%T": "state", "%j": "name", "%P": "partition", "%a": "account"}
    for job in jobs:
        print(re.sub(r"%[iTjPa]", lambda m: str(job[codes[m.group(0)]]), fmt))
    return 0


def scancel(argv: list[str]) -> int:
    opts, ids = parse_options(argv, {"clusters": "M", "name": "n"}, {}, stop_at_positional=False)
    for job_id in ids:
        job = read_job(job_id)
        if job is None:
            print(f"scancel: error: Invalid job id {job_id}", file=sys.stderr)
            continue
        if job["state"] in ("PENDING", "RUNNING"):
            if job.get("pid"):
                try:
                    os.killpg(os.getpgid(job["pid"]), signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
            _update(job_id, state="CANCELLED", exit_code=-15)
    return 0


def sinfo(argv: list[str]) -> int:
    parts = os.environ.get("FAKE_SLURM_PARTITIONS", "cpu*,gpu").split(",")
    if "%P" in argv or any(a.endswith("%P") for a in argv):
        print("PARTITION")
        print("\n".join(parts))
    else:
        print("PARTITION AVAIL TIMELIMIT NODES STATE NODELIST")
        for p in parts:
            print(f"{p} up infinite 1 idle fake-node")
    return 0


def sacctmgr(argv: list[str]) -> int:
    for account in os.environ.get("FAKE_SLURM_ACCOUNTS", "").split(","):
        if account:
            print(f"  {account}")
    return 0


def scontrol(argv: list[str]) -> int:
    if argv[:2] == ["show", "config"]:
        print("MaxArraySize            = 1001\nMinJobAge               = 300 sec")
        return 0
    if argv[:2] == ["show", "partition"]:
        for p in os.environ.get("FAKE_SLURM_PARTITIONS", "cpu*,gpu").split(","):
            print(f"PartitionName={p.rstrip('*')}\n   MaxTime=UNLIMITED MaxNodes=UNLIMITED\n")
        return 0
    raise Usage(f"scontrol {shlex.join(argv)} is not emulated")


COMMANDS = {
    "sbatch": sbatch,
    "srun": srun,
    "sacct": sacct,
    "squeue": squeue,
    "scancel": scancel,
    "sinfo": sinfo,
    "sacctmgr": sacctmgr,
    "scontrol": scontrol,
}


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "_run":
        return run_job(args[0])
    _log_call(command, args)
    try:
        return COMMANDS[command](args)
    except Usage as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
