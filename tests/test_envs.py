"""The conda environment for `snakemake --sdm conda` pins exactly what the lock file pins."""

import re

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
    assert any(i.startswith("--editable") for i in pip)
