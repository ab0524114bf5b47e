"""Speed of the RoPE geometry: every method's solve and the angle histogram, on one core.

    .venv/bin/python benchmarks/bench_rope.py [--quick]

Geometry: d = 128, B = 10000, L = 4096, L' = 131072 (s = 32), 360 bins (``--quick``: L' = 32768).
The baseline, measured in the same run, is a straightforward per-position loop building the same
histogram (one Python iteration per position, vectorised over pairs only); its result is checked
equal to the vectorised one.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def loop_histogram(freqs: np.ndarray, length: int, bins: int) -> np.ndarray:
    """Per-position loop: angles of every pair at one position at a time (float32, as the vectorised code)."""
    freqs = np.asarray(freqs, dtype=np.float32)
    two_pi, to_bin = np.float32(2 * math.pi), np.float32(bins / (2 * math.pi))
    counts = np.zeros((freqs.size, bins))
    rows = np.arange(freqs.size)
    for m in range(length):
        angles = np.fmod(np.float32(m) * freqs, two_pi)
        k = np.minimum(np.floor(angles * to_bin).astype(np.int64), bins - 1)
        counts[rows, k] += 1
    return (counts + 2.0**-14) / length


def timed(fn, repeat: int = 3):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L' = 32768 instead of 131072")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from ropeext.rope.angles import angle_histograms
    from ropeext.rope.geometry import make_geometry
    from ropeext.rope.methods import unscaled
    from ropeext.rope.registry import METHODS
    from ropeext.rope.solve import solve

    B, d, L, L2, bins = 10000.0, 128, 4096, 32768 if args.quick else 131072, 360
    geometry = make_geometry(B, d, L, L2)
    solve("pi", B, d, L, L2)  # warm up: imports transformers once
    theta = unscaled(geometry).inv_freq

    rows = []
    t_loop, loop_hist = timed(lambda: loop_histogram(theta, L2, bins), repeat=1)
    t_vec, vec_hist = timed(lambda: angle_histograms(theta, L2, bins))
    assert np.array_equal(loop_hist, vec_hist), "vectorised histogram differs from the per-position loop"
    rows.append(("histogram L' (per-position loop)", t_loop))
    rows.append(("histogram L' (vectorised)", t_vec))
    factors = Path(tempfile.mkdtemp()) / "factors.csv"
    factors.write_text("\n".join(str(f) for f in np.linspace(1, L2 / L, d // 2)))
    options = {"base_change": {"new_rope_theta": 5e6}, "longrope": {"factors_file": factors}}
    for method in METHODS:
        t, out = timed(lambda m=method: solve(m, B, d, L, L2, **options.get(m, {})))
        rows.append((f"solve {method} (D={out['disturbance']:.4f})", t))
    t, _ = timed(lambda: solve("dprope", B, d, L, L2, candidates="extrapolate,interpolate,yarn,ntk,grid:8"), 1)
    rows.append(("solve dprope, 13 candidates", t))

    print(f"geometry: B={B:g} d={d} L={L} L'={L2} (s={L2 // L}) bins={bins}; one core; best of 3 (loop: 1 run)")
    print(f"{'what':<44} {'seconds':>9} {'loop / this':>12}")
    for name, t in rows:
        print(f"{name:<44} {t:9.4f} {t_loop / t:12.1f}")
    dprope_time = next(t for name, t in rows if name.startswith("solve dprope ("))
    print(f"DPRoPE solve under 1 s: {'yes' if dprope_time < 1.0 else 'NO'} ({dprope_time:.3f} s)")


if __name__ == "__main__":
    main()
