"""Prompts follow the tokenizer: SmolLM2's adds no special token to raw prompts and its chat template is
applied where the LongBench protocol asks for one; this project's own tokenizer puts BOS first."""

from __future__ import annotations

import pytest

from ropeext.eval import passkey
from ropeext.eval.common import encode_prompt, tokenizer_adds_bos
from ropeext.eval.longbench import protocol

PROMPTS = {
    "hotpotqa": "Answer the question.\n\n{context}\n\nQuestion: {input}\nAnswer:",
    "trec": "Classify the question.\n\n{context}\n{input}",
}
MAXLENS = {"hotpotqa": 32, "trec": 64}
RECORD = {"context": "Paris is the capital of France. " * 6, "input": "What is the capital of France?"}


@pytest.fixture(scope="module")
def smol_tok(smollm2_2layer_dir):
    from ropeext.data.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_2layer_dir)


@pytest.fixture(scope="module")
def own_tok(tiny_tokenizer_dir):
    from ropeext.data.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


def test_raw_prompts_get_no_bos_from_smollm2(smol_tok):
    text = "The grass is green. What is the pass key?"
    ids = encode_prompt(smol_tok, text)
    assert smol_tok.bos_token == "<|im_start|>" and smol_tok.bos_token_id == 1
    assert ids == smol_tok(text, add_special_tokens=False).input_ids and ids[0] != smol_tok.bos_token_id
    assert not tokenizer_adds_bos(smol_tok) and not protocol.wants_bos(smol_tok, "auto")
    p = passkey.make_prompt(smol_tok, 200, 0.5, 12345)
    assert p.input_ids == smol_tok(p.text, add_special_tokens=False).input_ids
    assert 1 not in p.input_ids and len(p.input_ids) <= 200  # no chat marker in front of a raw prompt
    one_more = passkey.build_text(p.filler_blocks + 1, 0.5, 12345)[0]
    assert len(encode_prompt(smol_tok, one_more)) > 200  # the filler fills the budget


def test_own_tokenizer_keeps_bos_first(own_tok):
    text = "def add(a, b):\n    return a + b\n"
    ids = encode_prompt(own_tok, text)
    assert ids == [own_tok.bos_token_id] + own_tok(text, add_special_tokens=False).input_ids
    assert tokenizer_adds_bos(own_tok) and protocol.wants_bos(own_tok, "auto")
    p = passkey.make_prompt(own_tok, 120, 0.0, 4242)
    assert p.input_ids[0] == own_tok.bos_token_id and p.input_ids.count(own_tok.bos_token_id) == 1


def test_longbench_chat_template_ids_equal_apply_chat_template(smol_tok, tmp_path):
    import json

    (tmp_path / "dataset2prompt.json").write_text(json.dumps(PROMPTS))
    (tmp_path / "dataset2maxlen.json").write_text(json.dumps(MAXLENS))
    prompts, maxlens = protocol.load_prompt_assets(tmp_path)
    hot = protocol.task_spec("hotpotqa", prompts, maxlens, prompts_dir=tmp_path)
    trec = protocol.task_spec("trec", prompts, maxlens, prompts_dir=tmp_path)
    assert protocol.use_chat_for(hot, smol_tok, "auto") and not protocol.use_chat_for(trec, smol_tok, "auto")
    assert not protocol.use_chat_for(hot, smol_tok, "never")

    add_bos = protocol.wants_bos(smol_tok, "auto")
    text = protocol.format_prompt(hot.prompt, RECORD)
    ids, info = protocol.encode_prompt(smol_tok, text, 4000, chat=True, add_bos=add_bos)
    ref = smol_tok.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=False
    )
    assert ids == list(ref) and not info["truncated"]
    rendered = smol_tok.decode(ids)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")
    assert RECORD["input"] in rendered and ids.count(smol_tok.bos_token_id) == 3  # system, user, assistant

    raw_text = protocol.format_prompt(trec.prompt, RECORD)
    raw, _ = protocol.encode_prompt(smol_tok, raw_text, 4000, chat=False, add_bos=add_bos)
    assert raw == smol_tok(raw_text).input_ids and raw[0] != smol_tok.bos_token_id
    forced, _ = protocol.encode_prompt(smol_tok, raw_text, 4000, add_bos=protocol.wants_bos(smol_tok, "always"))
    assert forced == [smol_tok.bos_token_id] + raw

    # a long prompt: middle truncation of the raw text, then the template, within the budget
    long_text = protocol.format_prompt(hot.prompt, {**RECORD, "context": RECORD["context"] * 40})
    cut, info = protocol.encode_prompt(smol_tok, long_text, 300, chat=True, add_bos=add_bos)
    assert info["truncated"] and len(cut) <= 300
    raw_ids = smol_tok(long_text).input_ids
    kept = smol_tok.decode(raw_ids[:150], skip_special_tokens=True) + smol_tok.decode(
        raw_ids[-150:], skip_special_tokens=True
    )
    ref = list(
        smol_tok.apply_chat_template([{"role": "user", "content": kept}], add_generation_prompt=True, return_dict=False)
    )
    assert cut == ref or (info["recut"] and len(cut) == 300)
