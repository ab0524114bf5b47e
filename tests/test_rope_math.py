"""Angle histograms, disturbance and the DPRoPE solver against brute force and the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ropeext.rope import dprope as dp
from ropeext.rope.angles import FLOOR, angle_histograms
from ropeext.rope.disturbance import per_pair_disturbance
from ropeext.rope.geometry import make_geometry
from ropeext.rope.methods import unscaled
from ropeext.rope.solve import compare, solve


def brute_histogram(freqs, length, bins, dtype):
    """One position and one pair at a time, with scalar arithmetic in ``dtype``."""
    t = np.float32 if dtype == "float32" else np.float64
    two_pi, to_bin = t(2 * math.pi), t(bins / (2 * math.pi))
    counts = np.zeros((len(freqs), bins))
    for i, f in enumerate(freqs):
        for m in range(length):
            angle = t(t(m) * t(f))
            angle = t(math.fmod(angle, two_pi))  # exact remainder, representable in the dtype
            k = min(int(math.floor(t(angle * to_bin))), bins - 1)
            counts[i, k] += 1
    return (counts + FLOOR) / length


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bins", [2, 7, 360])
def test_histogram_equals_brute_force(dtype, bins):
    freqs = np.array([1.0, 0.5623413, 0.1, 0.0133, 3.7e-4, 2.9], dtype=np.float32)
    fast = angle_histograms(freqs, 300, bins, dtype)
    assert np.array_equal(fast, brute_histogram(freqs, 300, bins, dtype))


def test_histogram_chunking_matches_single_pass(monkeypatch):
    import ropeext.rope.angles as angles

    freqs = np.geomspace(1.0, 1e-4, 16).astype(np.float32)
    whole = angles.angle_counts(freqs, 5000, 90)
    monkeypatch.setattr(angles, "_CHUNK_ELEMENTS", 16 * 7)  # 7 positions per chunk
    assert np.array_equal(whole, angles.angle_counts(freqs, 5000, 90))
    assert whole.sum() == 16 * 5000


def test_histogram_normalisation_and_floor():
    p = angle_histograms(np.array([0.0], dtype=np.float32), 10, 4)
    # every angle is 0 -> bin 0 holds all positions
    assert np.allclose(p, [[(10 + FLOOR) / 10, FLOOR / 10, FLOOR / 10, FLOOR / 10]])


def test_extrapolation_at_same_length_has_zero_disturbance():
    g = make_geometry(10000, 64, 512, 1024)
    theta = unscaled(g).inv_freq
    pre = angle_histograms(theta, 512, 360)
    same = angle_histograms(theta, 512, 360)
    assert np.all(per_pair_disturbance(pre, same) == 0)
    assert np.all(per_pair_disturbance(pre, same, "paper") == 0)


def test_kl_directions_follow_the_definitions():
    rng = np.random.default_rng(0)
    p, q = rng.random((3, 10)) + 0.01, rng.random((3, 10)) + 0.01
    code = per_pair_disturbance(p, q, "code")
    paper = per_pair_disturbance(p, q, "paper")
    for i in range(3):
        assert code[i] == pytest.approx(sum(p[i, k] * math.log(p[i, k] / q[i, k]) for k in range(10)))
        assert paper[i] == pytest.approx(sum(q[i, k] * math.log(q[i, k] / p[i, k]) for k in range(10)))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pi_with_integer_scale_leaves_no_pretraining_bin_empty(scale):
    g = make_geometry(10000, 32, 256, 256 * scale)
    pre = angle_histograms(unscaled(g).inv_freq, g.train_length, 360) * g.train_length
    pi = (
        angle_histograms(
            np.asarray(solve("pi", 10000, 32, 256, 256 * scale)["inv_freq"], dtype=np.float32), g.target_length, 360
        )
        * g.target_length
    )
    occupied = pre > 1
    assert np.all(pi[occupied] > 1)


GEOMETRIES = [(10000, 32, 256, 1024), (10000, 128, 4096, 8192), (500000, 64, 1024, 4096)]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_dprope_total_at_most_extrapolation_and_pi(geometry):
    rows = {r["method"]: r for r in compare(["none", "pi", "dprope"], *geometry)}
    assert rows["dprope"]["disturbance"] <= rows["none"]["disturbance"]
    assert rows["dprope"]["disturbance"] <= rows["pi"]["disturbance"]


def test_dprope_threshold_rule_and_candidate_record():
    out = solve("dprope", 10000, 32, 256, 1024)
    gap = np.array(out["gap"])
    ext = np.array(out["candidates"]["extrapolate"]["per_pair_disturbance"])
    inter = np.array(out["candidates"]["interpolate"]["per_pair_disturbance"])
    assert np.allclose(gap, ext - inter)
    expect = np.where(gap > 0, 4.0, 1.0)
    assert np.array_equal(out["factors"], expect)
    assert out["chosen_candidate"] == ["interpolate" if g > 0 else "extrapolate" for g in gap]
    assert np.allclose(out["per_pair_disturbance"], np.minimum(ext, inter))
    assert out["interpolated_dims"] == 2 * int(np.sum(gap > 0))
    # a large threshold keeps every pair extrapolated
    high = solve("dprope", 10000, 32, 256, 1024, threshold=1e9)
    assert high["factors"] == [1.0] * 16


def test_dprope_interpolated_dims_picks_largest_gaps():
    out = solve("dprope", 10000, 128, 4096, 8192, interpolated_dims=80)
    gap = np.array(out["gap"])
    chosen = np.array(out["factors"]) == 2.0
    assert chosen.sum() == 40
    assert gap[chosen].min() >= gap[~chosen].max()


def test_choose_ties_extrapolate():
    d = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 3.5]])
    assert dp.choose(d).tolist() == [0, 1, 0]
    assert dp.choose(d, threshold=1.0).tolist() == [0, 0, 0]
    assert dp.choose(d, interpolated_dims=2).tolist() == [0, 1, 0]


def test_extended_candidates_never_raise_the_total():
    out = solve("dprope", 10000, 32, 256, 1024, candidates="extrapolate,interpolate,yarn,ntk,grid:5")
    assert out["disturbance"] <= out["basic_disturbance"] + 1e-15
    assert out["candidates_lower_total"] == (out["disturbance"] < out["basic_disturbance"])
    names = set(out["chosen_candidate"])
    assert names <= set(out["candidates"])


@pytest.mark.parametrize("target,n,published", [(8192, 80, 0.72), (16384, 64, 0.32)])
def test_llama2_reductions_match_the_paper(target, n, published):
    """The paper's abstract: DPRoPE cuts the disturbance by up to 72% (4k->8k) and 32% (4k->16k)."""
    rows = {r["method"]: r for r in compare(["pi", "yarn", "dprope"], 10000, 128, 4096, target, interpolated_dims=n)}
    assert rows["dprope"]["reduction_vs_pi"] == pytest.approx(published, abs=0.005)
    assert rows["yarn"]["disturbance"] > rows["pi"]["disturbance"]


def test_float64_angles_close_to_float32():
    a = solve("pi", 10000, 32, 256, 1024)
    b = solve("pi", 10000, 32, 256, 1024, angle_dtype="float64")
    assert b["angle_dtype"] == "float64"
    assert a["disturbance"] == pytest.approx(b["disturbance"], rel=0.05)
