"""MLflow lineage through the real client on a tmp store: every model directory a stage writes is a
LoggedModel (scaling, layout, base, the run that made it), evaluations log their metrics against it and
record the variant's real scaling, runs name the data they read as dataset inputs, every run records
user and source, and a results folder moved elsewhere still serves its artifacts and finds its models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from ropeext import tracking
from ropeext.cli import main
from tests.test_bf16_analysis import _write_tokens
from tests.test_train_cli import _packed, _scaling

EXPERIMENT = "lineage"
CONFIG = """
seed: 0
results_dir: {root}
model: {{train_length: 32}}
attention: {{backend: sdpa_mask}}
finetune: {{steps: 2, batch_size: 2, lr: 1.0e-3, warmup_steps: 1, precision: fp32, system_metrics: false}}
"""
NOFT = ("tiny-pi-128-noft", "tiny-yarn-128-noft")
TUNED = "tiny-pi-128-anchor"


def _eval_ppl(model: Path, tokens: Path, out: Path, *extra: str) -> None:
    argv = ["eval", "ppl", "--model", str(model), "--tokens", str(tokens), "--output-dir", str(out)]
    argv += ["--lengths", "32,64", "--stride", "16", "--max-tokens", "64", *extra]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir, tiny_tokenizer_dir):
    """Base, two extended variants and one fine-tuned one, each evaluated once, in results/ of a tmp folder."""
    root = tmp_path_factory.mktemp("lineage") / "results"
    models = root / "models"
    base = models / "tiny-base"
    shutil.copytree(tiny_model_dir, base)
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        for key in ("ROPEEXT_PARENT_RUN_ID", "ROPEEXT_RULE", "ROPEEXT_WILDCARDS", "ROPEEXT_MLFLOW"):
            mp.delenv(key, raising=False)
        config = root.parent / "config.yaml"
        config.write_text(CONFIG.format(root=root))
        scalings = [_scaling(root / "rope" / f"{m}-128.json", target=128, method=m) for m in ("pi", "yarn")]
        assert (
            main(
                ["extend", "--base", str(base), "--scaling", *map(str, scalings), "--output"]
                + [str(models / name) for name in NOFT]
            )
            == 0
        )
        train = _packed(root / "packed" / "anchor-w128" / "train.parquet", tiny_tokenizer_dir, 128, "anchor")
        argv = ["finetune", "--config", str(config), "--base", str(base), "--scaling", str(scalings[0])]
        rng = np.random.default_rng(0)
        val = root / "tokens" / "validation.parquet"
        val.parent.mkdir(parents=True)
        _write_tokens(val, [rng.integers(3, 200, size=n).tolist() for n in (150, 200)])
        argv += ["--train", str(train), "--val", str(val), "--layout", "anchor"]
        argv += ["--output", str(models / TUNED), "--variant", TUNED]
        assert main(argv) == 0
        tokens = root / "tokens" / "test.parquet"
        _write_tokens(tokens, [rng.integers(3, 200, size=n).tolist() for n in (90, 120, 70)])
        for name in ("tiny-base", *NOFT, TUNED):
            _eval_ppl(models / name, tokens, root / "ppl" / name, "--config", str(config), "--variant", name)
    return {"root": root, "uri": uri, "tokens": tokens, "config": config}


def _client(uri: str):
    client = mlflow.MlflowClient(uri)
    return client, client.get_experiment_by_name(EXPERIMENT).experiment_id


def _runs(uri: str, stage: str) -> list:
    client, exp = _client(uri)
    return client.search_runs([exp], f"tags.`ropeext.stage` = '{stage}'")


def test_every_variant_is_a_logged_model_with_its_scaling_and_lineage(store):
    client, exp = _client(store["uri"])
    models = {m.name: m for m in client.search_logged_models([exp])}
    assert set(models) == {"tiny-base", *NOFT, TUNED}
    [extend] = _runs(store["uri"], "extend")
    [finetune] = _runs(store["uri"], "finetune")

    pi = models["tiny-pi-128-noft"]
    assert pi.model_type == tracking.MODEL_TYPE and pi.status == mlflow.entities.LoggedModelStatus.READY
    assert pi.source_run_id == extend.info.run_id
    assert {k: pi.params[k] for k in ("role", "layout", "base_model", "path")} == {
        "role": "extended",
        "layout": "noft",
        "base_model": "models/tiny-base",
        "path": "models/tiny-pi-128-noft",  # the folder (relative to the store), not a copy of its weights
    }
    assert {k: pi.params[k] for k in ("scaling.method", "scaling.rope_type", "scaling.factors")} == {
        "scaling.method": "pi",
        "scaling.rope_type": "linear",
        "scaling.factors": "4",
    }
    assert pi.params["scaling.target_length"] == "128" and pi.params["scaling.train_length"] == "32"
    assert models["tiny-yarn-128-noft"].params["scaling.rope_type"] == "yarn"
    assert not tracking.local_artifact_dir(store["uri"], pi.artifact_location).exists()  # no copy in the store

    tuned = models[TUNED]
    assert tuned.source_run_id == finetune.info.run_id
    assert (tuned.params["role"], tuned.params["layout"], tuned.params["scaling.method"]) == (
        "finetuned",
        "anchor",
        "pi",
    )
    assert tuned.tags["ropeext.variant"] == TUNED and tuned.tags["ropeext.stage"] == "finetune"
    # the fine-tune's final loss is a metric of the model it made
    assert {m.key for m in tuned.metrics if m.run_id == finetune.info.run_id} >= {"final_loss", "tokens_per_s"}
    # the run that made a model lists it as its output
    assert {o.model_id for o in client.get_run(extend.info.run_id).outputs.model_outputs} == {
        models[n].model_id for n in NOFT
    }
    base = models["tiny-base"]  # made by no stage here: registered by the first evaluation that read it
    assert base.source_run_id is None and base.params["role"] == "external"


def test_evaluations_log_their_metrics_against_the_model_and_record_its_scaling(store):
    client, exp = _client(store["uri"])
    models = {m.name: m for m in client.search_logged_models([exp])}
    runs = {r.data.tags["ropeext.variant"]: r for r in _runs(store["uri"], "eval_ppl")}
    assert set(runs) == set(models)
    for name, run in runs.items():
        model = models[name]
        metrics = [m for m in model.metrics if m.run_id == run.info.run_id]
        assert {m.key for m in metrics} >= {"ppl", "ppl_at_32", "ppl_at_64"}
        assert sorted(m.step for m in metrics if m.key == "ppl") == [32, 64]
        assert {m.dataset_name for m in metrics} == {"tokens/test.parquet"}
        assert run.data.params["model_id"] == model.model_id
        assert [i.model_id for i in client.get_run(run.info.run_id).inputs.model_inputs] == [model.model_id]
        assert run.data.params["scaling.method"] == model.params["scaling.method"]
        ppl = json.loads((store["root"] / "ppl" / name / "metrics.json").read_text())["ppl"]
        assert {m.step: m.value for m in metrics if m.key == "ppl"} == pytest.approx(
            {int(k): v for k, v in ppl.items()}
        )
    pi = runs["tiny-pi-128-noft"].data.params
    assert (pi["scaling.method"], pi["scaling.factors"], pi["layout"]) == ("pi", "4", "noft")
    assert "scaling" not in pi  # no longer "None" for a scaled model
    assert runs["tiny-base"].data.params["scaling.method"] == "none"
    # the best model by its perplexity at 64, as the Models tab sorts it
    best = client.search_logged_models([exp], order_by=[{"field_name": "metrics.ppl_at_64", "ascending": True}])
    assert len(best) == 4


def test_runs_name_the_data_they_read(store):
    [finetune] = _runs(store["uri"], "finetune")
    context = {
        d.dataset.name: [t.value for t in d.tags if t.key == "mlflow.data.context"]
        for d in finetune.inputs.dataset_inputs
    }
    assert context == {"packed/anchor-w128/train.parquet": ["training"], "tokens/validation.parquet": ["validation"]}
    [packed] = [d for d in finetune.inputs.dataset_inputs if d.dataset.name.startswith("packed/")]
    assert len(packed.dataset.digest) == 16
    assert json.loads(packed.dataset.source)["uri"].endswith("packed/anchor-w128/train.parquet")
    digests = set()
    for run in _runs(store["uri"], "eval_ppl"):
        [tokens] = run.inputs.dataset_inputs
        assert tokens.dataset.name == "tokens/test.parquet"
        assert [t.value for t in tokens.tags if t.key == "mlflow.data.context"] == ["evaluation"]
        digests.add(tokens.dataset.digest)
    assert digests == {tracking.file_digest(store["tokens"])}


def test_the_digest_follows_the_content():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a").mkdir()
        (Path(d) / "b").mkdir()
        a, b = Path(d) / "a" / "x.bin", Path(d) / "b" / "x.bin"
        data = bytearray(os.urandom(300_000))
        a.write_bytes(data)
        b.write_bytes(data)
        assert tracking.file_digest(a) == tracking.file_digest(b) != tracking.file_digest(a, seed="corpus")
        data[-5] ^= 1  # the tail (a Parquet footer) changes
        b.write_bytes(data)
        assert tracking.file_digest(a) != tracking.file_digest(b)


def test_every_run_records_user_and_source(store):
    client, exp = _client(store["uri"])
    runs = client.search_runs([exp])
    assert {r.data.tags["ropeext.stage"] for r in runs} == {"extend", "finetune", "eval_ppl"}
    for run in runs:
        tags = run.data.tags
        assert tags["mlflow.user"] == tracking.user_name() and run.info.user_id == tracking.user_name()
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.name"] == f"ropeext {tags['ropeext.stage']}"


def test_the_scaling_summary_of_per_pair_factors():
    got = tracking.scaling_summary(
        {"rope_type": "longrope", "short_factor": [1.0, 1.0, 2.0, 4.0], "long_factor": [1.0, 1.0, 2.0, 4.0]}
    )
    assert got["scaling.factors"] == "4 pairs: min 1, mean 2, max 4; 2 unscaled"
    assert tracking.scaling_summary(None) == {"scaling.rope_type": "default", "scaling.factors": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_moved_results_folder_still_serves_its_artifacts_and_finds_its_models(store, tmp_path):
    """Copy results/ elsewhere, delete the original, browse it as README says (`mlflow ui` with the store and
    its artifact folder) and read an artifact back through MLflow's client; a new evaluation of a moved
    variant logs against the same LoggedModel."""
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(store["root"], moved, symlinks=True)
    [run] = [r for r in _runs(store["uri"], "eval_ppl") if r.data.tags["ropeext.variant"] == TUNED]
    shutil.rmtree(store["root"])
    uri = f"sqlite:///{moved}/mlflow.db"

    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri]
    cmd += ["--artifacts-destination", str(moved / tracking.ARTIFACTS_DIR), "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "ui.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=10).read().strip() == b"OK":
                    break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"mlflow ui did not come up:\n{(tmp_path / 'ui.log').read_text()[-3000:]}")
            time.sleep(0.5)
        client = mlflow.MlflowClient(base)
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"metrics.json", "ppl.png"} <= names
        local = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path / "dl"))
        assert Path(local).read_bytes() == (moved / "ppl" / TUNED / "metrics.json").read_bytes()
        exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
        assert {m.name for m in client.search_logged_models([exp])} == {"tiny-base", *NOFT, TUNED}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()

    # the same store, opened directly: every artifact lies under the moved folder
    assert tracking.run_artifacts(uri, run.info.run_id) >= {"metrics.json", "ppl.png"}
    assert str(store["root"]) not in mlflow.MlflowClient(uri).get_run(run.info.run_id).info.artifact_uri
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        _eval_ppl(moved / "models" / TUNED, moved / "tokens" / "test.parquet", tmp_path / "again", "--variant", TUNED)
    client, exp = _client(uri)
    tuned = [m for m in client.search_logged_models([exp]) if m.name == TUNED]
    assert len(tuned) == 1 and len({m.run_id for m in tuned[0].metrics if m.key == "ppl"}) == 2  # both evaluations
