"""Recipes are named overlays on the raw config: schema default < recipe < the user's key < --set."""

from __future__ import annotations

import json

import pytest

from ropeext.config import by_target, load_config, parse_sets, resolve_config
from ropeext.errors import RopeextError
from ropeext.recipes import RECIPES


def test_schema_default_then_recipe_then_user_key():
    plain = resolve_config({})["finetune"]
    assert plain["recipe"] == "none" and plain["lr"] == 3e-4 and plain["betas"] == [0.9, 0.95]
    dprope = resolve_config({"finetune": {"recipe": "dprope"}})["finetune"]
    assert (dprope["lr"], dprope["betas"], dprope["batch_size"], dprope["warmup_steps"]) == (2e-5, [0.9, 0.999], 64, 0)
    assert dprope["schedule"] == "constant" and dprope["weight_decay"] == 0.0
    assert dprope["grad_accum"] == 1 and dprope["precision"] == "bf16-mixed"  # keys the recipe leaves to the schema
    mine = resolve_config({"finetune": {"recipe": "anchor", "lr": 1e-5, "precision": "bf16"}})["finetune"]
    assert mine["lr"] == 1e-5 and mine["precision"] == "bf16"  # the user's keys win over the recipe
    assert (mine["steps"], mine["batch_size"], mine["weight_decay"], mine["betas"]) == (2000, 8, 0.1, [0.9, 0.95])


def test_set_on_the_command_line_wins_over_everything(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("finetune: {recipe: dprope, lr: 1.0e-5, batch_size: 32}\n")
    cfg = load_config(path, parse_sets(["lr=3e-6", "betas=[0.8, 0.9]"], "finetune"))["finetune"]
    assert cfg["lr"] == 3e-6 and cfg["betas"] == [0.8, 0.9]  # --set (3e-6 arrives from YAML as text)
    assert cfg["batch_size"] == 32 and cfg["schedule"] == "constant"  # then the file, then the recipe


def test_recipe_on_the_command_line_replaces_the_file_values_it_sets(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("finetune: {lr: 1.0e-3, grad_accum: 2, steps: 5}\n")
    cfg = load_config(path, parse_sets(["steps=3"], "finetune"), recipe="anchor")["finetune"]
    assert cfg["recipe"] == "anchor" and cfg["lr"] == 2e-5  # the recipe's value, not the file's
    assert cfg["grad_accum"] == 2  # a key the recipe does not set stays the file's
    assert cfg["steps"] == 3  # --set still wins


def test_steps_by_target_length_survive_a_json_round_trip():
    cfg = resolve_config({"finetune": {"recipe": "dprope"}})
    again = resolve_config(json.loads(json.dumps(cfg, sort_keys=True)))
    assert again == json.loads(json.dumps(cfg))  # resolving a resolved config changes nothing
    for steps in (cfg["finetune"]["steps"], again["finetune"]["steps"]):
        assert [by_target(steps, t) for t in (4096, 8192, 16384, 65536)] == [1000, 1000, 500, 500]
    assert by_target({"8192": 1000, "16384": 500}, 16384) == 500
    assert by_target({8192: 7}, 4096) == 7 and by_target(80, 1 << 20) == 80
    with pytest.raises(RopeextError, match="no entry for target length 32768"):
        by_target({"8192": 1000}, 32768)


def test_resolved_config_of_the_workflow_is_not_overlaid_again():
    """The workflow writes the resolved config; a job reading it must keep the user's values."""
    first = resolve_config({"finetune": {"recipe": "dprope", "lr": 1e-5}})
    second = resolve_config(json.loads(json.dumps(first)))
    assert second["finetune"]["lr"] == 1e-5 and second["finetune"]["betas"] == [0.9, 0.999]


def test_bad_recipe_and_bad_set_name_the_key():
    with pytest.raises(RopeextError, match="finetune.recipe: 'lora' is not one of none, dprope, anchor"):
        resolve_config({"finetune": {"recipe": "lora"}}, "my.yaml")
    with pytest.raises(RopeextError, match="unknown key 'warmup'"):
        parse_sets(["warmup=3"], "finetune")
    with pytest.raises(RopeextError, match="lr must be a number"):
        parse_sets(["lr=fast"], "finetune")
    with pytest.raises(RopeextError, match="unknown key 'recipe'"):
        parse_sets(["recipe=dprope"], "finetune")
    with pytest.raises(RopeextError, match=r"finetune.steps: 'beyond' does not match"):
        resolve_config({"finetune": {"steps": {"8192": 10, "beyond": 5}}})


def test_every_recipe_key_is_a_finetune_key_and_every_recipe_is_in_the_schema():
    from ropeext.config import load_schema, section_properties

    schema = load_schema()
    keys = section_properties(schema["properties"]["finetune"], schema)
    for name, recipe in RECIPES.items():
        assert set(recipe) <= set(keys) - {"recipe"}, name
        resolve_config({"finetune": {"recipe": name}})  # every value passes the schema
    assert keys["recipe"]["enum"] == ["none", *RECIPES]


def test_resolved_config_file_reads_back_with_its_exponent_floats(tmp_path):
    """Jobs read the resolved config the workflow writes as JSON (``2e-05``), which YAML 1.1 reads as text."""
    from ropeext.workflow import write_resolved_config

    first = resolve_config({"finetune": {"recipe": "anchor"}})
    assert first["finetune"]["lr"] == 2e-5
    path = write_resolved_config(first, str(tmp_path))
    assert "2e-05" in open(path).read()
    assert load_config(path) == first


def test_exponent_numbers_in_a_user_file_and_from_a_yaml_1_1_loader(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("finetune:\n  lr: 2e-5\n  weight_decay: 1E-2\n")
    config = load_config(path)
    assert config["finetune"]["lr"] == 2e-5 and config["finetune"]["weight_decay"] == 0.01
    # what Snakemake's loader hands over: the text, converted only under keys typed as numbers
    raw = {"experiment": "1e5", "finetune": {"lr": "3e-5"}, "pretrain": {"lr": "1.5e-3"}}
    resolved = resolve_config(raw)
    assert resolved["finetune"]["lr"] == 3e-5 and resolved["pretrain"]["lr"] == 1.5e-3
    assert resolved["experiment"] == "1e5"
    with pytest.raises(RopeextError, match="finetune.lr: 'fast' is not of type 'number'"):
        resolve_config({"finetune": {"lr": "fast"}})
