"""ct2 backend on the tiny random model: the hf backend's behaviour on the compiled engine.

fp32 conversions must reproduce transformers exactly (greedy text, log-probs); int8 must be
self-consistent (batching, order, seeds). The model converts once into the cache (content key).
"""

import pytest

from synth.llm import LLMConfig, Sampling, get_backend, load_llm
from synth.llm.base import render_prompt

PROMPTS = [[{"role": "user", "content": "Hi"}],
           [{"role": "user", "content": "Tell me a long story about a dragon and a castle on a hill."}],
           [{"role": "user", "content": "What is 2 + 2?"}]]
PREFILL = [{"role": "user", "content": "Label this."}, {"role": "assistant", "content": "Tags:"}]


@pytest.fixture(scope="module")
def llm(tiny_model_path):  # the default: int8
    m = load_llm(LLMConfig(backend="ct2", model=tiny_model_path, batch_size=8, max_model_len=512, threads=1))
    yield m
    m.close()


@pytest.fixture(scope="module")
def fp32(tiny_model_path):
    m = load_llm(LLMConfig(backend="ct2", model=tiny_model_path, quantization="float32", max_model_len=512,
                           threads=1))
    yield m
    m.close()


@pytest.fixture(scope="module")
def hf(tiny_model_path):
    m = load_llm(LLMConfig(backend="hf", model=tiny_model_path, max_model_len=512, threads=1))
    yield m
    m.close()


def test_registered_by_name_and_int8_by_default(llm):
    assert get_backend("ct2").__name__ == "CT2Backend"
    assert llm.engine.quantization == "int8" and "-int8-" in llm.engine.path.name
    with pytest.raises(ValueError, match="Did you mean 'ct2'"):
        get_backend("ct3")


def test_unknown_quantization_is_a_clear_error(tiny_model_path):
    with pytest.raises(ValueError, match="unknown ct2 quantization 'int4'"):
        load_llm(LLMConfig(backend="ct2", model=tiny_model_path, quantization="int4"))


def test_fp32_greedy_equals_transformers(fp32, hf):
    greedy = Sampling(max_new_tokens=12, temperature=0)
    prompts = PROMPTS + [PREFILL]
    assert fp32.generate(prompts, greedy) == hf.generate(prompts, greedy)


def test_greedy_batch_equals_batch_one_and_is_deterministic(llm):
    greedy = Sampling(max_new_tokens=10, temperature=0)
    batch = llm.generate(PROMPTS, greedy)
    assert batch == [llm.generate([p], greedy)[0] for p in PROMPTS]
    assert llm.generate(PROMPTS, greedy) == batch


def test_outputs_come_back_in_input_order_and_seeds_repeat(llm):
    s = Sampling(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)
    a = llm.generate(PROMPTS, s)
    b = llm.generate([PROMPTS[2], PROMPTS[0], PROMPTS[1]], s)
    assert b == [a[2], a[0], a[1]]
    assert len(set(a)) == 3
    s1 = Sampling(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=1)
    s2 = Sampling(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=2)
    assert llm.generate(PROMPTS, s1) == llm.generate(PROMPTS, s1)
    assert llm.generate(PROMPTS, s1) != llm.generate(PROMPTS, s2)
    assert llm.generate(PROMPTS, s1) != llm.generate(PROMPTS, Sampling(max_new_tokens=12, temperature=0))


def test_final_assistant_turn_is_continued(llm, fp32, hf):
    assert render_prompt(llm.tok, PREFILL).endswith("<|im_start|>assistant\nTags:")
    assert render_prompt(llm.tok, PREFILL[:1]).endswith("<|im_start|>assistant\n")
    greedy = Sampling(max_new_tokens=8, temperature=0)
    # the continuation of the prefilled turn, not a new answer to the user turn
    assert fp32.generate([PREFILL], greedy) == hf.generate([PREFILL], greedy)
    assert fp32.generate([PREFILL], greedy) != fp32.generate([PREFILL[:1]], greedy)


def test_stop_strings_cut_and_stop_early(llm):
    s = Sampling(max_new_tokens=24, temperature=1.0, top_p=1.0, seed=3)  # the random model's greedy text repeats
    before = llm.engine.stats["generated_tokens"]
    full = llm.generate(PROMPTS[1:2], s)[0]
    n_full = llm.engine.stats["generated_tokens"] - before
    stop = next(full[i:i + 2] for i in range(len(full) // 2, len(full)) if not full[i:i + 2].isspace())
    cut = llm.generate(PROMPTS[1:2], Sampling(**{**s.__dict__, "stop": [stop]}))[0]
    assert stop not in cut and cut == full[:full.find(stop)].strip()
    assert llm.engine.stats["generated_tokens"] - before - n_full < n_full  # the row stopped at the stop string

