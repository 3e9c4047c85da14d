"""Assistant-only labels on SmolLM2's real chat template."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from train.format import IGNORE, SkipRecord, encode

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "Seven."},
    {"role": "user", "content": "Another one, please?"},
    {"role": "assistant", "content": "Eleven, then thirteen."},
]


@pytest.fixture(scope="module")
def tok(tiny_model_path):
    return AutoTokenizer.from_pretrained(tiny_model_path)


def _spans(labels):
    """Maximal runs of labelled positions as (start, end)."""
    out, start = [], None
    for i, x in enumerate(labels + [IGNORE]):
        if x != IGNORE and start is None:
            start = i
        if x == IGNORE and start is not None:
            out.append((start, i))
            start = None
    return out


def test_multiturn_mask_trains_every_assistant_token_and_its_end_of_turn_only(tok):
    ex = encode(tok, {"id": "x", "messages": CONV}, max_seq_len=512)
    assert len(ex.input_ids) == len(ex.labels)
    # the ids are the whole rendered conversation (minus the glue after the last end-of-turn)
    full = tok.apply_chat_template(CONV, tokenize=False)
    assert tok.decode(ex.input_ids) == full.rstrip("\n")
    spans = _spans(ex.labels)
    assert [tok.decode(ex.input_ids[s:e]) for s, e in spans] == ["Seven.<|im_end|>", "Eleven, then thirteen.<|im_end|>"]
    # labels equal ids where set, and every end-of-turn of an assistant turn is trained
    assert all(l == i for l, i in zip(ex.labels, ex.input_ids) if l != IGNORE)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert ex.labels.count(eos) == 2
    # nothing of the system or user turns, nor the role headers, is trained
    untrained = tok.decode([i for i, l in zip(ex.input_ids, ex.labels) if l == IGNORE])
    for text in ("You are terse.", "Name a prime.", "Another one, please?", "<|im_start|>assistant\n"):
        assert text in untrained
    assert untrained.count("<|im_end|>") == 3  # system + two user turns


def test_single_turn_gets_default_system_prompt_untrained(tok):
    ex = encode(tok, {"id": "s", "messages": CONV[1:3]}, max_seq_len=512)
    assert [tok.decode(ex.input_ids[s:e]) for s, e in _spans(ex.labels)] == ["Seven.<|im_end|>"]
    assert "SmolLM" in tok.decode(ex.input_ids)  # the template's default system prompt, as at inference


def test_prompt_tokens_match_inference_prompt(tok):
    # the tokens before the first label are exactly what generation starts from
    ex = encode(tok, {"id": "p", "messages": CONV[1:3]}, max_seq_len=512)
    first = _spans(ex.labels)[0][0]
    prompt = tok.apply_chat_template(CONV[1:2], tokenize=False, add_generation_prompt=True)
    assert ex.input_ids[:first] == tok(prompt, add_special_tokens=False)["input_ids"]


def test_untrainable_records_raise_skip_with_reason(tok):
    with pytest.raises(SkipRecord) as e:
        encode(tok, {"id": "u", "messages": CONV[:2]}, max_seq_len=512)
    assert e.value.reason == "no_assistant"
    with pytest.raises(SkipRecord) as e:
        encode(tok, {"id": "l", "messages": CONV}, max_seq_len=10)
    assert e.value.reason == "too_long"
    with pytest.raises(SkipRecord) as e:
        encode(tok, {"id": "a", "messages": CONV[2:]}, max_seq_len=512)
    assert e.value.reason == "assistant_first"
