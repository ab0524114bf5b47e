"""What a short job costs: a cold ``python -m ropeext.cli`` process against its work alone.

Every workflow job is a plain process, so each pays Python's start-up and the imports of what it
needs (torch, transformers, MLflow) before its work. Each row runs one real command several times
and reports the median wall time (and CPU time) of the whole process as Snakemake sees it (``cold``,
the baseline) and the wall time of the same command called again inside one warm process (``work``):
the difference is the start-up a job pays, and why stages of seconds are folded into one job (one extend per target).

    .venv/bin/python benchmarks/bench_jobs.py [--quick] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ropeext.cli import main as cli  # noqa: E402
from ropeext.modeling import build_tiny_llama  # noqa: E402

SOLVE = [
    "solve",
    "--rope-theta",
    "10000",
    "--head-dim",
    "128",
    "--train-length",
    "4096",
    "--target-length",
    "131072",
    "--method",
    "dprope",
    "--output",
    "s.json",
]
METHODS = ("none", "pi", "yarn", "dprope")


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cold(argv, cwd, env, reps):
    """Median wall time and CPU time of a fresh process (CPU time: what the job costs a busy machine)."""
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), _cpu_children()
        proc = subprocess.run(
            [sys.executable, "-m", "ropeext.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True
        )
        wall.append(time.perf_counter() - t0)
        cpu.append(_cpu_children() - c0)
        if proc.returncode != 0:
            raise SystemExit(f"ropeext {' '.join(argv)} failed:\n{proc.stderr}")
    return statistics.median(wall), statistics.median(cpu)


def _warm(argv, reps):
    cli(argv)  # imports and first-call set-up, not timed
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        if cli(argv) != 0:
            raise SystemExit(f"ropeext {' '.join(argv)} failed")
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _tiny_model(folder: Path) -> list[str]:
    """A tiny base model and the scaling files of METHODS; the arguments of one extend of them all."""
    build_tiny_llama(2048, 256).save_pretrained(folder / "base")
    for method in METHODS:
        cli(
            [
                "solve",
                "--rope-theta",
                "10000",
                "--head-dim",
                "32",
                "--train-length",
                "256",
                "--target-length",
                "1024",
                "--method",
                method,
                "--output",
                str(folder / f"{method}.json"),
                "--no-mlflow",
            ]
        )
    return [
        "extend",
        "--base",
        str(folder / "base"),
        "--scaling",
        *(str(folder / f"{m}.json") for m in METHODS),
        "--output",
        *(str(folder / f"ext-{m}") for m in METHODS),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    reps = 3 if args.quick else args.reps
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    extend = _tiny_model(work)
    commands = {
        "--help": ["--help"],
        "solve 4k->128k, --no-mlflow": [*SOLVE, "--no-mlflow"],
        "solve 4k->128k, MLflow run": SOLVE,
        f"extend x{len(METHODS)}, MLflow run": extend,
    }
    cold = {name: _cold(argv, work, env, reps) for name, argv in commands.items()}
    warm = {name: _warm(argv, reps) if argv != ["--help"] else 0.0 for name, argv in commands.items()}

    print(f"median of {reps} runs each; {os.cpu_count()} CPUs; MLflow store sqlite\n")
    print(f"{'command':28s} {'cold s':>8s} {'cold CPU s':>11s} {'work s':>8s} {'start-up s':>11s} {'work/cold':>10s}")
    print("-" * 81)
    for name in commands:
        (wall, cpu), work = cold[name], warm[name]
        print(f"{name:28s} {wall:8.2f} {cpu:11.2f} {work:8.2f} {wall - work:11.2f} {work / wall:10.3f}")


if __name__ == "__main__":
    main()
