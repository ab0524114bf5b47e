"""ropeext solve / compare / angles: outputs, MLflow run, and clean errors for bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ropeext.cli import main

GEOM = ["--rope-theta", "10000", "--head-dim", "32", "--train-length", "256", "--target-length", "1024"]


def test_solve_writes_scaling_json(tmp_path):
    out = tmp_path / "s" / "scaling.json"
    assert main(["solve", *GEOM, "--method", "dprope", "--output", str(out), "--no-mlflow"]) == 0
    data = json.loads(out.read_text())
    for key in (
        "method",
        "rope_theta",
        "head_dim",
        "train_length",
        "target_length",
        "bins",
        "factors",
        "inv_freq",
        "disturbance",
        "per_pair_disturbance",
        "rope_parameters",
        "max_position_embeddings",
        "candidates",
        "chosen_candidate",
    ):
        assert key in data, key
    assert len(data["factors"]) == len(data["inv_freq"]) == 16
    assert data["disturbance"] == pytest.approx(np.mean(data["per_pair_disturbance"]))
    assert data["max_position_embeddings"] == 1024
    assert not list(out.parent.glob("*.tmp*"))


def test_none_exports_default_rope(tmp_path):
    out = tmp_path / "scaling.json"
    assert main(["solve", *GEOM, "--method", "none", "--output", str(out), "--no-mlflow"]) == 0
    assert json.loads(out.read_text())["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}


def test_compare_writes_table_and_plots(tmp_path):
    out = tmp_path / "cmp" / "table.csv"
    assert main(["compare", *GEOM, "--methods", "none,pi,yarn,dprope", "--output", str(out), "--no-mlflow"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["none", "pi", "yarn", "dprope"]
    pi = next(r for r in rows if r["method"] == "pi")
    assert float(pi["reduction_vs_pi"]) == 0.0 and int(pi["interpolated_dims"]) == 32
    dprope = next(r for r in rows if r["method"] == "dprope")
    assert float(dprope["disturbance"]) < float(pi["disturbance"])
    for name in ("per_pair_disturbance.png", "angle_histograms.png", "compare.json"):
        assert (out.parent / name).stat().st_size > 1000


def test_angles_writes_npz_and_heatmap(tmp_path):
    out = tmp_path / "a" / "angles.npz"
    assert main(["angles", *GEOM, "--methods", "none,pi", "--bins", "90", "--output", str(out), "--no-mlflow"]) == 0
    data = np.load(out)
    assert data["pretrain"].shape == (16, 90) and data["pi"].shape == (16, 90)
    # each row sums to 1 plus the floor mass
    assert np.allclose(data["pretrain"].sum(axis=1), 1 + 90 * 2.0**-14 / 256)
    assert out.with_suffix(".png").stat().st_size > 1000


def test_solve_logs_an_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "rope-test")
    out = tmp_path / "scaling.json"
    assert main(["solve", *GEOM, "--method", "pi", "--output", str(out), "--variant", "tiny-pi"]) == 0
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["rope-test"])
    assert len(runs) == 1
    assert runs.iloc[0]["metrics.disturbance"] == pytest.approx(json.loads(out.read_text())["disturbance"])
    assert runs.iloc[0]["tags.ropeext.variant"] == "tiny-pi"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["--rope-theta", "10000", "--head-dim", "32", "--train-length", "256", "--target-length", "256"],
            "--target-length",
        ),
        (
            ["--rope-theta", "10000", "--head-dim", "33", "--train-length", "256", "--target-length", "1024"],
            "--head-dim",
        ),
        ([*GEOM, "--bins", "1"], "--bins"),
        ([*GEOM, "--threshold", "0.1", "--interpolated-dims", "8"], "--interpolated-dims"),
        ([*GEOM, "--interpolated-dims", "7"], "--interpolated-dims"),
        ([*GEOM, "--candidates", "extrapolate,bogus"], "--candidates"),
    ],
)
def test_bad_geometry_is_a_clean_error(argv, needle, tmp_path, capsys):
    out = tmp_path / "scaling.json"
    assert main(["solve", *argv, "--method", "dprope", "--output", str(out), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and "Traceback" not in err
    assert not out.exists()


def test_unknown_method_and_factor_file_errors(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    assert main(["solve", *GEOM, "--method", "rerope", "--output", str(out), "--no-mlflow"]) == 2
    assert "--method" in capsys.readouterr().err
    bad = tmp_path / "factors.csv"
    bad.write_text("\n".join(["1.0"] * 15))
    assert (
        main(["solve", *GEOM, "--method", "longrope", "--factors-file", str(bad), "--output", str(out), "--no-mlflow"])
        == 2
    )
    err = capsys.readouterr().err
    assert "--factors-file" in err and "expected 16" in err
    assert main(["solve", *GEOM, "--method", "longrope", "--output", str(out), "--no-mlflow"]) == 2
    assert "--factors-file" in capsys.readouterr().err
    assert main(["solve", *GEOM, "--method", "base_change", "--output", str(out), "--no-mlflow"]) == 2
    assert "--new-rope-theta" in capsys.readouterr().err
    assert main(["compare", *GEOM, "--methods", "pi,nope", "--output", str(tmp_path / "t.csv"), "--no-mlflow"]) == 2
    assert "--methods" in capsys.readouterr().err
    assert not out.exists()


def test_non_integer_scale_warns_but_solves(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    argv = [
        "solve",
        "--rope-theta",
        "10000",
        "--head-dim",
        "32",
        "--train-length",
        "256",
        "--target-length",
        "1000",
        "--method",
        "pi",
        "--output",
        str(out),
        "--no-mlflow",
    ]
    assert main(argv) == 0
    assert "floor constant" in capsys.readouterr().err
    assert any("floor constant" in w for w in json.loads(out.read_text())["warnings"])


def test_the_rope_job_writes_every_file_as_the_commands_do(tmp_path):
    """`ropeext rope` reads the geometry and options from the config: for one target length it writes what
    `solve` (every method of extension.methods and rope.compare_methods), `compare` and `angles` write."""
    import yaml

    from ropeext.config import load_config

    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "extension": {"methods": ["none", "dprope"]},
                "rope": {"bins": 90, "compare_methods": ["pi", "yarn"], "angles_methods": ["none", "pi"]},
            }
        )
    )
    model = load_config(cfg)["model"]
    arch = model["architecture"]
    geometry = [
        "--rope-theta",
        str(arch["rope_theta"]),
        "--head-dim",
        str(arch["hidden_size"] // arch["num_attention_heads"]),
        "--train-length",
        str(model["train_length"]),
        "--target-length",
        "1024",
    ]
    out = tmp_path / "rope"
    assert main(["rope", "--config", str(cfg), "--target-length", "1024", "--output-dir", str(out), "--no-mlflow"]) == 0
    assert sorted(p.name for p in (out / "scaling").iterdir()) == [
        "dprope-1024.json",
        "none-1024.json",
        "pi-1024.json",
        "yarn-1024.json",
    ]
    for method in ("dprope", "yarn"):
        by_hand = tmp_path / f"{method}.json"
        assert (
            main(
                ["solve", *geometry, "--config", str(cfg), "--method", method, "--output", str(by_hand), "--no-mlflow"]
            )
            == 0
        )
        assert json.loads((out / "scaling" / f"{method}-1024.json").read_text()) == json.loads(by_hand.read_text())
    assert (
        main(["compare", *geometry, "--config", str(cfg), "--output", str(tmp_path / "c" / "table.csv"), "--no-mlflow"])
        == 0
    )
    assert (out / "compare-1024" / "table.csv").read_text() == (tmp_path / "c" / "table.csv").read_text()
    assert [r["method"] for r in csv.DictReader((out / "compare-1024" / "table.csv").open())] == ["pi", "yarn"]
    assert (
        main(["angles", *geometry, "--config", str(cfg), "--output", str(tmp_path / "a" / "h.npz"), "--no-mlflow"]) == 0
    )
    job, by_hand = np.load(out / "angles-1024" / "histograms.npz"), np.load(tmp_path / "a" / "h.npz")
    assert list(job["methods"]) == ["none", "pi"] and job["pi"].shape[1] == 90
    assert all(np.array_equal(job[k], by_hand[k]) for k in by_hand.files)
    for name in (
        "angles-1024/heatmap.png",
        "compare-1024/per_pair_disturbance.png",
        "compare-1024/angle_histograms.png",
    ):
        assert (out / name).stat().st_size > 1000
