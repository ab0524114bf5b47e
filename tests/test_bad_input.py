"""Bad input stops before any job runs, with one clear message naming the key or file.

Three tables:

- ``CASES``: configs that ``ropeext check`` (in-process) rejects, one row per kind of problem, each
  laid over the micro config ``.test/config.yaml`` and attributed to the check in
  ``ropeext.checks.CHECKS`` that finds it (every registered check has a row);
- ``RUNTIME``: what only a running command can see (a truncated weight file, an output location it
  cannot write, a learning rate that overflows, packed data of another layout, a suite in which
  every cell was skipped), through ``ropeext.cli.main``: exit status 2 and one ``error:`` line,
  no traceback;
- a representative subset through ``snakemake -n`` (a subprocess), which must fail too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from ropeext import checks
from ropeext.cli import main
from ropeext.data.corpus import split_of
from tests.conftest import REPO

BASE = REPO / ".test" / "config.yaml"  # head_dim 16, L 32, L' 64, methods none + dprope, layouts full + anchor
BIN = Path(sys.executable).parent


@dataclass
class Case:
    id: str
    check: str  # name of the check in ropeext.checks.CHECKS that finds it
    make: Callable[[Path, dict], dict]  # (tmp folder, fixtures) -> config overlay (may write files)
    expect: tuple[str, ...]  # substrings of the message: the key, the file, what is wrong
    env: dict = field(default_factory=dict)  # environment for the row (e.g. offline with an empty cache)
    model: bool = False  # needs the tiny model directory


def _file(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _truncated_model(tmp: Path, fx: dict) -> str:
    folder = tmp / "cut-model"
    shutil.copytree(fx["model"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return str(folder)


def _edit_json(path: Path, drop: tuple[str, ...] = (), **values) -> None:
    data = json.loads(path.read_text())
    for key in drop:
        data.pop(key, None)
    path.write_text(json.dumps({**data, **values}))


def _model_copy(tmp: Path, fx: dict, name: str, *, drop: tuple[str, ...] = (), **config) -> str:
    """The tiny model (2 layers, tied embeddings) copied with its config.json edited."""
    folder = tmp / name
    shutil.copytree(fx["model"], folder)
    _edit_json(folder / "config.json", drop, **config)
    return str(folder)


def _not_json(tmp: Path, fx: dict) -> str:
    """The tiny model whose config.json is not JSON."""
    folder = Path(_model_copy(tmp, fx, "bad-config"))
    (folder / "config.json").write_text("{ not json")
    return str(folder)


def _local_model(path: str) -> dict:
    """A config overlay reading the model folder ``path`` (head_dim 32, as the tiny model's)."""
    return {"model": {"path": path, "architecture": {"hidden_size": 64}}}


def _without_bos_eos(tmp: Path, fx: dict) -> str:
    """The tiny model whose tokenizer names neither a BOS nor an EOS token."""
    folder = Path(_model_copy(tmp, fx, "no-bos-eos"))
    _edit_json(folder / "tokenizer_config.json", ("bos_token", "eos_token"))
    return str(folder)


def _in_split(path_of, split: str) -> Path:
    """The first ``path_of(i)`` whose document id (``str(path)``, or the JSONL record's ``path:1``) the
    corpus split hash puts in ``split``."""
    for i in range(1000):
        path = path_of(i)
        doc_id = f"{path.as_posix()}:1" if path.suffix == ".jsonl" else path.as_posix()
        if split_of(doc_id, 0.05, 0.1) == split:
            return path
    raise AssertionError(f"no name lands in {split}")


def _one_document(tmp: Path, suffix: str = ".txt") -> str:
    """A corpus of one long document (one line, no newline) that the split hash puts in test."""
    path = _in_split(lambda i: tmp / f"doc{i}{suffix}", "test")
    text = " ".join(f"word{i}" for i in range(2000))
    path.write_text(json.dumps({"text": text}) + "\n" if suffix == ".jsonl" else text)
    return str(path)


def _longbench_dir(tmp: Path, *names: str) -> str:
    folder = tmp / "longbench"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("")
    return str(folder)


OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TRAIN, ACC, ROPE, EVAL = (
    "finetune/pretrain batch and lr",
    "finetune.accelerate_config",
    "rope.threshold / rope.interpolated_dims",
    "eval.longbench",
)
METHODS, FACTORS, CORPUS, MODEL = "rope methods", "rope.factors_file", "corpus.path", "model.path / tokenizer.path"

CASES = [
    # a batch that grad_accum (x processes) does not divide; an lr beyond float32
    Case(
        "batch_grad_accum",
        TRAIN,
        lambda t, f: {"finetune": {"batch_size": 6, "grad_accum": 4}},
        ("finetune.batch_size: 6", "finetune.grad_accum 4"),
    ),
    Case(
        "pretrain_batch",
        TRAIN,
        lambda t, f: {"pretrain": {"batch_size": 4, "grad_accum": 3}},
        ("pretrain.batch_size: 4", "pretrain.grad_accum 3"),
    ),
    Case(
        "batch_over_gpus",
        TRAIN,
        lambda t, f: {
            "finetune": {"batch_size": 4, "accelerate_config": _file(t / "ddp.yaml", "distributed_type: MULTI_GPU\n")},
            "resources": {"finetune": {"gpu": 3}},
        },
        ("finetune.batch_size: 4", "on each of 3 processes"),
    ),
    # sequence parallelism: processes a window's share does not divide; a batch the groups do not split
    Case(
        "sequence_parallel_over_gpus",
        TRAIN,
        lambda t, f: {
            "finetune": {
                "sequence_parallel": 3,
                "accelerate_config": _file(t / "ddp.yaml", "distributed_type: MULTI_GPU\n"),
            },
            "resources": {"finetune": {"gpu": 4}},
        },
        ("finetune.sequence_parallel: 3 does not divide the 4 processes of resources.finetune.gpu",),
    ),
    Case(
        "batch_over_sequence_parallel_groups",
        TRAIN,
        lambda t, f: {
            "finetune": {
                "batch_size": 4,
                "grad_accum": 4,
                "sequence_parallel": 2,
                "accelerate_config": _file(t / "ddp.yaml", "distributed_type: MULTI_GPU\n"),
            },
            "resources": {"finetune": {"gpu": 4}},
        },
        ("finetune.batch_size: 4", "on each of 2 data-parallel groups", "expected a multiple of 8"),
    ),
    Case(
        "sequence_parallel_over_num_processes",
        ACC,
        lambda t, f: {
            "finetune": {
                "sequence_parallel": 2,
                "accelerate_config": _file(t / "a.yaml", "distributed_type: MULTI_GPU\nnum_processes: 8\n"),
            },
            "resources": {"finetune": {"threads": 3}},
        },
        ("finetune.sequence_parallel: 2 does not divide the 3 processes of", "a.yaml (resources.finetune.threads"),
    ),
    Case("lr_beyond_float32", TRAIN, lambda t, f: {"finetune": {"lr": 1e39}}, ("finetune.lr", "overflows float32")),
    # the accelerate launch config
    Case(
        "accelerate_missing",
        ACC,
        lambda t, f: {"finetune": {"accelerate_config": str(t / "fsdp.yaml")}},
        ("finetune.accelerate_config", "fsdp.yaml", "not found"),
    ),
    Case(
        "accelerate_not_yaml",
        ACC,
        lambda t, f: {"finetune": {"accelerate_config": _file(t / "a.yaml", "distributed_type: [FSDP\n")}},
        ("finetune.accelerate_config", "a.yaml:2:1", "not valid YAML"),
    ),
    Case(
        "accelerate_processes",
        ACC,
        lambda t, f: {
            "finetune": {
                "batch_size": 4,
                "accelerate_config": _file(t / "a.yaml", "distributed_type: MULTI_GPU\nnum_processes: 8\n"),
            },
            "resources": {"finetune": {"threads": 3}},
        },
        ("finetune.batch_size: 4", "a.yaml", "on each of the 3 processes"),
    ),
    Case(
        "deepspeed_accum",
        ACC,
        lambda t, f: {
            "finetune": {
                "batch_size": 4,
                "grad_accum": 2,
                "accelerate_config": _file(t / "ds.yaml", "distributed_type: DEEPSPEED\nnum_processes: 1\n"),
            },
            "resources": {"finetune": {"gpu": 1}},
        },
        ("finetune.grad_accum: must be 1 under DeepSpeed", "ds.yaml"),
    ),
    Case(
        "accelerate_deepspeed_on_cpu",
        ACC,
        lambda t, f: {"finetune": {"accelerate_config": _file(t / "ds.yaml", "distributed_type: DEEPSPEED\n")}},
        ("finetune.accelerate_config", "ds.yaml", "DeepSpeed ZeRO-3 runs on GPUs"),
    ),
    Case(
        "accelerate_context_parallel",
        ACC,
        lambda t, f: {
            "finetune": {
                "accelerate_config": _file(t / "cp.yaml", "distributed_type: FSDP\nparallelism_config: {cp_size: 2}\n")
            }
        },
        ("finetune.accelerate_config", "cp.yaml", "parallelism_config.cp_size: 2"),
    ),
    Case(
        "accelerate_yaml",
        ACC,
        lambda t, f: {"finetune": {"accelerate_config": _file(t / "b.yaml", "x: 1\ny: [\n")}},
        ("finetune.accelerate_config", "b.yaml:3:1", "not valid YAML"),
    ),
    # interpolated_dims range (also per target), and the threshold it conflicts with
    Case(
        "dims_above_head_dim",
        ROPE,
        lambda t, f: {"rope": {"interpolated_dims": 18}},
        ("rope.interpolated_dims: 18", "head dimension 16"),
    ),
    Case("dims_odd", ROPE, lambda t, f: {"rope": {"interpolated_dims": 5}}, ("rope.interpolated_dims: 5", "even")),
    Case(
        "dims_mapping_entry",
        ROPE,
        lambda t, f: {"rope": {"interpolated_dims": {64: 20}}},
        ("rope.interpolated_dims.64: 20",),
    ),
    Case(
        "dims_mapping_missing_target",
        ROPE,
        lambda t, f: {"rope": {"interpolated_dims": {128: 4}}},
        ("rope.interpolated_dims: no entry for target length 64",),
    ),
    Case(
        "threshold_and_dims",
        ROPE,
        lambda t, f: {"rope": {"threshold": 0.1, "interpolated_dims": 4}},
        ("rope.threshold and rope.interpolated_dims are both set",),
    ),
    # method options
    Case(
        "base_change_without_theta",
        METHODS,
        lambda t, f: {"extension": {"methods": ["none", "base_change"]}},
        ("rope.new_rope_theta: required by base_change", "extension.methods"),
    ),
    Case(
        "base_change_theta_below_1",
        METHODS,
        lambda t, f: {"rope": {"compare_methods": ["none", "base_change"], "new_rope_theta": 0.5}},
        ("rope.new_rope_theta: 0.5", "rope.compare_methods"),
    ),
    Case(
        "longrope_without_file",
        METHODS,
        lambda t, f: {"rope": {"angles_methods": ["none", "longrope"]}},
        ("rope.factors_file: required by longrope", "rope.angles_methods"),
    ),
    Case(
        "llama3_factors",
        METHODS,
        lambda t, f: {
            "extension": {"methods": ["llama3"]},
            "rope": {"llama3": {"low_freq_factor": 4, "high_freq_factor": 1}},
        },
        ("rope.llama3.high_freq_factor: 1",),
    ),
    Case(
        "grid_candidate",
        METHODS,
        lambda t, f: {"rope": {"candidates": ["interpolate", "grid:1"]}},
        ("rope.candidates: 'grid:1'",),
    ),
    Case(
        "target_beyond_float32_positions",
        METHODS,
        lambda t, f: {"extension": {"target_lengths": [2**24]}},
        ("extension.target_lengths: 16777216",),
    ),
    # the longrope factors file, read with the solver's parser
    Case(
        "factors_missing_file",
        FACTORS,
        lambda t, f: {"extension": {"methods": ["longrope"]}, "rope": {"factors_file": str(t / "f.csv")}},
        ("rope.factors_file: file not found", "f.csv"),
    ),
    Case(
        "factors_wrong_count",
        FACTORS,
        lambda t, f: {
            "extension": {"methods": ["longrope"]},
            "rope": {"factors_file": _file(t / "f.csv", "1\n2\n3\n")},
        },
        ("rope.factors_file", "f.csv", "expected 8 factors"),
    ),
    Case(
        "factors_not_numbers",
        FACTORS,
        lambda t, f: {
            "extension": {"methods": ["longrope"]},
            "rope": {"factors_file": _file(t / "f.csv", "factor\n1\nx\n")},
        },
        ("rope.factors_file", "f.csv", "must be a number"),
    ),
    Case(
        "factors_not_positive",
        FACTORS,
        lambda t, f: {
            "extension": {"methods": ["longrope"]},
            "rope": {"factors_file": _file(t / "f.csv", "1\n" * 7 + "0\n")},
        },
        ("rope.factors_file", "f.csv", "finite and > 0"),
    ),
    # the corpus
    Case(
        "text_folder_missing",
        CORPUS,
        lambda t, f: {"corpus": {"source": "text", "path": str(t / "no-such")}},
        ("corpus.path", "no-such"),
    ),
    Case(
        "jsonl_glob_matches_nothing",
        CORPUS,
        lambda t, f: {"corpus": {"source": "jsonl", "path": str(t / "*.jsonl")}},
        ("corpus.path: no jsonl file", "*.jsonl"),
    ),
    Case(
        "path_required",
        CORPUS,
        lambda t, f: {"corpus": {"source": "parquet"}},
        ("corpus.path: required when corpus.source is parquet",),
    ),
    Case(
        "hf_folder_missing",
        CORPUS,
        lambda t, f: {"corpus": {"source": "hf", "path": "./data/pg19-copy"}},
        ("corpus.path: dataset folder not found", "pg19-copy"),
    ),
    Case(
        "hf_id_not_cached_offline",
        CORPUS,
        lambda t, f: {"corpus": {"source": "hf", "path": "someorg/uncached-ds"}},
        ("corpus.path", "someorg/uncached-ds", "not in the local cache"),
        env=OFFLINE,
    ),
    Case(
        "text_corpus_of_one_document_in_test",
        CORPUS,
        lambda t, f: {"corpus": {"source": "text", "path": _one_document(t)}},
        ("corpus.path", "can reach the train split", "it puts every one in validation or test", "corpus.segment_chars"),
    ),
    Case(
        "stdlib_root_missing",
        CORPUS,
        lambda t, f: {"corpus": {"path": str(t / "lib")}},
        ("corpus.path", "lib is not a folder"),
    ),
    # models and tokenizers
    Case(
        "model_missing",
        MODEL,
        lambda t, f: {"model": {"path": str(t / "no-model")}},
        ("model.path: model directory not found", "no-model"),
    ),
    Case(
        "model_without_config",
        MODEL,
        lambda t, f: {"model": {"path": str(_longbench_dir(t))}},
        ("model.path", "has no config.json"),
    ),
    Case(
        "model_truncated",
        MODEL,
        lambda t, f: {"model": {"path": _truncated_model(t, f), "architecture": {"hidden_size": 64}}},
        ("model.path", "model.safetensors", "truncated"),
        model=True,
    ),
    Case(
        "model_geometry_differs",
        MODEL,
        lambda t, f: {"model": {"path": str(f["model"])}},
        ("model.architecture: head dimension 16", "32"),
        model=True,
    ),
    # the weights against the folder's config.json, from the safetensors header (no weight loaded)
    Case(
        "model_layers_beyond_weights",
        MODEL,
        lambda t, f: _local_model(_model_copy(t, f, "extra-layers", num_hidden_layers=4)),
        (
            "model.path",
            "extra-layers: the weights in model.safetensors do not match config.json",
            "18 weight(s) missing",
            "model.layers.2.input_layernorm.weight",
            "num_hidden_layers 4 but the weights hold layers 0-1",
        ),
        model=True,
    ),
    Case(
        "model_weights_of_another_shape",
        MODEL,
        lambda t, f: _local_model(_model_copy(t, f, "wide-mlp", intermediate_size=256)),
        ("wide-mlp", "6 weight(s) of another shape", "model.layers.0.mlp.down_proj.weight stored [64, 128], expected"),
        model=True,
    ),
    Case(
        "model_untied_without_lm_head",
        MODEL,
        lambda t, f: _local_model(_model_copy(t, f, "untied", tie_word_embeddings=False)),
        ("untied", "1 weight(s) missing", "(lm_head.weight)"),
        model=True,
    ),
    Case(
        "model_config_not_json",
        MODEL,
        lambda t, f: _local_model(_not_json(t, f)),
        ("model.path", "bad-config/config.json: not valid JSON", "line 1 column 3"),
        model=True,
    ),
    Case(
        "model_config_unknown_type",
        MODEL,
        lambda t, f: _local_model(_model_copy(t, f, "odd-type", model_type="nosuchmodel")),
        ("model.path", "odd-type/config.json: cannot load a model config", "nosuchmodel"),
        model=True,
    ),
    Case(
        "model_tokenizer_without_bos_eos",
        MODEL,
        lambda t, f: _local_model(_without_bos_eos(t, f)),
        ("model.path (its tokenizer, as tokenizer.path is null)", "no-bos-eos", "neither a BOS nor an EOS"),
        model=True,
    ),
    Case(
        "tokenizer_without_bos_eos",
        MODEL,
        lambda t, f: {"tokenizer": {"path": _without_bos_eos(t, f)}},
        ("tokenizer.path: tokenizer", "no-bos-eos", "neither a BOS nor an EOS"),
        model=True,
    ),
    Case(
        "model_id_not_cached_offline",
        MODEL,
        lambda t, f: {"model": {"path": "someorg/uncached-model"}},
        ("model.path", "someorg/uncached-model", "not in the local cache"),
        env=OFFLINE,
    ),
    Case(
        "tokenizer_missing",
        MODEL,
        lambda t, f: {"tokenizer": {"path": "./tokenizers/mine"}},
        ("tokenizer.path: folder not found", "tokenizers/mine"),
    ),
    Case(
        "gguf_source_missing",
        MODEL,
        lambda t, f: {"model": {"path": str(t / "m.gguf")}},
        ("model.path", "m.gguf", "not found"),
    ),
    Case(
        "package_source_missing",
        MODEL,
        lambda t, f: {"model": {"path": "llm-smollm3"}},
        ("model.path: llm-smollm3: not found", "installed package that ships a .gguf file"),
    ),
    Case(
        "finetune_method_not_extended",
        "extension.finetune_methods",
        lambda t, f: {"extension": {"finetune_methods": ["ntk"]}},
        ("extension.finetune_methods: ntk not in extension.methods",),
    ),
    Case(
        "lm_eval_engine_offline_without_data",
        "eval.*.engine",
        lambda t, f: {"eval": {"ruler": {"engine": "lm_eval", "tasks": ["niah_single_2"]}}},
        ("eval.ruler.engine: lm_eval", "essay haystack", "baber/paul_graham_essays"),
        env=OFFLINE,
    ),
    # evaluations
    Case(
        "variants_select_nothing",
        "eval.*.variants",
        lambda t, f: {"eval": {"passkey": {"variants": ["intra_doc"]}}},
        ("eval.passkey.variants: ['intra_doc'] select no model",),
    ),
    Case("ppl_stride", "eval.ppl", lambda t, f: {"eval": {"ppl": {"stride": 64}}}, ("eval.ppl.stride: 64",)),
    Case(
        "passkey_beyond_max_length",
        "eval.passkey",
        lambda t, f: {"eval": {"passkey": {"max_length": 200}}},
        ("eval.passkey.lengths: 256", "eval.passkey.max_length 200"),
    ),
    Case(
        "ruler_unknown_task",
        "eval.ruler",
        lambda t, f: {"eval": {"ruler": {"tasks": ["niah_single_1", "niah_7"]}}},
        ("eval.ruler.tasks", "niah_7"),
    ),
    Case(
        "ruler_beyond_max_length",
        "eval.ruler",
        lambda t, f: {"eval": {"ruler": {"lengths": [512, 1024]}}},
        ("eval.ruler.lengths: 1024", "eval.ruler.max_length 512"),
    ),
    Case(
        "ruler_every_cell_skipped",
        "eval.ruler",
        lambda t, f: {"eval": {"ruler": {"tasks": ["qa_1", "qa_2"]}}},
        ("eval.ruler.tasks", "every one would be skipped"),
    ),
    Case(
        "ruler_beyond_window",
        "eval.ruler",
        lambda t, f: {"eval": {"ruler": {"max_length": None}}},
        ("eval.ruler.lengths: 512", "64-token window", "micro-dprope-64-anchor"),
    ),
    Case(
        "ruler_essay_missing",
        "eval.ruler files",
        lambda t, f: {"eval": {"ruler": {"essay_source": str(t / "pg")}}},
        ("eval.ruler.essay_source", "pg"),
    ),
    Case(
        "ruler_squad_missing",
        "eval.ruler files",
        lambda t, f: {"eval": {"ruler": {"squad": str(t / "dev.json")}}},
        ("eval.ruler.squad: file not found", "dev.json"),
    ),
    Case(
        "ruler_templates_file",
        "eval.ruler files",
        lambda t, f: {"eval": {"ruler": {"templates": _file(t / "tpl.yaml", "haystack: {template: x}\n")}}},
        ("eval.ruler.templates", "tpl.yaml", "unknown task kind"),
    ),
    Case(
        "longbench_unknown_task",
        EVAL,
        lambda t, f: {
            "eval": {"longbench": {"data_dir": _longbench_dir(t, "qasper_e.jsonl"), "tasks": ["qasper", "qasperr"]}}
        },
        ("eval.longbench.tasks: unknown task(s) qasperr",),
    ),
    Case(
        "longbench_task_of_other_benchmark",
        EVAL,
        lambda t, f: {"eval": {"longbench": {"data_dir": _longbench_dir(t), "tasks": ["narrativeqa"]}}},
        ("narrativeqa", "benchmark longbench-e"),
    ),
    Case(
        "embedded_task_renamed",
        EVAL,
        lambda t, f: {"eval": {"longbench": {"embedded": {"task": "mycode"}}}},
        ("eval.longbench.embedded.task: 'mycode'",),
    ),
    Case(
        "embedded_windows",
        EVAL,
        lambda t, f: {"eval": {"longbench": {"embedded": {"windows": [96, 48, 160]}}}},
        ("eval.longbench.embedded", "increasing"),
    ),
    Case(
        "longbench_folder_missing",
        "eval.longbench files",
        lambda t, f: {"eval": {"longbench": {"data_dir": str(t / "LongBench" / "data")}}},
        ("eval.longbench.data_dir", "LongBench/data", "not found"),
    ),
    Case(
        "longbench_task_file_missing",
        "eval.longbench files",
        lambda t, f: {
            "eval": {"longbench": {"data_dir": _longbench_dir(t, "qasper_e.jsonl"), "tasks": ["qasper", "trec"]}}
        },
        ("eval.longbench.data_dir", "lacks the file(s) of trec"),
    ),
    Case(
        "longbench_not_a_zip",
        "eval.longbench files",
        lambda t, f: {"eval": {"longbench": {"data_dir": _file(t / "data.tar", "x")}}},
        ("eval.longbench.data_dir", "data.tar", "not a .zip"),
    ),
    Case(
        "longbench_prompts_dir",
        "eval.longbench files",
        lambda t, f: {
            "eval": {
                "longbench": {
                    "data_dir": _longbench_dir(t, "trec_e.jsonl"),
                    "tasks": ["trec"],
                    "prompts_dir": _longbench_dir(t),
                }
            }
        },
        ("eval.longbench.prompts_dir", "dataset2prompt.json"),
    ),
    Case(
        "longbench_without_prompts",
        "eval.longbench files",
        lambda t, f: {"eval": {"longbench": {"data_dir": _longbench_dir(t, "trec_e.jsonl"), "tasks": ["trec"]}}},
        ("eval.longbench.prompts_dir: null", "prompt templates", "engine: lm_eval"),
    ),
    Case(
        "longbench_hub_not_cached_offline",
        "eval.longbench files",
        lambda t, f: {"eval": {"longbench": {"data_dir": "hf:THUDM/LongBench"}}},
        ("eval.longbench.data_dir", "THUDM/LongBench", "not in the local cache"),
        env=OFFLINE,
    ),
    Case(
        "openllm_preset_and_tasks",
        "eval.openllm",
        lambda t, f: {"eval": {"openllm": {"preset": "leaderboard_v1", "tasks": "hellaswag:10"}}},
        ("eval.openllm.preset and eval.openllm.tasks",),
    ),
    Case(
        "openllm_task_list",
        "eval.openllm",
        lambda t, f: {"eval": {"openllm": {"tasks": "hellaswag:ten"}}},
        ("eval.openllm.tasks", "hellaswag:ten"),
    ),
    Case(
        "openllm_batch_size",
        "eval.openllm",
        lambda t, f: {"eval": {"openllm": {"batch_size": "big"}}},
        ("eval.openllm.batch_size: 'big'",),
    ),
    # packing, outputs, references
    Case(
        "pretrain_window_too_short",
        "packing",
        lambda t, f: {"model": {"train_length": 2}},
        ("model.train_length: 2 is a window the pack stage cuts", "more than 2 tokens"),
    ),
    Case(
        "interleave_bounds",
        "packing",
        lambda t, f: {
            "extension": {"layouts": ["anchor_interleaved"]},
            "packing": {"interleave": {"min_tokens": 100, "max_tokens": 50}},
        },
        ("packing.interleave", "min_tokens <= max_tokens"),
    ),
    Case(
        "tag_template",
        "packing",
        lambda t, f: {"extension": {"layouts": ["anchor_tag"]}, "packing": {"tag_template": "$domain from $source\n"}},
        ("packing.tag_template", "only $domain"),
    ),
    Case(
        "results_dir_is_a_file",
        "results_dir",
        lambda t, f: {"results_dir": _file(t / "out", "")},
        ("results_dir", "is a file, expected a folder"),
    ),
    Case(
        "results_dir_under_a_file",
        "results_dir",
        lambda t, f: {"results_dir": _file(t / "out", "") + "/run1"},
        ("results_dir", "is a file, not a folder"),
    ),
    Case(
        "references_missing",
        "report.references",
        lambda t, f: {"report": {"references": str(t / "ref.yaml")}},
        ("report.references", "ref.yaml", "not found"),
    ),
    Case(
        "references_broken",
        "report.references",
        lambda t, f: {
            "report": {"references": _file(t / "ref.yaml", "papers: {x: {name: X, citation: Y}}\ntables: 3\n")}
        },
        ("report.references", "ref.yaml", "tables: 3 is not of type 'array'"),
    ),
]


def _overlay(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _check(capsys, *configs) -> tuple[int, str, str]:
    argv = ["check"]
    for c in configs:
        argv += ["--config", str(c)]
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def fixtures(request, tmp_path, monkeypatch):
    """Each row runs in a folder of its own (relative paths land there) with the environment it asks for."""
    monkeypatch.chdir(tmp_path)
    return {"model": request.getfixturevalue("tiny_model_dir")} if request.node.callspec.params["case"].model else {}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_rejects(case, fixtures, tmp_path, monkeypatch, capsys):
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.env:  # an empty cache: nothing is there to find
        for key in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE"):
            monkeypatch.setenv(key, str(tmp_path / "empty-cache"))
    overlay = _overlay(tmp_path, case.make(tmp_path, fixtures))
    rc, out, err = _check(capsys, BASE, overlay)
    assert rc == 2 and not out, (out, err)
    assert err.startswith("error: ") and "Traceback" not in err
    for text in case.expect:
        assert text in err, f"{case.id}: {text!r} not in\n{err}"
    # the row's own check finds it (so the table covers every check for a reason)
    from ropeext.config import deep_merge, read_config_file, resolve_config

    config = resolve_config(deep_merge(read_config_file(BASE), read_config_file(overlay)))
    (own,) = [c for c in checks.CHECKS if c.name == case.check]
    found = "\n".join(_run_one(own, config))
    for text in case.expect:
        assert text in found, f"{case.id}: {text!r} not found by {case.check!r}: {found!r}"


def _run_one(check, config) -> list[str]:
    try:
        return list(check.run(config))
    except Exception as exc:  # noqa: BLE001 - problems() turns a RopeextError of a check into a line too
        return [f"{check.name}: {exc}"]


def test_every_check_has_a_row():
    names = [c.name for c in checks.CHECKS]
    assert len(names) == len(set(names)) and len(names) >= 15
    assert set(names) == {c.check for c in CASES}, set(names) ^ {c.check for c in CASES}


def test_the_micro_config_passes_and_every_problem_is_listed_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _check(capsys, BASE)
    assert rc == 0 and out.startswith("ok: ") and f"{len(checks.CHECKS)} checks passed" in out, (out, err)
    overlay = _overlay(
        tmp_path,
        {
            "finetune": {"batch_size": 6, "grad_accum": 4},
            "rope": {"threshold": 0.1, "interpolated_dims": 40},
            "corpus": {"source": "text", "path": str(tmp_path / "nothing")},
            "eval": {"longbench": {"data_dir": str(tmp_path / "lb"), "tasks": ["nosuch"]}},
        },
    )
    rc, out, err = _check(capsys, BASE, overlay)
    assert rc == 2 and "6 problems:" in err, err
    listed = [line[4:] for line in err.splitlines() if line.startswith("  - ")]
    keys = [
        "finetune.batch_size: 6",
        "rope.threshold and rope.interpolated_dims",
        "rope.interpolated_dims: 40",
        "corpus.path",
        "eval.longbench.tasks",
        "eval.longbench.data_dir",
    ]
    assert len(listed) == 6 and all(line.startswith(key) for line, key in zip(listed, keys)), listed


def test_check_paths_false_checks_values_only(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = {"corpus": {"source": "text", "path": str(tmp_path / "nothing")}}
    assert _check(capsys, BASE, _overlay(tmp_path, missing))[0] == 2
    rc, out, _ = _check(capsys, BASE, _overlay(tmp_path, {**missing, "check_paths": False}))
    assert rc == 0 and "file checks skipped" in out
    rc, _, err = _check(
        capsys,
        BASE,
        _overlay(tmp_path, {**missing, "check_paths": False, "finetune": {"batch_size": 3, "grad_accum": 2}}),
    )
    assert rc == 2 and "finetune.batch_size: 3" in err and "corpus.path" not in err


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  lr: 3.0e-4\n  betas: [0.9, 0.95\n")
    rc, _, err = _check(capsys, BASE, bad)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"{bad}:4:1: not valid YAML" in err and "line 3, column 10" in err


def test_threshold_alone_and_interpolated_dims_alone_keep_working(tmp_path, capsys, monkeypatch):
    """null means "not set": either key alone is valid, and a stage given both in its config refuses."""
    monkeypatch.chdir(tmp_path)
    for rope in ({"threshold": 0.2}, {"interpolated_dims": 8}, {"interpolated_dims": {64: 8}}):
        assert _check(capsys, BASE, _overlay(tmp_path, {"rope": rope}))[0] == 0, rope
    both = _overlay(tmp_path, {"rope": {"threshold": 0.2, "interpolated_dims": 8}})
    rc = main(
        [
            "solve",
            "--rope-theta",
            "10000",
            "--head-dim",
            "16",
            "--train-length",
            "32",
            "--target-length",
            "64",
            "--method",
            "dprope",
            "--config",
            str(both),
            "--output",
            str(tmp_path / "s.json"),
            "--no-mlflow",
        ]
    )
    assert rc == 2 and "rope.threshold and rope.interpolated_dims" in capsys.readouterr().err


# ---- runtime failures: one line, exit 2 ------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir, tiny_tokenizer_dir):
    """A pi scaling for the tiny model (head_dim 32, L 32 -> 64), anchor-packed windows of 64, held-out
    tokens of short documents, a config with fast fine-tuning."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from ropeext.commands.pack import write_packed
    from ropeext.data.packing import pack_documents

    d = tmp_path_factory.mktemp("bad_input")
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(3, len(tok), size=int(rng.integers(8, 40)))) for _ in range(40)]
    write_packed(d / "anchor.parquet", pack_documents(docs, 64, "anchor", tok.bos_token_id, 0), "anchor")
    old = pq.read_table(d / "anchor.parquet").replace_schema_metadata(None)
    pq.write_table(old, d / "unrecorded.parquet")
    pq.write_table(pa.table({"input_ids": pa.array(docs, type=pa.list_(pa.int32()))}), d / "short-docs.parquet")
    (d / "config.yaml").write_text(
        "model: {train_length: 32}\nextension: {target_lengths: [64]}\n"
        "finetune: {steps: 3, batch_size: 2, lr: 1.0e-3, warmup_steps: 1, precision: fp32}\n"
    )
    assert (
        main(
            [
                "solve",
                "--rope-theta",
                "10000",
                "--head-dim",
                "32",
                "--train-length",
                "32",
                "--target-length",
                "64",
                "--method",
                "pi",
                "--output",
                str(d / "pi.json"),
                "--no-mlflow",
            ]
        )
        == 0
    )
    cut = d / "cut-model"
    shutil.copytree(tiny_model_dir, cut)
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:5000])
    extra = d / "extra-layers"  # config.json declares 2 more layers than model.safetensors holds
    shutil.copytree(tiny_model_dir, extra)
    _edit_json(extra / "config.json", num_hidden_layers=4)
    (d / "longbench").mkdir()
    (d / "longbench" / "qasper_e.jsonl").write_text("")
    (d / "longbench" / "dataset2prompt.json").write_text('{"qasper": "{context} {input}"}')
    (d / "longbench" / "dataset2maxlen.json").write_text('{"qasper": 8}')
    (d / "a-file").write_text("")
    return {"dir": d, "model": tiny_model_dir, "cut": cut, "extra": extra}


def _finetune(i, out, *extra, train="anchor.parquet", layout="anchor", base=None):
    d = i["dir"]
    return [
        "finetune",
        "--config",
        str(d / "config.yaml"),
        "--base",
        str(base or i["model"]),
        "--scaling",
        str(d / "pi.json"),
        "--train",
        str(d / train),
        "--layout",
        layout,
        "--output",
        str(out),
        "--no-mlflow",
        *extra,
    ]


def _eval(i, suite, out, *extra, model=None):
    return [
        "eval",
        suite,
        "--model",
        str(model or i["model"]),
        "--output-dir",
        str(out),
        "--no-mlflow",
        "--no-progress",
        *extra,
    ]


def _import(source, out, *extra):
    return ["import-model", "--source", str(source), "--output", str(out), "--no-mlflow", *extra]


def _corpus_of_one_record(t: Path) -> list[str]:
    """``ropeext corpus`` of a JSONL file of one record, which the split hash puts in test (the config check
    cannot tell without reading the file)."""
    config = t / "one.yaml"
    config.write_text(yaml.safe_dump({"corpus": {"source": "jsonl", "path": _one_document(t, ".jsonl")}}))
    return ["corpus", "--config", str(config), "--output-dir", str(t / "o"), "--no-mlflow"]


RUNTIME = [
    (
        "corpus_of_one_document_in_test",
        lambda i, t: _corpus_of_one_record(t),
        ("the train split is empty", "1 document(s)", "(validation 0, test 1)", "set corpus.segment_chars"),
    ),
    (
        "finite_divergence",
        lambda i, t: _finetune(i, t / "m", "--set", "lr=1"),
        ("training diverged at step 3", "steps 2-3", "above divergence_factor 3 x the best loss", "stopping at lr"),
    ),
    (
        "weights_truncated_eval",
        lambda i, t: [
            "eval",
            "ppl",
            "--model",
            str(i["cut"]),
            "--tokens",
            str(i["dir"] / "short-docs.parquet"),
            "--output-dir",
            str(t / "o"),
            "--no-mlflow",
        ],
        ("cut-model/model.safetensors", "truncated"),
    ),
    (
        "weights_truncated_finetune",
        lambda i, t: _finetune(i, t / "m", base=i["cut"]),
        ("cut-model/model.safetensors", "truncated"),
    ),
    (
        "weights_truncated_import",
        lambda i, t: _import(i["cut"], t / "m"),
        ("--source", "cut-model/model.safetensors", "truncated"),
    ),
    # config.json declares 2 more layers than model.safetensors holds: every load names the folder and keys
    *[
        (
            f"weights_missing_layers_{name}",
            argv,
            (
                "extra-layers: the weights in model.safetensors do not match config.json",
                "18 weight(s) missing",
                "(model.layers.2.input_layernorm.weight, model.layers.2.mlp.down_proj.weight,",
                "num_hidden_layers 4 but the weights hold layers 0-1",
            ),
        )
        for name, argv in [
            ("import", lambda i, t: _import(i["extra"], t / "m")),
            ("import_float32", lambda i, t: _import(i["extra"], t / "m", "--dtype", "float32")),
            (
                "extend",
                lambda i, t: [
                    "extend",
                    "--base",
                    str(i["extra"]),
                    "--scaling",
                    str(i["dir"] / "pi.json"),
                    "--output",
                    str(t / "m"),
                    "--no-mlflow",
                ],
            ),
            ("finetune", lambda i, t: _finetune(i, t / "m", base=i["extra"])),
            (
                "eval_ppl",
                lambda i, t: [
                    "eval",
                    "ppl",
                    "--model",
                    str(i["extra"]),
                    "--tokens",
                    str(i["dir"] / "short-docs.parquet"),
                    "--output-dir",
                    str(t / "o"),
                    "--no-mlflow",
                ],
            ),
            ("eval_passkey", lambda i, t: _eval(i, "passkey", t / "o", model=i["extra"])),
        ]
    ],
    (
        "output_dir_is_a_file",
        lambda i, t: _eval(i, "passkey", i["dir"] / "a-file"),
        ("--output-dir", "a-file is a file, expected a folder"),
    ),
    (
        "output_under_a_file",
        lambda i, t: [
            "solve",
            "--rope-theta",
            "10000",
            "--head-dim",
            "32",
            "--train-length",
            "32",
            "--target-length",
            "64",
            "--method",
            "pi",
            "--output",
            str(i["dir"] / "a-file" / "s.json"),
        ],
        ("--output", "is a file, not a folder"),
    ),
    (
        "lr_overflow_at_first_step",
        lambda i, t: _finetune(i, t / "m", "--set", "lr=1e38"),
        ("optimizer step overflowed at step 1", "no checkpoint written yet"),
    ),
    (
        "lr_overflow_after_a_checkpoint",
        lambda i, t: _finetune(
            i, t / "m", "--set", "lr=1e38", "--set", "warmup_steps=100", "--set", "checkpoint_every=1"
        ),
        ("at step 2", "last good checkpoint kept", "m.checkpoints/step-0000001"),
    ),
    ("lr_beyond_float32", lambda i, t: _finetune(i, t / "m", "--set", "lr=1e39"), ("lr: 1e+39 overflows float32",)),
    (
        "layout_mismatch",
        lambda i, t: _finetune(i, t / "m", layout="full"),
        ("anchor.parquet: packed with layout anchor", "asked for layout full"),
    ),
    (
        "layout_not_recorded",
        lambda i, t: _finetune(i, t / "m", train="unrecorded.parquet"),
        ("unrecorded.parquet", "does not record its layout", "re-run the pack stage"),
    ),
    (
        "ruler_every_cell_skipped_qa",
        lambda i, t: _eval(i, "ruler", t / "o", "--tasks", "qa_1,qa_2", "--lengths", "64", "--templates", "ropeext"),
        ("RULER: every cell was skipped", "no squad file", "no hotpotqa file"),
    ),
    (
        "ruler_every_cell_too_short",
        lambda i, t: _eval(
            i,
            "ruler",
            t / "o",
            "--tasks",
            "niah_single_1,vt",
            "--lengths",
            "16",
            "--samples",
            "1",
            "--templates",
            "ropeext",
        ),
        ("RULER: every cell was skipped", "reserved for the answer"),
    ),
    (
        "longbench_no_sample",
        lambda i, t: _eval(
            i,
            "longbench",
            t / "o",
            "--data",
            str(i["dir"] / "longbench"),
            "--prompts",
            str(i["dir"] / "longbench"),
            "--tasks",
            "qasper",
        ),
        ("LongBench: no sample", "longbench"),
    ),
    (
        "passkey_every_length_above_max",
        lambda i, t: _eval(i, "passkey", t / "o", "--lengths", "128,256", "--max-length", "64"),
        ("exceeds --max-length 64",),
    ),
    (
        "ppl_no_window",
        lambda i, t: [
            "eval",
            "ppl",
            "--model",
            str(i["model"]),
            "--tokens",
            str(i["dir"] / "short-docs.parquet"),
            "--lengths",
            "64,128",
            "--stride",
            "16",
            "--output-dir",
            str(t / "o"),
            "--no-mlflow",
        ],
        ("no held-out document is longer than the largest context length 128",),
    ),
]


@pytest.mark.parametrize("name,argv,expect", RUNTIME, ids=[r[0] for r in RUNTIME])
def test_runtime_failure_is_one_line(name, argv, expect, inputs, tmp_path, capsys):
    rc = main(argv(inputs, tmp_path))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert err.rstrip().endswith(errors[0]), err[-2000:]  # the last thing printed, on one line
    for text in expect:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    assert not (tmp_path / "m").exists() and not (tmp_path / "o" / "metrics.json").exists()
    if name == "lr_overflow_after_a_checkpoint":
        assert sorted(p.name for p in (tmp_path / "m.checkpoints").iterdir()) == ["step-0000001"]


def _leaf_parsers(parser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield list(path), parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaf_parsers(sub, (*path, name))


def _argv(path, parser, outputs: dict) -> list[str]:
    """A command line with every required option (dummy values) and the given output paths."""
    argv = list(path)
    needed = [a for a in parser._actions if a.required and a.option_strings]
    needed += [g._group_actions[0] for g in parser._mutually_exclusive_groups if g.required]
    for action in needed:
        if action.dest not in outputs:
            argv += [action.option_strings[0], str(action.choices[0]) if action.choices else "1"]
    for option, value in outputs.items():
        argv += [option, str(value)]
    return argv


def test_every_command_checks_its_outputs_before_running(tmp_path, capsys):
    from ropeext.cli import build_parser

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    commands = [(p, parser) for p, parser in _leaf_parsers(build_parser()) if parser.get_default("_outputs")]
    assert len(commands) >= 16  # every stage writes something
    for path, parser in commands:
        for dest, option, kind in parser.get_default("_outputs"):
            under = _argv(path, parser, {option: blocker / "x"})
            assert main(under) == 2, under
            assert f"{option} {blocker / 'x'}: {blocker} is a file, not a folder" in capsys.readouterr().err, under
            wrong = blocker if kind == "folder" else folder
            assert main(_argv(path, parser, {option: wrong})) == 2
            assert f"is a {'file' if kind == 'folder' else 'folder'}, expected a {kind}" in capsys.readouterr().err


def test_an_output_folder_without_write_permission(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))
    rc = main(
        [
            "solve",
            "--rope-theta",
            "10000",
            "--head-dim",
            "32",
            "--train-length",
            "32",
            "--target-length",
            "64",
            "--method",
            "pi",
            "--output",
            str(locked / "run" / "s.json"),
            "--no-mlflow",
        ]
    )
    assert rc == 2 and f"cannot write in {locked} (permission denied)" in capsys.readouterr().err
    assert not (locked / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission")
def test_a_read_only_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = main(
            [
                "solve",
                "--rope-theta",
                "10000",
                "--head-dim",
                "32",
                "--train-length",
                "32",
                "--target-length",
                "64",
                "--method",
                "pi",
                "--output",
                str(locked / "s.json"),
                "--no-mlflow",
            ]
        )
    finally:
        locked.chmod(0o700)
    assert rc == 2 and "permission denied" in capsys.readouterr().err


def test_weight_file_problem_reads_only_the_header(tmp_path, tiny_model_dir):
    from ropeext.modeling import weight_file_problem

    data = (Path(tiny_model_dir) / "model.safetensors").read_bytes()
    path = tmp_path / "model.safetensors"
    for cut, expect in [(len(data), None), (len(data) - 1, "truncated"), (100, "header claims"), (3, "8-byte")]:
        path.write_bytes(data[:cut])
        problem = weight_file_problem(path)
        assert (problem is None) if expect is None else (expect in problem), (cut, problem)
    path.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops" + data[13:])
    assert "not valid JSON" in weight_file_problem(path)


def test_weights_problem_compares_the_headers_with_the_config(tmp_path, tiny_model_dir):
    """Tied embeddings stored once pass; stored layers the config lacks and a shard the index names but the
    folder lacks are named."""
    from ropeext.modeling import weights_problem

    fx = {"model": tiny_model_dir}
    assert weights_problem(tiny_model_dir) is None
    problem = weights_problem(_model_copy(tmp_path, fx, "fewer", num_hidden_layers=1))
    assert "9 stored weight(s) that no parameter takes (model.layers.1.input_layernorm.weight," in problem, problem
    assert "num_hidden_layers 1 but the weights hold layers 0-1" in problem, problem
    sharded = Path(_model_copy(tmp_path, fx, "sharded"))
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": shards}))
    assert "names model-00002-of-00002.safetensors, absent from" in weights_problem(sharded)


def test_lm_eval_models_are_checked_before_hflm_loads_them(inputs):
    """HFLM reports no weight it initialised at random: make_lm checks the folder first."""
    from ropeext.errors import RopeextError
    from ropeext.eval.openllm import runner

    with pytest.raises(RopeextError, match="extra-layers: the weights in model.safetensors do not match"):
        runner.make_lm(inputs["extra"], tokenizer=None, max_length=64, batch_size=1, device="cpu", dtype="float32")


def test_non_finite_weights_are_caught_on_every_process():
    import torch

    from ropeext.train.loop import _finite

    class One:
        num_processes = 1

    ok = [torch.ones(3), torch.zeros(0)]
    assert _finite(ok, One(), "cpu", 1)
    assert not _finite(ok + [torch.tensor([1.0, float("inf")])], One(), "cpu", 1)
    assert not _finite([torch.tensor([float("nan")], dtype=torch.bfloat16)], One(), "cpu", 1)


def test_pack_records_layout_window_and_the_configs_seed(tmp_path, tiny_tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ropeext.data.packed_file import read_packed_info

    rng = np.random.default_rng(1)
    docs = [list(rng.integers(3, 300, size=int(rng.integers(5, 30)))) for _ in range(30)]
    pq.write_table(pa.table({"input_ids": pa.array(docs, type=pa.list_(pa.int32()))}), tmp_path / "tok.parquet")
    (tmp_path / "c.yaml").write_text("seed: 7\n")
    for seed_args, seed in (([], 7), (["--seed", "3"], 3)):
        out = tmp_path / f"p{seed}.parquet"
        assert (
            main(
                [
                    "pack",
                    "--tokens",
                    str(tmp_path / "tok.parquet"),
                    "--tokenizer",
                    str(tiny_tokenizer_dir),
                    "--window",
                    "16",
                    "--layout",
                    "intra_doc",
                    "--output",
                    str(out),
                    "--config",
                    str(tmp_path / "c.yaml"),
                    "--no-mlflow",
                    *seed_args,
                ]
            )
            == 0
        )
        assert read_packed_info(out) == {"layout": "intra_doc", "window": 16}
        stats = json.loads(out.with_name(out.stem + ".stats.json").read_text())["totals"]
        assert (stats["layout"], stats["window"], stats["seed"]) == ("intra_doc", 16, seed)
    assert (
        pq.read_table(tmp_path / "p7.parquet").column("input_ids").to_pylist()
        != pq.read_table(tmp_path / "p3.parquet").column("input_ids").to_pylist()
    )  # the seed reached the order


# ---- snakemake -n ------------------------------------------------------------------------------------


def _dry_run(tmp_path: Path, *configs: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(BASE),
            *map(str, configs),
            "-n",
            "--cores",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_snakemake_dry_run_rejects_them_all_at_once(tmp_path):
    overlay = _overlay(
        tmp_path,
        {
            "finetune": {"batch_size": 3, "grad_accum": 2},
            "extension": {"methods": ["none", "dprope", "longrope"]},
            "rope": {"threshold": 0.5, "interpolated_dims": 18},
            "corpus": {"source": "jsonl", "path": str(tmp_path / "corpus" / "*.jsonl")},
            "eval": {
                "longbench": {"data_dir": str(tmp_path / "LongBench"), "tasks": ["qasper", "not_a_task"]},
                "ruler": {"tasks": ["qa_1"]},
            },
        },
    )
    proc = _dry_run(tmp_path, overlay)
    assert proc.returncode != 0
    for text in (
        "problems found before any job runs",
        "finetune.batch_size: 3",
        "rope.threshold and rope.interpolated_dims",
        "rope.interpolated_dims: 18",
        "rope.factors_file: required by longrope",
        "corpus.path: no jsonl file",
        "corpus/*.jsonl",
        "eval.longbench.tasks: unknown task(s) not_a_task",
        "eval.longbench.data_dir",
        f"{tmp_path / 'LongBench'}",
        "eval.ruler.tasks: qa_1",
    ):
        assert text in proc.stdout + proc.stderr, f"{text!r} not in\n{proc.stdout[-3000:]}"
    assert not (tmp_path / "results").exists()  # not even the resolved config was written


def test_snakemake_reports_a_yaml_error_without_its_line_and_ropeext_check_with_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rope:\n  bins: [90\n")
    proc = _dry_run(tmp_path, bad)
    said = proc.stdout + proc.stderr  # Snakemake prints its errors on stdout
    assert proc.returncode != 0 and "not valid JSON or YAML" in said and "bad.yaml" not in said
    rc, _, err = _check(capsys, BASE, bad)
    assert rc == 2 and f"{bad}:3:1: not valid YAML" in err
