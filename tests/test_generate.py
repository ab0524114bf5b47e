"""Greedy decoding through ``model.generate`` agrees with a brute-force greedy argmax loop (no KV cache)
on the tiny model and on a SmolLM2-like stand-in (GQA 6/2, tied embeddings, rope_theta 1e5, SmolLM2's
tokenizer): plain, stop string spanning two tokens, EOS, min_new_tokens, stop tokens."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ropeext.data.tokenizer import load_tokenizer
from ropeext.eval.common import greedy_generate
from ropeext.modeling import load_causal_lm

PROMPT = "The pass key is 12345. Remember it. What is the pass key?"


def reference(model, tok, prompt_ids, max_new_tokens, stop_strings=(), stop_token_ids=(), min_new_tokens=0):
    """(text, why it stopped): every step recomputes the whole sequence and takes the argmax."""
    eos, stops = tok.eos_token_id, set(stop_token_ids)
    banned = sorted(stops | {eos})
    out: list[int] = []
    why = "length"
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([prompt_ids + out])).logits[0, -1].clone()
            if len(out) < min_new_tokens:
                logits[banned] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == eos:
                why = "eos"
                break
            out.append(nxt)
            if nxt in stops:
                why = "stop token"
                break
            text = tok.decode(out, skip_special_tokens=True)
            if any(s in text for s in stop_strings):
                why = "stop string"
                break
    text = tok.decode(out, skip_special_tokens=True)
    cuts = [text.find(s) for s in stop_strings if s in text]
    return (text[: min(cuts)] if cuts else text), why


def reference_ids(model, prompt_ids, n) -> list[int]:
    with torch.no_grad():
        for _ in range(n):
            prompt_ids = prompt_ids + [int(model(input_ids=torch.tensor([prompt_ids])).logits[0, -1].argmax())]
    return prompt_ids[-n:]


def spanning_stop_string(tok, prompt: str, ids: list[int]) -> str | None:
    """Two characters of the decoded continuation across a token boundary, first seen there and not
    completing one begun by the prompt (``generate`` would stop there, see ``greedy_generate``)."""
    for k in range(1, len(ids) - 1):
        head, both = tok.decode(ids[:k]), tok.decode(ids[: k + 1])
        if len(both) > len(head) >= 1 and "\ufffd" not in both:
            s = both[len(head) - 1 : len(head) + 1]
            if s.strip() and both.find(s) == len(head) - 1 and s[0] != prompt[-1]:
                return s
    return None


def steer(model, prompt_ids, token: int):
    """A copy of ``model`` whose argmax after the prompt is ``token``: its (tied) embedding becomes twice
    the winner's. Random models repeat the prompt's last token, which a stop string cannot span without
    also spanning the prompt's end (see ``greedy_generate``)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
        first = int(logits.argmax())
        assert logits[first] > 0
        emb = model.get_input_embeddings().weight
        emb[token] = 2 * emb[first]
    return model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_causal_lm(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def smol_like(smollm2_2layer_dir):
    tok = load_tokenizer(smollm2_2layer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 1e5},
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        use_cache=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    assert model.config.num_attention_heads // model.config.num_key_value_heads == 3
    return model, tok


@pytest.fixture(params=["tiny", "smol_like"])
def model_tok(request):
    model, tok = request.getfixturevalue(request.param)
    return model, tok, tok(PROMPT)["input_ids"]


def test_plain_and_stop_string_across_tokens(model_tok):
    model, tok, ids = model_tok
    plain, why = reference(model, tok, ids, 16)
    assert why == "length" and greedy_generate(model, tok, ids, 16) == plain
    model = steer(model, ids, tok.encode(" the", add_special_tokens=False)[0])
    plain, _ = reference(model, tok, ids, 16)
    stop = spanning_stop_string(tok, PROMPT, reference_ids(model, ids, 16))
    assert stop, f"no token boundary to put a stop string across in {plain!r}"
    ref, why = reference(model, tok, ids, 16, stop_strings=[stop])
    assert why == "stop string" and plain.startswith(ref) and len(ref) < len(plain)
    assert greedy_generate(model, tok, ids, 16, [stop]) == ref


def test_eos_and_min_new_tokens(model_tok):
    model, tok, ids = model_tok
    model = steer(model, ids, tok.eos_token_id)
    ref, why = reference(model, tok, ids, 8)
    assert why == "eos" and ref == "" == greedy_generate(model, tok, ids, 8)
    ref, why = reference(model, tok, ids, 8, min_new_tokens=3)
    assert ref and greedy_generate(model, tok, ids, 8, min_new_tokens=3) == ref
    nl = tok.encode("\n", add_special_tokens=False)[-1]
    for n in (0, 1, 2):
        ref, why = reference(model, tok, ids, 8, stop_token_ids=[nl], min_new_tokens=n)
        assert greedy_generate(model, tok, ids, 8, stop_token_ids=[nl], min_new_tokens=n) == ref
