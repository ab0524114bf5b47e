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
    import sys
    import venv

    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    deps = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
    target = next((env_dir / "lib").glob("python3*")) / "site-packages"
    (target / "deps.pth").write_text(deps + "\n")
    python = env_dir / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('ropeext'))"],
                           cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert probe.stdout.strip() == "None", probe  # the package is not importable there by itself
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([str(python), "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                           "--configfile", str(REPO / ".test" / "config.yaml"), "--cores", "1",
                           "results/rope/scaling/dprope-64.json"],
                          cwd=work, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    scaling = json.loads((work / "results" / "rope" / "scaling" / "dprope-64.json").read_text())
    assert scaling["method"] == "dprope"
    log = (work / "results" / "logs" / "solve" / "dprope-64.log").read_text()
    assert "Traceback" not in log
