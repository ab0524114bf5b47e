import subprocess
import sys

import pytest
import yaml

from ropeext.config import load_config, validate_config
from ropeext.errors import RopeextError
from tests.conftest import REPO


def _default():
    with open(REPO / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.mark.parametrize("path", ["config/config.yaml", ".test/config.yaml"])
def test_shipped_configs_validate_and_get_defaults(path):
    cfg = load_config(REPO / path)
    assert cfg["rope"]["kl_direction"] == "code"
    assert cfg["attention"]["backend"] in {"sdpa_mask", "blockwise"}
    assert cfg["corpus"]["min_chars"] == 64  # filled from the schema default


def test_unknown_key_is_named_with_the_allowed_ones():
    cfg = _default()
    cfg["finetune"]["learning_rate"] = 1e-4
    with pytest.raises(RopeextError) as err:
        validate_config(cfg, "my.yaml")
    msg = str(err.value)
    assert "my.yaml" in msg and "finetune" in msg and "learning_rate" in msg and "lr" in msg


def test_wrong_type_and_enum_name_the_key():
    cfg = _default()
    cfg["finetune"]["lr"] = "fast"
    cfg["extension"]["layouts"] = ["full", "diagonal"]
    with pytest.raises(RopeextError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert "finetune.lr" in msg and "'fast'" in msg
    assert "extension.layouts.1" in msg and "diagonal" in msg


def test_target_must_exceed_training_window():
    cfg = _default()
    cfg["extension"]["target_lengths"] = [128]
    with pytest.raises(RopeextError, match=r"extension.target_lengths: 128 must exceed model.train_length \(256\)"):
        validate_config(cfg)


def test_cli_reports_bad_config_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    cfg = _default()
    cfg["pretrain"]["steps"] = -3
    bad.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropeext.cli",
            "corpus",
            "--config",
            str(bad),
            "--output-dir",
            str(tmp_path / "out"),
            "--no-mlflow",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "pretrain.steps" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "train.parquet").exists()


def test_missing_config_file(tmp_path):
    with pytest.raises(RopeextError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def _leaf_keys(node, schema, prefix=()):
    """Dotted names of every leaf key, the keys a section takes from a ``$ref`` definition included."""
    from ropeext.config import section_properties

    if "$ref" in node and "properties" not in node:
        node = {**schema["$defs"][node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    props = section_properties(node, schema)
    if props and node.get("type", "object") == "object":
        for key, sub in props.items():
            yield from _leaf_keys(sub, schema, prefix + (key,))
    else:
        yield ".".join(prefix)


def test_config_readme_documents_every_key():
    from ropeext.config import load_schema

    schema = load_schema()
    doc = (REPO / "config" / "README.md").read_text()
    missing = []
    keys = list(_leaf_keys(schema, schema))
    assert "pretrain.betas" in keys and "finetune.recipe" in keys  # shared and own keys of a section
    for key in keys:
        last = key.rsplit(".", 1)[-1]
        if f"`{key}`" not in doc and not (f"`{key.rsplit('.', 1)[0]}." in doc and last in doc):
            missing.append(key)
    assert not missing, f"config/README.md does not document: {missing}"
