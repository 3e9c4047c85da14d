"""hf backend on the tiny random model: input order, greedy determinism, seeded sampling, log-probs."""

import pytest

from synth.llm import LLMConfig, Sampling, load_llm
from synth.llm.base import render_prompt


@pytest.fixture(scope="module")
def llm(tiny_model_path):
    m = load_llm(LLMConfig(backend="hf", model=tiny_model_path, batch_size=8, max_model_len=512,
                             threads=1))
    yield m
    m.close()


PROMPTS = [[{"role": "user", "content": "Hi"}],
           [{"role": "user", "content": "Tell me a long story about a dragon and a castle on a hill."}],
           [{"role": "user", "content": "What is 2 + 2?"}]]


def test_outputs_come_back_in_input_order(llm):
    # sorted by length, both calls build the same batch, so the same seed gives the same rows
    s = Sampling(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)
    a = llm.generate(PROMPTS, s)
    b = llm.generate([PROMPTS[2], PROMPTS[0], PROMPTS[1]], s)
    assert len(a) == 3 and all(isinstance(t, str) for t in a)
    assert b == [a[2], a[0], a[1]]
    assert len(set(a)) == 3  # the random model's samples differ per row


def test_greedy_is_deterministic_and_seeded_sampling_repeats(llm):
    greedy = Sampling(max_new_tokens=8, temperature=0)
    assert llm.generate(PROMPTS, greedy) == llm.generate(PROMPTS, greedy)
    s1 = Sampling(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=1)
    s2 = Sampling(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=2)
    assert llm.generate(PROMPTS, s1) == llm.generate(PROMPTS, s1)
    assert llm.generate(PROMPTS, s1) != llm.generate(PROMPTS, s2)


def test_small_batches_match_one_big_batch(tiny_model_path):
    one = load_llm(LLMConfig(backend="hf", model=tiny_model_path, batch_size=1, threads=1))
    greedy = Sampling(max_new_tokens=6, temperature=0)
    assert [one.generate([p], greedy)[0] for p in PROMPTS] == one.generate(PROMPTS, greedy)


def test_final_assistant_turn_is_continued(llm):
    msgs = [{"role": "user", "content": "Label this."}, {"role": "assistant", "content": "Tags:"}]
    assert render_prompt(llm.tok, msgs).endswith("<|im_start|>assistant\nTags:")
    assert render_prompt(llm.tok, msgs[:1]).endswith("<|im_start|>assistant\n")
    out = llm.generate([msgs, msgs[:1]], Sampling(max_new_tokens=4, temperature=1.0, seed=0))
    assert len(out) == 2
