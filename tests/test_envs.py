"""The conda environment for `snakemake --sdm conda` pins exactly what the lock file pins."""

import re

import pytest
import yaml

from tests.conftest import REPO


def _lock():
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_torch_and_every_line_is_exact():
    pins = _lock()
    assert pins["torch"] == "2.13.0"
    assert "mlflow" in pins and "mlflow-skinny" in pins  # mlflow itself, which depends on skinny
    for name in ("snakemake", "transformers", "lm-eval", "python-levenshtein", "fuzzywuzzy"):
        assert name in pins, name


def test_conda_env_matches_lock():
    env = yaml.safe_load((REPO / "envs" / "ropeext.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = {}
    for item in pip:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", item)
        if m:
            env_pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    assert env_pins == _lock()
    # no path install: Snakemake copies the file elsewhere, where a relative path means nothing
    assert not any(i.startswith(("-e", "--editable", ".", "/")) for i in pip)


@pytest.mark.slow
def test_rules_run_in_an_environment_without_the_package_installed(tmp_path):
    """What `--sdm conda` gives a job: the pinned dependencies, but no ropeext install. Stand-in: a fresh
    virtualenv that sees the project's site-packages through a path entry (so the editable install's
    finder is not active), running Snakemake itself, not activated."""
    import site
    import subprocess
    import venv

    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    deps = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
    target = next((env_dir / "lib").glob("python3*")) / "site-packages"
    (target / "deps.pth").write_text(deps + "\n")
    python = env_dir / "bin" / "python"
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('ropeext'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert probe.stdout.strip() == "None", probe  # the package is not importable there by itself
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(REPO / ".test" / "config.yaml"),
            "--cores",
            "1",
            "results/rope/scaling/dprope-64.json",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    scaling = json.loads((work / "results" / "rope" / "scaling" / "dprope-64.json").read_text())
    assert scaling["method"] == "dprope"
    log = (work / "results" / "logs" / "rope" / "64.log").read_text()
    assert "Traceback" not in log


@pytest.mark.slow
def test_an_installed_wheel_runs_the_cli_with_a_config_outside_the_checkout(tmp_path):
    """`pip install .` into a fresh environment: the config schema and the reference values travel as package
    data, so `ropeext check` and `ropeext solve --config` work from a folder that is not the checkout."""
    import json
    import os
    import site
    import subprocess
    import sys
    import venv

    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(wheels)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing may see the checkout
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(next(wheels.glob("ropeext-*.whl"))),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    # then the dependencies, through a path entry (the checkout's editable finder stays off)
    deps = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
    target = next((env_dir / "lib").glob("python3*")) / "site-packages"
    (target / "deps.pth").write_text(deps + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "geometry.yaml").write_text(
        "rope: {bins: 90, interpolated_dims: 40}\n"
        "model: {train_length: 8192, architecture: {hidden_size: 576, "
        "num_attention_heads: 9, rope_theta: 100000.0}}\n"
        "extension: {target_lengths: [16384]}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run(
        [str(python), "-c", "import ropeext; print(ropeext.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.stdout.strip().startswith(str(env_dir)), where
    ropeext = env_dir / "bin" / "ropeext"
    check = subprocess.run(
        [str(ropeext), "check", "--config", "geometry.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0 and "checks passed" in check.stdout, check.stdout + check.stderr
    solve = subprocess.run(
        [
            str(ropeext),
            "solve",
            "--config",
            "geometry.yaml",
            "--rope-theta",
            "100000",
            "--head-dim",
            "64",
            "--train-length",
            "8192",
            "--target-length",
            "16384",
            "--method",
            "dprope",
            "--output",
            "dprope.json",
            "--no-mlflow",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert solve.returncode == 0, solve.stderr[-2000:]
    scaling = json.loads((work / "dprope.json").read_text())
    assert scaling["bins"] == 90 and sum(f != 1.0 for f in scaling["factors"]) == 20  # the config's 40 dims
