"""Run every benchmark (one process each) and print their tables: `make bench` or
`.venv/bin/python benchmarks/run_all.py [--quick] [--only rope,packing]`.

Each benchmark measures its baseline in the same run and prints ratios against it; timings on a
shared machine are noisy, so compare ratios, not seconds. ``gpu_check`` (benchmarks/gpu_check.py)
runs last: the backends, MFU and anchor-vs-full check on a CUDA GPU; without one it prints a line
and exits 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated names, e.g. rope,packing,attention,train,data,loss,ppl,eval_dtype,jobs,gpu_check",
    )
    args = ap.parse_args()
    scripts = sorted(HERE.glob("bench_*.py")) + [HERE / "gpu_check.py"]
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    failed = []
    for script in scripts:
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"\n=== {script.stem} ({' '.join(cmd[1:])})", flush=True)
        t0 = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(script.stem)
        print(f"--- {script.stem}: {time.perf_counter() - t0:.1f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
