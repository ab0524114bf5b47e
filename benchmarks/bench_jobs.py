"""Start-up of a job: cold ``python -m ropeext.cli`` against a worker forked from the job server.

Each row runs one real command several times and reports the median wall time of the whole process
as the workflow sees it (a new client process each time). ``cold`` is the baseline: a fresh Python
that imports what the command needs. ``server`` goes through ``python -m ropeext.jobserver run``
with a server started once (its own start-up is reported on its own line). The last rows time
``ropeext solve`` for 4k -> 128k run by hand with its MLflow run (spooled, imported in the
background) against the same command with ``--no-mlflow``, and what opening the run in-process
would add (importing MLflow, opening a SQLite store, one run).

    .venv/bin/python benchmarks/bench_jobs.py [--quick] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ropeext import jobserver  # noqa: E402

SOLVE = ["solve", "--rope-theta", "10000", "--head-dim", "128", "--train-length", "4096", "--target-length",
         "131072", "--method", "dprope"]


def _time(cmd, cwd, env, reps):
    out = []
    for _ in range(reps):
        shutil.rmtree(cwd / "ext", ignore_errors=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        spool = cwd / "results" / ".mlflow-spool"
        deadline = time.monotonic() + 120
        while list(spool.glob("*.json")) and time.monotonic() < deadline:  # the background import, not timed
            time.sleep(0.1)
    return statistics.median(out)


def _tiny_model(folder: Path) -> Path:
    from ropeext.modeling import build_tiny_llama

    model = build_tiny_llama(2048, 256)
    model.save_pretrained(folder / "base")
    scaling = folder / "pi.json"
    subprocess.run([sys.executable, "-m", "ropeext.cli", "solve", "--rope-theta", "10000", "--head-dim", "32",
                    "--train-length", "256", "--target-length", "1024", "--method", "pi", "--output", str(scaling),
                    "--no-mlflow"], cwd=folder, check=True, capture_output=True)
    return folder / "base"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    reps = 3 if args.quick else args.reps
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    env = {k: v for k, v in os.environ.items() if k != jobserver.ENV}
    env["PYTHONPATH"] = str(ROOT)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    base = _tiny_model(work)
    commands = {
        "solve 4k->128k dprope": [*SOLVE, "--output", "s.json", "--no-mlflow"],
        "extend tiny model (pi)": ["extend", "--base", str(base), "--scaling", "pi.json", "--output", "ext",
                                   "--no-mlflow"],
        "--help": ["--help"],
    }
    cold = {name: _time([sys.executable, "-m", "ropeext.cli", *c], work, env, reps) for name, c in commands.items()}

    t0 = time.perf_counter()
    server = jobserver.start(log=work / "server.log")
    while not os.path.exists(server[1]):
        time.sleep(0.05)
    ready = time.perf_counter() - t0
    served_env = {**env, jobserver.ENV: server[1]}
    try:
        served = {name: _time([sys.executable, "-m", "ropeext.jobserver", "run", "--", *c], work, served_env, reps)
                  for name, c in commands.items()}
    finally:
        jobserver.stop(server)

    by_hand = _time([sys.executable, "-m", "ropeext.cli", *SOLVE, "--output", "s.json"], work, env, reps)
    no_run = cold["solve 4k->128k dprope"]
    open_run = _time([sys.executable, "-c",
                      "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_experiment('b'); "
                      "mlflow.start_run(); mlflow.end_run()", env["MLFLOW_TRACKING_URI"]], work, env, reps)

    print(f"median of {reps} runs each, torch threads as the machine has; {os.cpu_count()} CPUs\n")
    print(f"{'command':28s} {'cold s':>8s} {'server s':>9s} {'ratio':>7s}")
    print("-" * 55)
    for name in commands:
        print(f"{name:28s} {cold[name]:8.2f} {served[name]:9.2f} {served[name] / cold[name]:7.3f}")
    print(f"\njob server start-up (imports, until it accepts): {ready:.2f} s")
    print("\nropeext solve 4k->128k by hand, MLflow store sqlite:")
    print(f"  --no-mlflow (baseline)                        {no_run:6.2f} s  1.000")
    print(f"  with its run (spooled, imported in background) {by_hand:6.2f} s  {by_hand / no_run:.3f}")
    print(f"  a run opened in-process would add about       {open_run:6.2f} s  (import mlflow, open store, one run)")


if __name__ == "__main__":
    main()
