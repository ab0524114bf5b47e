"""No-fine-tune variants (`ropeext extend`): only config.json is new, the weights are the base's files
(hard link, else relative symlink, else a copy with a warning), and stock transformers in a fresh
process reads the variant exactly as ``load_causal_lm(base, scaling=...)``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ropeext import tracking
from ropeext.cli import main
from ropeext.errors import RopeextError
from ropeext.modeling import VARIANT_MANIFEST, load_causal_lm, write_variant

STOCK_LOGITS = r"""
import sys
import numpy as np, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    logits = model(input_ids=ids).logits
assert not any(m == "ropeext" or m.startswith("ropeext.") for m in sys.modules)
np.save(sys.argv[3], logits.numpy())
print(model.config.rope_parameters)
"""


def _solve(
    tmp_path: Path, method: str = "yarn", theta: float = 10000, head_dim: int = 32, train: int = 64, target: int = 256
) -> tuple[Path, dict]:
    path = tmp_path / f"{method}-{target}.json"
    assert (
        main(
            [
                "solve",
                "--rope-theta",
                str(theta),
                "--head-dim",
                str(head_dim),
                "--train-length",
                str(train),
                "--target-length",
                str(target),
                "--method",
                method,
                "--output",
                str(path),
                "--no-mlflow",
            ]
        )
        == 0
    )
    return path, json.loads(path.read_text())


def _new_bytes(variant: Path, base: Path) -> int:
    """Bytes the variant takes on disk beyond what it shares with the base."""
    shared = {(s.st_dev, s.st_ino) for s in (p.stat() for p in base.iterdir() if p.is_file())}
    total = 0
    for p in variant.iterdir():
        st = p.lstat()
        if p.is_symlink() or (st.st_dev, st.st_ino) in shared:
            continue
        total += st.st_size
    return total


def _stock_logits(variant: Path, ids: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "ids.npy", ids)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", STOCK_LOGITS, str(variant), str(tmp_path / "ids.npy"), str(tmp_path / "logits.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(tmp_path / "logits.npy")


def test_extend_links_weights_and_loads_as_the_scaled_base(tmp_path, tiny_model_dir):
    import torch

    scaling_path, scaling = _solve(tmp_path)
    out = tmp_path / "tiny-yarn-256-noft"
    assert (
        main(
            [
                "extend",
                "--base",
                str(tiny_model_dir),
                "--scaling",
                str(scaling_path),
                "--output",
                str(out),
                "--no-mlflow",
            ]
        )
        == 0
    )
    base_w, var_w = tiny_model_dir / "model.safetensors", out / "model.safetensors"
    assert not var_w.is_symlink() and os.stat(var_w).st_ino == os.stat(base_w).st_ino
    manifest = json.loads((out / VARIANT_MANIFEST).read_text())
    assert manifest["weights"] == {"model.safetensors": "hardlink"} and manifest["scaling"]["method"] == "yarn"
    assert (
        "tokenizer.json" in manifest["copied"]
        and (out / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    )
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"] == scaling["rope_parameters"] and config["max_position_embeddings"] == 256
    assert _new_bytes(out, tiny_model_dir) < 64 * 1024 < base_w.stat().st_size
    assert not list(tmp_path.glob(".*partial"))

    ids = np.random.default_rng(0).integers(3, 300, size=(1, 200))  # beyond the base's 64 positions
    got = _stock_logits(out, ids, tmp_path)
    with torch.no_grad():
        want = load_causal_lm(tiny_model_dir, scaling=scaling).eval()(input_ids=torch.from_numpy(ids)).logits.numpy()
        plain = load_causal_lm(tiny_model_dir).eval()(input_ids=torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got - plain).max() > 1e-3  # the scaling is what the variant changed

    # extending again replaces the variant; the base's weights are untouched
    before = base_w.read_bytes()
    assert (
        main(
            [
                "extend",
                "--base",
                str(tiny_model_dir),
                "--scaling",
                str(scaling_path),
                "--output",
                str(out),
                "--no-mlflow",
            ]
        )
        == 0
    )
    assert base_w.read_bytes() == before and os.stat(var_w).st_ino == os.stat(base_w).st_ino


def test_link_fallbacks_symlink_then_copy(tmp_path, tiny_model_dir, monkeypatch, capsys):
    _, scaling = _solve(tmp_path, method="pi")

    def no_link(*a, **k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    out = tmp_path / "variants" / "sym"
    written = write_variant(tiny_model_dir, scaling, out)
    w = out / "model.safetensors"
    assert written["weights"] == {"model.safetensors": "symlink"} and w.is_symlink()
    assert not os.path.isabs(os.readlink(w)) and w.resolve() == (tiny_model_dir / "model.safetensors").resolve()
    moved = tmp_path / "variants" / "sym-moved"  # a relative link survives a rename within the same folder
    out.rename(moved)
    assert (moved / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()

    def no_symlink(*a, **k):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlink)
    capsys.readouterr()
    out = tmp_path / "variants" / "copy"
    written = write_variant(tiny_model_dir, scaling, out)
    assert written["weights"] == {"model.safetensors": "copy"} and not (out / "model.safetensors").is_symlink()
    assert "warning: cannot link" in capsys.readouterr().err
    assert json.loads((out / VARIANT_MANIFEST).read_text())["weights"]["model.safetensors"] == "copy"
    assert load_causal_lm(out).config.rope_parameters["rope_type"] == "linear"


def test_hub_id_base_links_the_cached_blob(tmp_path, tiny_model_dir, make_hub_cache, monkeypatch):
    _, scaling = _solve(tmp_path)
    cache = tmp_path / "hub"
    snap = make_hub_cache(cache, "ropeext-test/tiny-llama", tiny_model_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    out = tmp_path / "hub-variant"
    written = write_variant("ropeext-test/tiny-llama", scaling, out)
    assert written["base_dir"] == snap and written["weights"]["model.safetensors"] == "hardlink"
    blob = (snap / "model.safetensors").resolve()
    assert blob.parent.name == "blobs" and os.stat(out / "model.safetensors").st_ino == blob.stat().st_ino
    assert not (out / "tokenizer.json").is_symlink() and (out / "tokenizer.json").is_file()


def test_bad_bases_and_scalings(tmp_path, tiny_model_dir, capsys):
    scaling_path, scaling = _solve(tmp_path)
    with pytest.raises(RopeextError, match="neither a model directory nor a hub id"):
        write_variant("nobody/absent", scaling, tmp_path / "v")
    with pytest.raises(RopeextError, match="has no config.json"):
        write_variant(tmp_path, scaling, tmp_path / "v")
    with pytest.raises(RopeextError, match="head_dim 16"):
        write_variant(tiny_model_dir, {**scaling, "head_dim": 16}, tmp_path / "v")
    with pytest.raises(RopeextError, match="missing key"):
        write_variant(tiny_model_dir, {"method": "pi"}, tmp_path / "v")
    assert not (tmp_path / "v").exists() and not list(tmp_path.glob(".*partial"))


def test_one_extend_writes_a_variant_per_scaling_file_with_one_run(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """The workflow's extend job: every method of a target length in one process, one MLflow run."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "e")
    files = [_solve(tmp_path, method=m)[0] for m in ("pi", "yarn")]
    outs = [tmp_path / f"tiny-{m}-256-noft" for m in ("pi", "yarn")]
    assert main(["extend", "--base", str(tiny_model_dir), "--scaling", *map(str, files), "--output", str(outs[0])]) == 2
    assert "--output: 1 folder(s) for 2 --scaling file(s)" in capsys.readouterr().err
    assert (
        main(["extend", "--base", str(tiny_model_dir), "--scaling", *map(str, files), "--output", *map(str, outs)]) == 0
    )
    for method, out in zip(("pi", "yarn"), outs):
        assert json.loads((out / VARIANT_MANIFEST).read_text())["scaling"]["method"] == method
    client = mlflow.MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.data.params["tiny-yarn-256-noft.scaling"] == str(files[1])
    assert tracking.run_artifacts(uri, run.info.run_id) == {
        f"{out.name}/{name}" for out in outs for name in ("config.json", VARIANT_MANIFEST)
    }
