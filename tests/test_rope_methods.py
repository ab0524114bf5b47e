"""Every method's frequencies: native types against a stock rotary embedding, the others against formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ropeext.errors import RopeextError
from ropeext.rope.solve import solve

GEOMS = [(10000.0, 32, 256, 1024), (10000.0, 128, 4096, 16384), (500000.0, 64, 2048, 6144)]


def stock_rotary_inv_freq(scaling, run_length):
    """inv_freq of transformers' LlamaRotaryEmbedding built from the exported settings, after a forward."""
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    d = scaling["head_dim"]
    config = LlamaConfig(
        hidden_size=d * 2,
        num_attention_heads=2,
        head_dim=d,
        num_hidden_layers=1,
        intermediate_size=8,
        vocab_size=16,
        max_position_embeddings=scaling["max_position_embeddings"],
        rope_parameters=dict(scaling["rope_parameters"]),
    )
    rotary = LlamaRotaryEmbedding(config)
    x = torch.zeros(1, run_length, d)
    rotary(x, torch.arange(run_length)[None])
    return rotary.inv_freq.numpy(), float(rotary.attention_scaling)


@pytest.mark.parametrize("geometry", GEOMS)
@pytest.mark.parametrize("method", ["none", "pi", "dynamic_ntk", "yarn", "llama3", "ntk", "dprope"])
def test_frequencies_equal_stock_rotary_embedding(method, geometry):
    out = solve(method, *geometry)
    inv_freq, attention = stock_rotary_inv_freq(out, geometry[3])
    assert np.array_equal(np.asarray(out["inv_freq"], dtype=np.float32), inv_freq)
    assert out["attention_factor"] == pytest.approx(attention)


def test_base_change_runs_the_new_base():
    out = solve("base_change", 10000, 64, 1024, 4096, new_rope_theta=5e6)
    inv_freq, _ = stock_rotary_inv_freq(out, 4096)
    assert np.array_equal(np.asarray(out["inv_freq"], dtype=np.float32), inv_freq)
    i = np.arange(32)
    assert np.allclose(np.asarray(out["factors"]), (5e6 / 1e4) ** (2 * i / 64))
    assert out["rope_parameters"] == {"rope_type": "default", "rope_theta": 5e6}


def test_ntk_is_the_base_change_formula():
    B, d, s = 10000.0, 128, 4.0
    out = solve("ntk", B, d, 4096, 16384)
    new_base = B * s ** (d / (d - 2))
    expect = (B ** (-2 * np.arange(d // 2) / d)) / (new_base ** (-2 * np.arange(d // 2) / d))
    assert np.allclose(out["factors"], expect, rtol=1e-12)
    assert out["rope_parameters"]["rope_type"] == "longrope"


def yarn_reference(B, d, L, s, beta_fast=32.0, beta_slow=1.0):
    """YaRN 'NTK-by-parts' from its definition: ramp over pairs between the rotation-count boundaries."""

    def boundary(rotations):
        return d * math.log(L / (rotations * 2 * math.pi)) / (2 * math.log(B))

    low = max(math.floor(boundary(beta_fast)), 0)
    high = min(math.ceil(boundary(beta_slow)), d - 1)
    i = np.arange(d // 2, dtype=np.float64)
    ramp = np.clip((i - low) / max(high - low, 1e-3), 0.0, 1.0)  # 0: extrapolate, 1: interpolate
    theta = B ** (-2 * i / d)
    return theta / s * ramp + theta * (1 - ramp)


@pytest.mark.parametrize("geometry", GEOMS)
def test_yarn_defaults_are_beta_32_1_with_truncation(geometry):
    B, d, L, L2 = geometry
    out = solve("yarn", *geometry)
    assert out["rope_parameters"]["beta_fast"] == 32.0 and out["rope_parameters"]["beta_slow"] == 1.0
    assert out["rope_parameters"]["truncate"] is True
    assert np.allclose(out["inv_freq"], yarn_reference(B, d, L, L2 / L), rtol=2e-6)
    assert out["attention_factor"] == pytest.approx(0.1 * math.log(L2 / L) + 1.0)
    loose = solve("yarn", *geometry, truncate=False)
    assert loose["rope_parameters"]["truncate"] is False


def test_dynamic_ntk_is_evaluated_at_target_length():
    B, d, L, L2 = 10000.0, 64, 1024, 4096
    s = L2 / L
    out = solve("dynamic_ntk", B, d, L, L2)
    base = B * ((s * L2 / L) - (s - 1)) ** (d / (d - 2))
    assert np.allclose(out["inv_freq"], base ** (-2 * np.arange(d // 2) / d), rtol=2e-6)
    assert out["max_position_embeddings"] == L  # stock dynamic NTK reads it as the pre-training length


def test_longrope_from_factors(tmp_path):
    from ropeext.rope.methods import read_factors_file

    factors = np.linspace(1.0, 4.0, 16)
    path = tmp_path / "f.csv"
    path.write_text("factor\n" + "\n".join(f"{x}" for x in factors) + "\n")
    read = read_factors_file(path)
    assert np.allclose(read, factors)
    out = solve("longrope", 10000, 32, 256, 1024, factors_file=str(path))
    assert np.allclose(out["factors"], factors)
    params = out["rope_parameters"]
    assert params["short_factor"] == params["long_factor"] == list(out["factors"])
    assert params["attention_factor"] == 1.0 and params["original_max_position_embeddings"] == 256
    assert params["factor"] == 4.0 and out["max_position_embeddings"] == 1024
    theta = 10000.0 ** (-2 * np.arange(16) / 32)
    assert np.allclose(out["inv_freq"], theta / factors, rtol=2e-6)
    row = tmp_path / "row.csv"
    row.write_text(",".join(str(x) for x in factors))
    assert np.allclose(read_factors_file(row), factors)


def test_factors_round_trip_from_rope_parameters():
    from ropeext.rope.export import factors_from_rope_parameters

    out = solve("dprope", 10000, 32, 256, 1024)
    back = factors_from_rope_parameters(out["rope_parameters"], 32, out["max_position_embeddings"], seq_len=1024)
    assert np.allclose(back, out["factors"], rtol=1e-6)


def test_dprope_threshold_takes_the_threshold_while_dprope_takes_the_count():
    """Both DPRoPE selections in one run: dprope_threshold ignores interpolated_dims (threshold 0 when none
    is given); dprope with both a threshold and a count is refused, unless compared beside dprope_threshold."""
    from ropeext.rope.solve import compare_solutions, solve

    geometry = dict(rope_theta=1e5, head_dim=64, train_length=8192, target_length=16384, bins=90)
    by_threshold = solve("dprope", **geometry, threshold=0.0)
    assert solve("dprope_threshold", **geometry)["factors"] == by_threshold["factors"]
    assert solve("dprope_threshold", **geometry, interpolated_dims=40)["factors"] == by_threshold["factors"]
    by_count = solve("dprope", **geometry, interpolated_dims=40)
    assert sum(f != 1.0 for f in by_count["factors"]) == 20  # 40 dimensions = 20 interpolated pairs
    assert solve("dprope_threshold", **geometry)["method"] == "dprope_threshold"
    with pytest.raises(RopeextError, match="cannot both steer dprope"):
        solve("dprope", **geometry, threshold=0.0, interpolated_dims=40)
    _, solutions = compare_solutions(["dprope", "dprope_threshold"], **geometry, threshold=0.0, interpolated_dims=40)
    assert solutions["dprope"]["factors"] == by_count["factors"]
    assert solutions["dprope_threshold"]["factors"] == by_threshold["factors"]
