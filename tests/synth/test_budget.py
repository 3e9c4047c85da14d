"""The round budget: quotas by impact, prompts sized by measured yield, budget following yield."""
from evalsuite.records import read_records
from synth.budget import Budget, allocate, split
from synth.generate import SynthConfig, synthesize
from synth.llm import LLMConfig, load_llm

from tests.synth.test_generate import DEFS

A, B, C = {"id": "a", "impact": 0.5}, {"id": "b", "impact": 0.25}, {"id": "c", "impact": 0.25}


def test_split_and_allocate_by_impact():
    assert split(10, [3, 1]) == [8, 2] and split(5, [0, 0]) == [3, 2] and split(0, [1, 1]) == [0, 0]
    assert allocate([A, B, C], 10) == {"a": 4, "b": 3, "c": 3}   # 1 each + 7 split 2:1:1 = 3.5, 1.75, 1.75
    assert sum(allocate([A, B, C], 301).values()) == 301


def test_the_round_quota_is_per_round_when_that_is_larger():
    assert sum(Budget([A, B, C], 3, per_deficiency=4, per_round=300).quota.values()) == 300
    assert sum(Budget([A, B, C], 3, per_deficiency=100, per_round=60).quota.values()) == 300
    b = Budget([A, B], 3, per_deficiency=10, tokens_per_deficiency=1000)     # 3 served, 1 untrainable
    assert b.quota == {"a": 20, "b": 10} and b.tokens == {"a": 2000, "b": 1000}


def test_prompts_follow_measured_yield_and_what_the_tokens_left_buy():
    b = Budget([{"id": "a"}, {"id": "b"}], 2, per_deficiency=20, tokens_per_deficiency=10_000)
    assert b.wants({}, {}, oversample=2.0, max_prompts=32) == {"a": 32, "b": 32}    # untried: capped 2 x missing
    b.sent("a", 10), b.sent("b", 10)
    # a kept 5 of 10 prompts (yield 0.5): 15 missing need 30; b kept 1 (yield 0.1): 18 missing need 180, but its
    # 10,000 - 6,000 tokens left buy ~7 prompts at 600 a prompt
    assert b.wants({"a": 5, "b": 1}, {"a": 1000, "b": 6000}, 2.0) == {"a": 30, "b": 7}
    assert b.wants({"a": 21, "b": 1}, {"a": 1000, "b": 10_000}, 2.0) == {}            # a done, b spent


def test_done_and_dry_deficiencies_hand_their_budget_to_those_that_yield():
    b = Budget([A, B, C], 3, per_deficiency=10, tokens_per_deficiency=1000)
    quota0 = dict(b.quota)
    for k in "abc":
        b.sent(k, 20)
    assert quota0 == {"a": 14, "b": 8, "c": 8} and b.tokens == {"a": 1400, "b": 800, "c": 800}
    kept, spent = {"a": 14, "b": 2, "c": 0}, {"a": 500, "b": 700, "c": 300}
    moved = b.follow_yield(kept, spent)
    # c (dry) gives its 8 records of quota, split by yield: a (done, 0.7 a prompt) 7, b (0.1) 1; then the
    # unspent tokens of c (500) go to the two still short, 7:1
    assert moved == {"quota": 8, "tokens": 500} and b.dry == {"c"}
    assert b.quota == {"a": 21, "b": 9, "c": 0} and b.tokens == {"a": 1838, "b": 862, "c": 300}
    assert "c" not in b.wants(kept, spent, 2.0)
    assert b.follow_yield(kept, spent) == {"quota": 0, "tokens": 0}     # nothing left to move
    # b spends its tokens one record short: that record of quota goes to a, which still has tokens
    assert b.follow_yield({"a": 14, "b": 8}, {"a": 900, "b": 862}) == {"quota": 1, "tokens": 0}
    assert b.quota == {"a": 22, "b": 8, "c": 0} and b.dry == {"b", "c"}


def test_nothing_moves_without_a_deficiency_that_yields():
    b = Budget([A], 1, per_deficiency=5, tokens_per_deficiency=1000)
    b.sent("a", 10)
    assert b.follow_yield({"a": 0}, {"a": 100}) == {"quota": 0, "tokens": 0} and not b.dry
    assert b.wants({"a": 0}, {"a": 100}, 2.0) == {"a": 10}               # still tries (max_attempts bounds it)


class WrongPrograms:
    """The fake teacher, with every program-of-thought printing -1: no math question verifies."""

    def __init__(self, llm):
        self.llm = llm

    def generate(self, prompts, sampling):
        outs = self.llm.generate(prompts, sampling)
        return ["print(-1)" if "Write a short Python program" in p[0]["content"] + p[-1]["content"] else o
                for p, o in zip(prompts, outs)]

    def close(self):
        pass


def test_a_dry_deficiencys_quota_and_tokens_go_to_the_one_that_yields(tmp_path):
    defs = [{**DEFS[0], "impact": 0.5}, {**DEFS[1], "impact": 0.5}]
    cfg = SynthConfig(per_deficiency=3, top_k=2, multiturn_share=0.0, evolve_share=0.0, pool_seed_share=0.0,
                      max_attempts=4, teacher_tokens_per_deficiency=0)
    llm = WrongPrograms(load_llm(LLMConfig(backend="fake", model="builtin")))
    stats = synthesize(llm, defs, cfg, 0, tmp_path / "r.jsonl", seed=0)
    m, i = stats["by_deficiency"]["def-m"], stats["by_deficiency"]["def-i"]
    assert m["records"] == 0 and m["dry"] and m["attempts"] == 1 and m["yield_per_prompt"] == 0.0
    assert (m["quota"], i["quota"]) == (3, 3) and (m["final_quota"], i["final_quota"]) == (0, 6)
    assert i["records"] == 6 and stats["reallocated"]["quota"] == 3        # the round still gets its 6 records
    assert i["tokens_per_kept_record"] == round(i["tokens"] / 6, 1)
    assert [r["meta"]["kind"] for r in read_records(tmp_path / "r.jsonl")] == ["instruction"] * 6
    off = synthesize(WrongPrograms(load_llm(LLMConfig(backend="fake", model="builtin"))), defs,
                     SynthConfig(**{**cfg.__dict__, "follow_yield": False}), 0, tmp_path / "o.jsonl", seed=0)
    assert off["records"] == 3 and off["by_deficiency"]["def-m"]["attempts"] == 4   # without it: 3, math retried
