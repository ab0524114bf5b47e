"""Round trip: a scaling.json becomes a stock model's config; stock transformers (without ropeext)
loads it and runs exactly our frequencies and the logits of a model given those frequencies by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ropeext.rope.solve import solve

STOCK_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from transformers import AutoModelForCausalLM
    spec = json.loads(sys.argv[1])
    ids = torch.tensor(spec["ids"])[None]
    report = []
    for k, path in enumerate(spec["models"]):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].numpy()
        np.save(f"{spec['out']}/logits{k}.npy", logits)
        rotary = model.model.rotary_emb
        report.append({"inv_freq": rotary.inv_freq.tolist(), "attention_scaling": float(rotary.attention_scaling),
                       "rope_type": model.config.rope_parameters["rope_type"]})
    imported = any(m.split(".")[0] == "ropeext" for m in sys.modules)
    print(json.dumps({"models": report, "ropeext_imported": imported}))
""")


def run_stock(model_dirs, ids, tmp_path):
    """Load each model directory with stock transformers in a fresh interpreter that never imports ropeext."""
    script = tmp_path / "stock_load.py"
    script.write_text(STOCK_SCRIPT)
    spec = {"ids": ids, "models": [str(d) for d in model_dirs], "out": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ropeext_imported"] is False
    return result["models"], [np.load(tmp_path / f"logits{k}.npy") for k in range(len(model_dirs))]


def save_extended(tiny_model_dir, scaling, out_dir):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ropeext.modeling import apply_scaling

    config = AutoConfig.from_pretrained(tiny_model_dir)
    apply_scaling(config, scaling)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, config=config, dtype=torch.float32).save_pretrained(out_dir)
    return out_dir


PER_PAIR = [("dprope", {}), ("ntk", {}), ("longrope", {"factors_file": "factors.csv"})]


def test_export_round_trip_in_stock_transformers(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    solutions, dirs = [], []
    (tmp_path / "factors.csv").write_text("\n".join(str(f) for f in np.linspace(1.0, 4.0, 16)))
    for method, options in PER_PAIR:
        scaling = solve(method, 10000.0, 32, 64, 256, **{k: tmp_path / v for k, v in options.items()})
        assert scaling["rope_parameters"]["rope_type"] == "longrope"
        if method == "dprope":
            assert 0 < scaling["interpolated_dims"] < 32  # a genuine per-pair mix
        out_dir = save_extended(tiny_model_dir, scaling, tmp_path / method)
        saved = json.loads((out_dir / "config.json").read_text())
        assert saved["rope_parameters"]["short_factor"] == scaling["factors"]
        assert saved["rope_parameters"]["long_factor"] == scaling["factors"]
        assert saved["max_position_embeddings"] == 256
        solutions.append(scaling)
        dirs.append(out_dir)

    ids = [int(x) for x in np.random.default_rng(0).integers(3, 300, size=200)]  # longer than L = 64
    stock, stock_logits = run_stock(dirs, ids, tmp_path)
    unscaled = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        plain = unscaled(input_ids=torch.tensor(ids)[None]).logits[0].numpy()
    for scaling, report, logits in zip(solutions, stock, stock_logits):
        assert report["rope_type"] == "longrope"
        ours = np.asarray(scaling["inv_freq"], dtype=np.float32)
        assert np.array_equal(np.asarray(report["inv_freq"], dtype=np.float32), ours)
        assert report["attention_scaling"] == 1.0
        # reference: the unscaled model with our frequencies written into its rotary embedding by hand
        reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        reference.model.rotary_emb.inv_freq.copy_(torch.from_numpy(ours))
        reference.model.rotary_emb.original_inv_freq = torch.from_numpy(ours.copy())
        with torch.no_grad():
            ref_logits = reference(input_ids=torch.tensor(ids)[None]).logits[0].numpy()
        assert np.array_equal(logits, ref_logits)
        assert not np.allclose(plain[64:], logits[64:])  # the extension really changed the model


def test_native_types_export_and_load(tiny_model_dir, tmp_path):
    methods = ["none", "pi", "yarn", "llama3", "dynamic_ntk"]
    solutions = [solve(m, 10000.0, 32, 64, 256) for m in methods]
    dirs = [save_extended(tiny_model_dir, s, tmp_path / m) for m, s in zip(methods, solutions)]
    stock, _ = run_stock(dirs, list(range(3, 259)), tmp_path)  # 256 positions: the target length
    for method, scaling, report in zip(methods, solutions, stock):
        assert np.array_equal(
            np.asarray(report["inv_freq"], dtype=np.float32), np.asarray(scaling["inv_freq"], dtype=np.float32)
        ), method
        assert report["attention_scaling"] == pytest.approx(scaling["attention_factor"]), method
