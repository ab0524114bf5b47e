"""The precision of the evaluations' forward passes (``eval.dtype``): the auto decision, its record, agreement."""

from __future__ import annotations

import copy
import json

import mlflow
import numpy as np
import pytest
import torch

from ropeext.cli import main
from ropeext.config import load_config
from ropeext.data.tokenizer import load_tokenizer
from ropeext.data.tokens import write_tokens
from ropeext.errors import RopeextError
from ropeext.eval import passkey
from ropeext.eval.ppl import perplexity_by_length
from ropeext.modeling import load_causal_lm
from ropeext.report.provenance import precision_sentence
from ropeext.runtime import (
    DeviceFacts,
    choose_eval_dtype,
    choose_train_precision,
    cpu_flags,
    device_facts,
    precision_params,
)
from ropeext.suites import SUITES

AVX2 = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma", "avx512f"})  # avx512f alone computes no bf16


@pytest.mark.parametrize(
    "facts, dtype, reason",
    [
        (DeviceFacts("cuda", cuda_bf16=True), "bfloat16", "auto: cuda bf16"),
        (DeviceFacts("cuda:1", cuda_bf16=True), "bfloat16", "auto: cuda bf16"),
        (DeviceFacts("cuda", cuda_bf16=False), "float32", "auto: no native bf16"),
        (DeviceFacts("cpu", cpu_flags=AVX2 | {"amx_bf16", "amx_tile"}), "bfloat16", "auto: amx_bf16"),
        (DeviceFacts("cpu", cpu_flags=AVX2 | {"avx512_bf16"}), "bfloat16", "auto: avx512_bf16"),
        (DeviceFacts("cpu", cpu_flags=AVX2 | {"amx_bf16", "avx512_bf16"}), "bfloat16", "auto: amx_bf16, avx512_bf16"),
        (DeviceFacts("cpu", cpu_flags=AVX2), "float32", "auto: no native bf16"),
        (DeviceFacts("cpu", cuda_bf16=True), "float32", "auto: no native bf16"),  # a CUDA fact says nothing of a CPU
        (DeviceFacts("mps"), "float32", "auto: no native bf16"),
    ],
)
def test_auto_picks_bf16_only_where_the_device_computes_it_natively(facts, dtype, reason):
    assert choose_eval_dtype("auto", facts) == {"setting": "auto", "dtype": dtype, "reason": reason}


def test_an_explicit_setting_is_taken_as_given_and_says_when_bf16_is_emulated():
    cpu = DeviceFacts("cpu", cpu_flags=AVX2)
    assert choose_eval_dtype("float32", DeviceFacts("cuda", cuda_bf16=True))["dtype"] == "float32"
    assert choose_eval_dtype("bfloat16", cpu) == {
        "setting": "bfloat16",
        "dtype": "bfloat16",
        "reason": "set: bfloat16 (no native bf16 on this device: emulated, slower)",
    }
    assert choose_eval_dtype("bfloat16", DeviceFacts("cpu", cpu_flags=frozenset({"avx512_bf16"})))["reason"] == (
        "set: bfloat16"
    )
    assert precision_params(choose_eval_dtype("auto", cpu)) == {
        "eval.dtype": "auto",
        "eval.dtype_resolved": "float32",
        "eval.dtype_reason": "auto: no native bf16",
    }


def test_a_bad_value_is_a_clear_error_naming_eval_dtype(tmp_path):
    with pytest.raises(RopeextError, match=r"eval\.dtype: 'bf16' is not one of auto, float32, bfloat16, float16"):
        choose_eval_dtype("bf16", DeviceFacts("cpu"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eval:\n  dtype: bf16\n")
    with pytest.raises(RopeextError, match=r"eval\.dtype: 'bf16' is not one of"):
        load_config(cfg)
    assert load_config(None)["eval"]["dtype"] == "auto"


def test_cpu_flags_are_read_from_the_first_flags_line():
    text = (
        "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n"
        "bugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    )
    assert cpu_flags(text) == {"fpu", "avx2", "amx_bf16", "avx512_bf16"}
    assert cpu_flags("processor\t: 0\n") == frozenset()  # no flags line (not x86, not Linux): auto stays fp32
    facts = device_facts("cpu")  # this machine's own: whatever it has, its decision follows from the same flags
    assert choose_eval_dtype("auto", facts)["dtype"] == (
        "bfloat16" if {"amx_bf16", "avx512_bf16"} & facts.cpu_flags else "float32"
    )


def test_bf16_and_fp32_perplexity_agree_on_the_tiny_model(tiny_model_dir):
    """A bf16 forward pass gives the fp32 perplexity within a relative 1e-3 (NLL within 1e-3 nats per token).

    Measured on this tiny model (2 layers, hidden 64, random weights, perplexity near its vocabulary of 320):
    relative gaps of 2e-5 to 8e-5 at lengths 16 to 64, and 3e-5 to 8e-5 after it was trained down to
    perplexity 1.0-1.2; the tolerance keeps a 10x margin. The gap must also be non-zero: the forward did run
    in bf16 (the log-softmax and sums are float32 either way, ``ropeext.eval.ppl``).
    """
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 300, size=n) for n in (200, 150, 130)]
    model = load_causal_lm(tiny_model_dir)
    half = copy.deepcopy(model).to(torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    args = dict(lengths=[16, 32, 64], stride=16, max_tokens=10_000, progress=False)
    full, low = perplexity_by_length(model, docs, **args), perplexity_by_length(half, docs, **args)
    for c in full["ppl"]:
        gap = abs(low["ppl"][c] / full["ppl"][c] - 1)
        assert 0 < gap < 1e-3, (c, gap)
        assert abs(low["nll"][c] - full["nll"][c]) < 1e-3
        assert low["window_nll"][c] == pytest.approx(full["window_nll"][c], rel=1e-3)


def _greedy(model, ids: list[int], steps: int) -> tuple[list[int], float]:
    """Greedy tokens and the smallest top-1 / top-2 logit margin along the path."""
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=steps,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    top = torch.stack(out.logits).float().topk(2, -1).values
    return out.sequences[0, len(ids) :].tolist(), float((top[..., 0] - top[..., 1]).min())


def test_bf16_and_fp32_greedy_passkey_outputs_agree_where_greedy_is_decided(tiny_model_dir):
    """Greedy decoding on passkey prompts gives the same tokens in bf16 and fp32 wherever fp32's choice is not a
    near tie (every step's top-1 / top-2 margin above 0.05).

    Measured on this model: the largest bf16 logit error is 0.0065 (mean 0.0007) while the median top-2 margin is
    0.6, and teacher-forced argmaxes agree at all 512 positions of a sample. Where a margin falls below 0.05 (8x
    the largest error) bf16 may flip the choice and the continuations then diverge legitimately; the test
    compares the others and requires most prompts to qualify, so it cannot pass vacuously.
    """
    tok = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir).eval()
    half = copy.deepcopy(model).to(torch.bfloat16)
    compared = 0
    prompts = [
        passkey.make_prompt(tok, length, depth, passkey.sample_key(0, length, depth, i))
        for length in (48, 64)
        for depth in (0.0, 0.5, 1.0)
        for i in range(2)
    ]
    for p in prompts:
        full, margin = _greedy(model, p.input_ids, 8)
        low, _ = _greedy(half, p.input_ids, 8)
        if margin > 0.05:
            assert low == full, (p.key, margin)
            compared += 1
    assert compared >= 0.75 * len(prompts), compared


def test_eval_ppl_records_the_precision_in_metrics_and_mlflow(tiny_model_dir, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    write_tokens(tmp_path / "test.parquet", [np.random.default_rng(1).integers(3, 300, size=90).tolist()])
    base = ["eval", "ppl", "--model", str(tiny_model_dir), "--tokens", str(tmp_path / "test.parquet")]
    base += ["--lengths", "16,32", "--stride", "8", "--max-tokens", "64", "--no-progress"]
    assert main([*base, "--output-dir", str(tmp_path / "bf16"), "--dtype", "bfloat16", "--variant", "v16"]) == 0
    assert main([*base, "--output-dir", str(tmp_path / "auto"), "--variant", "vauto"]) == 0
    bf16 = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    auto = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert bf16["precision"]["setting"] == "bfloat16" and bf16["precision"]["dtype"] == "bfloat16"
    assert auto["precision"] == choose_eval_dtype("auto", device_facts("cpu"))
    assert bf16["ppl"]["32"] != auto["ppl"]["32"] or auto["precision"]["dtype"] == "bfloat16"
    runs = {
        r.data.tags["ropeext.variant"]: r.data.params
        for r in mlflow.MlflowClient(uri).search_runs(
            [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()]
        )
        if r.data.tags.get("ropeext.stage") == "eval_ppl"
    }
    assert runs["v16"]["eval.dtype"] == "bfloat16" and runs["v16"]["eval.dtype_resolved"] == "bfloat16"
    assert runs["vauto"]["eval.dtype"] == "auto"
    assert runs["vauto"]["eval.dtype_resolved"] == auto["precision"]["dtype"]
    assert runs["vauto"]["eval.dtype_reason"] == auto["precision"]["reason"]


def test_eval_passkey_runs_in_the_configured_precision(tiny_model_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eval:\n  dtype: bfloat16\n")
    out = tmp_path / "pk"
    args = ["eval", "passkey", "--config", str(cfg), "--model", str(tiny_model_dir), "--output-dir", str(out)]
    args += ["--lengths", "48", "--depths", "0.5", "--samples", "1", "--no-progress", "--no-mlflow"]
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["precision"]["dtype"] == "bfloat16"


def test_every_evaluation_suite_reruns_on_a_change_of_eval_dtype():
    """The rule's params digest carries eval.dtype for every suite under eval.; the BF16 analysis keeps its own."""
    for suite in SUITES:
        assert ("eval.dtype" in suite.settings) == suite.section.startswith("eval."), suite.name


def test_the_report_names_the_precision_the_evaluations_ran_in():
    auto = {"setting": "auto", "dtype": "float32", "reason": "auto: no native bf16"}
    amx = {"setting": "auto", "dtype": "bfloat16", "reason": "auto: amx_bf16"}
    assert precision_sentence({"ppl": [auto, auto], "passkey": [auto]}) == (
        "Evaluation precision: the forward passes ran in float32 (eval.dtype auto: no native bf16); "
        "perplexity's log-softmax and sums in float32."
    )
    assert precision_sentence({"passkey": [amx], "ruler": [auto, None]}) == (
        "Evaluation precision: the forward passes ran in bfloat16 (passkey: eval.dtype auto: amx_bf16) and "
        "float32 (ruler: eval.dtype auto: no native bf16); ruler recorded no precision."
    )
    assert precision_sentence({"ppl": [None]}) == ""


@pytest.mark.parametrize(
    "facts, precision",
    [
        (DeviceFacts("cuda", cuda_bf16=True), "bf16-mixed"),
        (DeviceFacts("cuda", cuda_bf16=False), "fp32"),
        (DeviceFacts("cpu", cpu_flags=frozenset({"avx2", "amx_bf16"})), "bf16-mixed"),
        (DeviceFacts("cpu", cpu_flags=frozenset({"avx2"})), "fp32"),
    ],
)
def test_training_precision_auto_is_bf16_mixed_only_where_bf16_is_native(facts, precision):
    assert choose_train_precision("auto", facts)[0] == precision
    assert choose_train_precision("bf16", facts) == ("bf16", "set: bf16")  # an explicit setting as given


def test_a_training_section_with_precision_auto_gets_this_machines_choice(monkeypatch):
    """settings_from resolves `auto` once, from the training device's facts: the loop only sees real precisions."""
    from ropeext.train import stage

    config = load_config(None, overrides={"finetune": {"precision": "auto"}})
    for flags, expected in ((frozenset({"avx512_bf16"}), "bf16-mixed"), (frozenset({"avx2"}), "fp32")):
        monkeypatch.setattr(stage, "device_facts", lambda device, flags=flags: DeviceFacts("cpu", cpu_flags=flags))
        monkeypatch.setattr(stage, "resolve_device", lambda device: "cpu")
        section = config["finetune"]
        settings = stage.settings_from(section, seed=0, layout="anchor", backend="blockwise", name="finetune")
        assert settings.precision == expected
