"""evalsuite.engine: batch planning, the conversion cache, adapter merging, scoring."""
import pytest

from evalsuite.engine import Engine, content_hash, plan_batches, prepare


def test_plan_batches_covers_every_prompt_once_within_the_cap():
    lengths = [5, 300, 7, 6, 290, 5, 1000, 8, 295]
    groups = plan_batches(lengths, 4, 32)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(1 <= len(g) <= 4 for g in groups)
    spans = [max(lengths[i] for i in g) - min(lengths[i] for i in g) for g in groups]
    assert max(spans) < 20  # short, ~300 and 1000-token prompts are never fed in one batch
    assert plan_batches([50] * 10, 4, 32) == [[0, 1], [2, 3, 4, 5], [6, 7, 8, 9]]  # equal lengths: full batches


@pytest.fixture(scope="module")
def adapters(tiny_model_path, tmp_path_factory):
    """Two LoRA adapters on the tiny model: one with zero B (the identity), one with random B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, scale in (("zero", 0.0), ("random", 1.0)):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
        torch.manual_seed(1)
        lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        with torch.no_grad():
            for n, p in lora.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 1.0).mul_(scale)
        lora.save_pretrained(d / name)
        out[name] = str(d / name)
    return out


def _ids(engine, text):
    return engine.tok(engine.tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                     add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def test_adapter_is_merged_and_keyed_by_its_content(tiny_model_path, adapters):
    base = Engine(tiny_model_path, quantization="float32", threads=1)
    zero = Engine(tiny_model_path, adapters["zero"], quantization="float32", threads=1)
    rand = Engine(tiny_model_path, adapters["random"], quantization="float32", threads=1)
    assert len({base.path, zero.path, rand.path}) == 3
    assert content_hash(adapters["zero"]) != content_hash(adapters["random"])
    prompts = [_ids(base, "Tell me about dragons."), _ids(base, "What is 2 + 2?")]
    out = {k: e.generate(prompts, max_new_tokens=10) for k, e in (("base", base), ("zero", zero), ("rand", rand))}
    assert out["zero"] == out["base"]      # a zero LoRA update merges to the base weights
    assert out["rand"] != out["base"]      # non-zero adapter weights change what the student says
    # converted once: asking again finds the same folder without converting
    (rand.path / "model.bin").touch()
    assert prepare(tiny_model_path, adapters["random"], "float32") == rand.path


def test_loglikelihood_agrees_with_score_batch_and_greedy_flag(tiny_model_path):
    e = Engine(tiny_model_path, quantization="float32", threads=1)
    ctx = _ids(e, "Count: one two three")
    greedy_cont = e.generator.generate_batch([e._tokens(ctx)], max_length=3, min_length=3,
                                             include_prompt_in_result=False)[0].sequences_ids[0]
    other = [greedy_cont[0] + 1, greedy_cont[1], greedy_cont[2]]
    ll = e.loglikelihood([(ctx, greedy_cont), (ctx, other), (ctx[:5], other)])
    assert ll[0][1] is True and ll[1][1] is False
    lps = [list(r.log_probs) for r in e.generator.score_batch([e._tokens(ctx + other), e._tokens(ctx[:5] + other)])]
    assert ll[1][0] == pytest.approx(sum(lps[0][-3:]), abs=1e-3)
    assert ll[2][0] == pytest.approx(sum(lps[1][-3:]), abs=1e-3)  # batched rows of different lengths
