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
    # the same spread costs more on long prompts (every row-step copies a longer KV cache): short
    # prompts 4 tokens apart go together, long prompts 40 apart are not fed one token at a time
    assert plan_batches([30 + 4 * k for k in range(8)], 64, 192) == [list(range(8))]
    assert len(plan_batches([300 + 40 * k for k in range(8)], 64, 192)) >= 4


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


def test_shared_prefix_is_the_common_start_leaving_each_row_a_token():
    from evalsuite.engine import MIN_SHARED, shared_prefix

    head = list(range(100, 100 + MIN_SHARED + 4))
    assert shared_prefix([head + [1, 2], head + [1, 3, 4], head + [5]]) == len(head)
    assert shared_prefix([head + [1], head + [1, 2]]) == len(head)  # the shorter row keeps its last token
    assert shared_prefix([head, head]) == len(head) - 1
    assert shared_prefix([head + [1]]) == 0                          # one row: nothing to share
    assert shared_prefix([head[:MIN_SHARED - 1] + [1], head[:MIN_SHARED - 1] + [2]]) == 0  # too short to bother


@pytest.mark.parametrize("quantization", ["int8", "float32"])
def test_bucketed_generation_equals_one_unbucketed_call_in_input_order(talkative_model, quantization):
    """plan_batches' length buckets + the shared prefix forwarded once (static_prompt) give, for greedy
    decoding, the same responses as all prompts in one plain generate_batch call, in input order."""
    e = Engine(talkative_model, quantization=quantization, threads=1)
    template = ("You label questions with the skills they need. Answer with a comma-separated list of "
                "at most three short tags.\n\nQuestion: ")
    texts = [template + q for q in ("What is 2 + 2?", "A train leaves at 3 pm and travels 60 km at 40 km/h; "
                                    "when does it arrive?", "Name a prime.", "Sort these words: pear, fig, apple, "
                                    "kiwi, mango, plum, lime, date, cherry.")]
    texts += ["Hi", "Tell me a long story about a dragon and a castle on a hill, with three chapters."]
    prompts = [_ids(e, t) for t in texts]
    assert len({len(p) for p in prompts}) == len(prompts)  # all lengths differ: the buckets matter
    plain = e.generator.generate_batch([e._tokens(p) for p in prompts], max_length=24,
                                       include_prompt_in_result=False, end_token=e.end_ids, sampling_topk=1)
    want = [e.tok.decode(r.sequences_ids[0], skip_special_tokens=True) for r in plain]
    assert len(set(want)) == len(want) and all(len(w) > 20 for w in want)  # prompt-dependent answers
    for cap in (2, 3, 64):  # several buckets, and everything in one (shared prefix only)
        assert e.generate(prompts, max_new_tokens=24, batch_size=cap) == want
    assert e.generate(prompts[::-1], max_new_tokens=24, batch_size=2) == want[::-1]
    e.close()


def test_balance_gives_every_group_one_replica_longest_first():
    from evalsuite.engine import balance

    got = balance([[0], [1], [2], [3]], [5.0, 1.0, 4.0, 2.0], 2)
    assert sorted(g for r in got for g in r) == [0, 1, 2, 3]
    assert got == [[0, 1], [2, 3]]               # 5 + 1 against 4 + 2
    assert balance([[0], [1]], [1.0, 1.0], 3) == [[0], [1], []]
    assert all(r == sorted(r) for r in balance([[i] for i in range(9)], [float(i % 4) for i in range(9)], 2))


def test_replicas_side_by_side_give_one_replicas_output(talkative_model):
    """Two single-threaded replicas decoding their own batches at once: greedy output equals one
    replica's, in input order; seeded sampling repeats exactly (each replica's batches are fixed)."""
    one = Engine(talkative_model, quantization="int8", threads=1, replicas=1)
    two = Engine(talkative_model, quantization="int8", replicas=2)
    assert (one.replicas, two.replicas, two.threads) == (1, 2, 1) and len(two.generators) == 2
    prompts = [_ids(one, f"Question {k}: " + "why is the sky blue? " * (k % 4)) for k in range(9)]
    want = one.generate(prompts, max_new_tokens=16)
    assert two.generate(prompts, max_new_tokens=16, batch_size=3) == want
    sample = dict(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7, batch_size=2)
    first = two.generate(prompts, **sample)
    assert two.generate(prompts, **sample) == first
    assert two.generate(prompts, **{**sample, "seed": 8}) != first
    one.close()
    two.close()


def test_auto_replicas_one_per_core_on_cpu(tiny_model_path, monkeypatch):
    import evalsuite.engine as eng

    monkeypatch.setattr(eng, "cpu_cores", lambda: 4)
    e = Engine(tiny_model_path, quantization="int8")
    assert (e.replicas, e.threads) == (4, 1)
    e.close()
    e = Engine(tiny_model_path, quantization="int8", threads=2)  # a thread count set: cores // threads
    assert (e.replicas, e.threads) == (2, 2)
    e.close()


def _grow_ascending(lengths, budget):
    """The rule score_batch and IFD's forward used before the shared planner (the reference)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * lengths[order[end]] <= budget:
            end += 1
        groups.append(order[start:end])
        start = end
    return groups


def _widest_first(lengths, budget):
    """The rule the engine's loglikelihood used before the shared planner (the reference)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups, pos = [], 0
    while pos < len(order):
        idx = order[pos:pos + max(1, budget // max(lengths[order[pos]], 1))]
        groups.append(idx)
        pos += len(idx)
    return groups


def test_budget_batches_is_the_rule_each_scoring_pass_had():
    """One planner for forward_batch, score_batch and IFD's transformers forward gives exactly the
    batches each built before (so eval and IFD scores are unchanged), within the padded budget."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from evalsuite.engine import budget_batches

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.integers(1, 300), max_size=60), st.integers(1, 2000))
    def check(lengths, budget):
        asc, desc = budget_batches(lengths, budget), budget_batches(lengths, budget, longest_first=True)
        assert asc == _grow_ascending(lengths, budget) and desc == _widest_first(lengths, budget)
        for groups in (asc, desc):
            assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
            assert all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget for g in groups)
    check()
