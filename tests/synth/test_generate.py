"""synthesize with the fake teacher: verification by kind, quotas, provenance, counts, one call per step."""
import json

from evalsuite.records import read_records
from synth.generate import SynthConfig, synthesize
from synth.llm import LLMConfig, load_llm
from synth.propose import NearCopyFilter, parse_instruction
from synth.verify import VERIFYING

DEFS = [{"id": "def-m", "ability": "multi-step arithmetic", "error": "stops early", "count": 3,
         "tasks": ["math_offline"], "tags": ["arithmetic"], "macro": ["Math Reasoning"]},
        {"id": "def-i", "ability": "following formatting constraints", "error": "", "count": 2,
         "tasks": ["ifeval_offline"], "tags": []},
        {"id": "def-c", "ability": "writing correct python code", "error": "", "count": 2,
         "tasks": ["humaneval_offline"], "tags": []},
        {"id": "def-o", "ability": "factual recall", "error": "", "count": 1, "tasks": ["mmlu"], "tags": []},
        {"id": "def-x", "ability": "not served", "error": "", "count": 1, "tasks": ["math_offline"], "tags": []}]


class Counting:
    """Wraps a backend; records every generate call's size."""

    def __init__(self, llm):
        self.llm, self.calls = llm, []

    def generate(self, prompts, sampling):
        self.calls.append(len(prompts))
        return self.llm.generate(prompts, sampling)

    def close(self):
        pass


def test_parse_instruction_and_near_copy():
    assert parse_instruction("Question: How many legs do 3 cats have?\nAnswer: 12") == "How many legs do 3 cats have?"
    assert parse_instruction("Task: Write `f(x)` that doubles x.") == "Write `f(x)` that doubles x."
    assert parse_instruction("1. First question here\n2. second") == "First question here"
    assert parse_instruction("  ") is None
    f = NearCopyFilter(["Natalia sold clips to 48 of her friends in April and then half as many in May."])
    assert f.hits("natalia sold clips to 48 of her friends in april, and then half as many in may!")
    assert not f.hits("Tom sold 12 apples on Monday and twice as many on Tuesday.")


def test_every_kind_verified_by_its_named_check(tmp_path):
    llm = Counting(load_llm(LLMConfig(backend="fake", model="builtin")))
    cfg = SynthConfig(per_deficiency=3, top_k=4, multiturn_share=0.5, max_turns=4)
    out = tmp_path / "records.jsonl"
    stats = synthesize(llm, DEFS, cfg, round_idx=2, out_path=out, seed=7)
    recs = read_records(out)
    assert len(recs) == stats["records"] == 12
    assert stats["kinds"] == {"def-m": "math", "def-i": "instruction", "def-c": "code", "def-o": "other"}
    by_kind = {}
    for r in recs:
        m = r["meta"]
        by_kind.setdefault(m["kind"], []).append(r)
        v = m["verification"]
        # verified only with a named passed check, on every assistant turn
        assert m["verified"] == (v["passed"] and v["method"] in VERIFYING
                                 and all(t["passed"] and t["method"] in VERIFYING for t in v.get("turns", [])))
        assert r["messages"][-1]["role"] == "assistant" and m["turns"] == len(r["messages"]) // 2
        assert m["deficiency"]["id"] == m["deficiency_id"] and m["round"] == 2
        steps = [p["step"] for p in m["provenance"]]
        assert steps[0] == "instruct" and "answer" in steps
        assert all(isinstance(p["prompt"], list) and "output" in p for p in m["provenance"])
    assert {k: len(v) for k, v in by_kind.items()} == {"math": 3, "instruction": 3, "code": 3, "other": 3}
    assert all(r["meta"]["verified"] for k in ("math", "instruction", "code") for r in by_kind[k])
    assert {r["meta"]["verification"]["method"] for r in by_kind["math"]} == {"pot_and_majority"}
    assert {r["meta"]["verification"]["method"] for r in by_kind["code"]} == {"code_tests"}
    assert all("pot" in [p["step"] for p in r["meta"]["provenance"]] for r in by_kind["math"])
    assert all(r["meta"]["verification"]["tests"] for r in by_kind["code"])
    for r in by_kind["instruction"]:
        v = r["meta"]["verification"]
        assert v["method"] == "ifeval_checkers" and v["constraints"] and "repaired" in v
        assert all(c["text"] in r["messages"][0]["content"] for c in v["constraints"])
    assert not any(r["meta"]["verified"] for r in by_kind["other"])    # a judge score never verifies
    assert all(r["meta"]["verification"]["method"] == "judge" for r in by_kind["other"])
    # dialogues up to max_turns, every added turn checked
    assert stats["multi_turn_records"] >= 1 and max(r["meta"]["turns"] for r in recs) <= 4
    assert any(r["meta"]["roles"] for r in recs)
    # one call per step per attempt: no step ever sent one prompt at a time across items
    assert stats["steps"]["answer"]["calls"] == 1 and stats["steps"]["instruct"]["calls"] == 1
    assert stats["steps"]["answer"]["prompts"] > 10
    assert stats["teacher_tokens"] > 0 and stats["tokens_per_kept_record"] > 0
    assert stats["filters"]["accept"]["dropped"].get("over_quota", 0) >= 1
    again = tmp_path / "again.jsonl"
    synthesize(load_llm(LLMConfig(backend="fake", model="builtin")), DEFS, cfg, round_idx=2, out_path=again, seed=7)
    assert out.read_text() == again.read_text()  # deterministic


def _scripted(tmp_path, rules):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": rules, "default": ""}))
    return load_llm(LLMConfig(backend="fake", model=str(script)))


def test_math_routes_disagreeing_drop_the_record_and_attempts_retry(tmp_path):
    bench = "Tom has 3 bags with 12 apples each. He eats 5 apples. How many apples are left?"
    rules = [{"match": "Write one new question", "responses": ["Question: " + bench,
                                                               "Question: A train goes 60 km in 2 hours. How many km per hour?",
                                                               "Question: Sam has 4 boxes of 5 pens. How many pens?"]},
             # a backend that honours the prefilled fence returns only the code after it
             {"match": "Write a short Python program", "responses": ["speed = 60 / 2\nprint(int(speed))", "```python\nprint(21)\n```"]},
             {"match": "train goes", "responses": ["60 / 2 = 30\nThe answer is 30.", "The answer is 25."]},
             {"match": "boxes of 5 pens", "responses": ["4 + 5 = 9\nThe answer is 9."]}]
    cfg = SynthConfig(per_deficiency=2, oversample=1.5, top_k=1, evolve_share=0.0, multiturn_share=0.0,
                      samples_per_instruction=2, pot_programs=1, math_rule="pot", max_attempts=2)
    stats = synthesize(_scripted(tmp_path, rules), DEFS, cfg, 0, tmp_path / "r.jsonl", seed=0, avoid_texts=[bench])
    recs = read_records(tmp_path / "r.jsonl")
    # the train question: program prints 30 and one worked answer says 30 -> kept; the pens question:
    # program 21 vs worked 9 -> dropped; the benchmark copy never reaches the teacher's answer step
    assert [r["messages"][0]["content"] for r in recs] == ["A train goes 60 km in 2 hours. How many km per hour?"]
    assert recs[0]["messages"][1]["content"] == "60 / 2 = 30\nThe answer is 30."
    assert stats["filters"]["instructions"]["dropped"]["near_benchmark"] >= 1
    assert stats["filters"]["verify_math"]["dropped"]["routes_disagree"] >= 1
    assert stats["by_deficiency"]["def-m"]["attempts"] == 2        # quota unmet: a second attempt


def test_unverified_records_only_by_policy(tmp_path):
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    defs = [DEFS[3]]   # the other kind: judge only
    cfg = SynthConfig(per_deficiency=2, top_k=1, multiturn_share=0.0, evolve_share=0.0)
    assert synthesize(llm, defs, cfg, 0, tmp_path / "a.jsonl", seed=0)["records"] == 2
    none = SynthConfig(**{**cfg.__dict__, "train_unverified": "none"})
    stats = synthesize(llm, defs, none, 0, tmp_path / "b.jsonl", seed=0)
    assert stats["records"] == 0 and stats["by_deficiency"]["def-o"]["skipped"] and "instruct" not in stats["steps"]
    strict = SynthConfig(**{**cfg.__dict__, "judge_min_score": 5})
    stats = synthesize(llm, defs, strict, 0, tmp_path / "c.jsonl", seed=0)
    assert stats["records"] == 0 and stats["filters"]["accept"]["dropped"] == {"judge_low_score": 12}
    assert stats["by_deficiency"]["def-o"]["attempts"] == 3       # max_attempts, quota never met


def test_teacher_token_budget_stops_oversampling(tmp_path):
    rules = [{"match": "Write one new question", "responses": ["Question: Sam has 4 boxes of 5 pens. How many pens?"]},
             {"match": "Write a short Python program", "responses": ["```python\nprint(20)\n```"]},
             {"match": "boxes of 5 pens", "responses": ["4 + 5 = 9\nThe answer is 9."]}]
    cfg = SynthConfig(per_deficiency=2, top_k=1, evolve_share=0.0, multiturn_share=0.0, max_attempts=5,
                      teacher_tokens_per_deficiency=10)
    stats = synthesize(_scripted(tmp_path, rules), DEFS, cfg, 0, tmp_path / "r.jsonl", seed=0)
    assert stats["records"] == 0 and stats["by_deficiency"]["def-m"]["attempts"] == 1


def test_no_deficiencies_writes_empty_file(tmp_path):
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    stats = synthesize(llm, [], SynthConfig(), 0, tmp_path / "r.jsonl", seed=0)
    assert stats["records"] == 0 and (tmp_path / "r.jsonl").read_text() == ""


def test_train_unverified_all_keeps_failed_records_marked_unverified(tmp_path):
    rules = [{"match": "Write one new question", "responses": ["Question: Sam has 4 boxes of 5 pens. How many pens?"]},
             {"match": "Write a short Python program", "responses": ["```python\nprint(20)\n```"]},
             {"match": "boxes of 5 pens", "responses": ["4 + 5 = 9\nThe answer is 9."]}]
    cfg = SynthConfig(per_deficiency=1, top_k=1, evolve_share=0.0, multiturn_share=0.0, max_attempts=1,
                      train_unverified="all")
    synthesize(_scripted(tmp_path, rules), DEFS, cfg, 0, tmp_path / "r.jsonl", seed=0)
    (rec,) = read_records(tmp_path / "r.jsonl")
    assert rec["meta"]["verified"] is False and rec["meta"]["verification"]["reason"] == "routes_disagree"
    assert rec["messages"][1]["content"] == "4 + 5 = 9\nThe answer is 9."


class Recording(Counting):
    """Counting, plus every prompt; evolve-check prompts of an evolution naming ``reject`` get a no."""

    def __init__(self, llm, reject=None):
        super().__init__(llm)
        self.prompts, self.reject = [], reject

    def generate(self, prompts, sampling):
        self.prompts.extend(prompts)
        outs = super().generate(prompts, sampling)
        return ["no" if self.reject and "Check a rewritten question" in p[0]["content"]
                and self.reject in p[-2]["content"] else o for p, o in zip(prompts, outs)]


def test_the_diagnosed_mistake_reaches_every_kinds_synthesis_prompt(tmp_path):
    """What diagnosis found (mistake, shortcut, the scorer's finding or failed checks) is in the
    instruction prompt of the kind: instruct (math), instruct_code (code), request (IF)."""
    defs = [{**DEFS[0], "shortcut": "It reported the first product.",
             "evidence": {"key": "numeric:wrong_result", "findings": ["expected 31, the student gave 36"]}},
            {**DEFS[1], "error": "It used capitals.", "shortcut": "It ignored the case rule.",
             "evidence": {"key": "checker:change_case:english_lowercase",
                          "checks": [{"id": "change_case:english_lowercase", "kwargs": {}}]}},
            {**DEFS[2], "error": "It crashed on an empty list.", "shortcut": "It coded the common case only.",
             "evidence": {"key": "code:IndexError",
                          "findings": ["the tests stopped with IndexError at `assert f([]) == 0`"]}}]
    llm = Recording(load_llm(LLMConfig(backend="fake", model="builtin")))
    synthesize(llm, defs, SynthConfig(per_deficiency=1, top_k=3, max_attempts=1, multiturn_share=0.0),
               0, tmp_path / "r.jsonl", seed=0)
    last = {}
    for p in llm.prompts:
        for marker in ("Write one new question", "Write one new Python programming task", "Write one writing request"):
            if p[0]["content"].startswith(marker):
                last.setdefault(marker, []).append(p[-2]["content"])
    math_p, code_p, if_p = (last[m][0] for m in ("Write one new question", "Write one new Python programming task",
                                                 "Write one writing request"))
    assert "Student's mistake: stops early" in math_p and "Shortcut the student took: It reported the first product." \
        in math_p and "Scorer's finding: expected 31, the student gave 36" in math_p
    assert "It crashed on an empty list." in code_p and "It coded the common case only." in code_p \
        and "assert f([]) == 0" in code_p
    assert "Skill: following formatting constraints" in if_p and "It used capitals." in if_p \
        and "It ignored the case rule." in if_p and "Failed checks: change_case:english_lowercase" in if_p


def test_allocate_splits_the_round_by_impact_with_a_floor_of_one():
    from synth.budget import allocate

    defs = [{"id": "a", "impact": 0.6}, {"id": "b", "impact": 0.3}, {"id": "c", "impact": 0.0}]
    assert allocate(defs, 12) == {"a": 7, "b": 4, "c": 1}      # 1 each + 9 split 6:3:0
    assert sum(allocate(defs, 5).values()) == 5 and allocate(defs, 2) == {"a": 1, "b": 1, "c": 1}
    assert allocate([{"id": "x"}, {"id": "y"}], 8) == {"x": 4, "y": 4}   # no impact known: equal


def test_quota_and_token_budget_follow_impact_through_the_stage(tmp_path):
    defs = [{**DEFS[0], "impact": 0.3}, {**DEFS[1], "impact": 0.1}]
    cfg = SynthConfig(per_deficiency=3, top_k=2, multiturn_share=0.0, teacher_tokens_per_deficiency=1000,
                      max_attempts=3)
    stats = synthesize(load_llm(LLMConfig(backend="fake", model="builtin")), defs, cfg, 0, tmp_path / "r.jsonl", seed=0)
    by = stats["by_deficiency"]
    assert (by["def-m"]["quota"], by["def-i"]["quota"]) == (4, 2)             # 6 = 1 + 1 + 4 split 3:1
    assert (by["def-m"]["token_budget"], by["def-i"]["token_budget"]) == (1334, 667)
    assert by["def-m"]["records"] <= 4 and by["def-i"]["records"] <= 2


def test_pool_seeds_are_evolved_checked_and_verified_inside_synthesize(tmp_path):
    """Pool seeds stand in for a share of the proposals: each is evolved along a dimension and
    compliance-checked inside the stage; a rejected evolution, a benchmark copy and a too-short
    seed are eliminated with their reasons; the survivors are answered and verified."""
    bench = "Ann has 5 boxes of 7 pens and gives away 3 pens. How many pens does she have left?"
    seeds = {"def-m": [{"id": f"p{i}", "instruction": q, "match": "tags", "score": 0.5} for i, q in enumerate([
        "A farmer has 12 rows of 8 apple trees. How many apple trees are there?",
        "A ZEBRA herd of 9 families has 6 zebras each. How many zebras are in the herd?",
        bench, "Hi there",
        "A bus carries 4 classes of 25 pupils. How many pupils ride the bus?"])]}
    llm = Recording(load_llm(LLMConfig(backend="fake", model="builtin")), reject="ZEBRA")
    cfg = SynthConfig(per_deficiency=4, top_k=1, multiturn_share=0.0, evolve_share=0.0, pool_seed_share=0.5,
                      max_attempts=3)
    stats = synthesize(llm, DEFS, cfg, 0, tmp_path / "r.jsonl", seed=0, avoid_texts=[bench], pool_seeds=seeds)
    recs = read_records(tmp_path / "r.jsonl")
    from_pool = [r for r in recs if r["meta"]["pool_seed"]]
    assert from_pool and stats["from_pool_seeds"] == len(from_pool) and stats["pool_seeds"]["used"] == 4
    for r in from_pool:
        steps = [p["step"] for p in r["meta"]["provenance"]]
        assert steps[:3] == ["pool_seed", "evolve", "evolve_check"] and "instruct" not in steps
        assert r["meta"]["evolved"] and r["meta"]["original_instruction"] != r["messages"][0]["content"]
        assert r["meta"]["verified"] and r["meta"]["verification"]["method"] == "pot_and_majority"
    assert {r["meta"]["pool_seed"] for r in from_pool} == {"p0"}   # 4 of 8 prompts from seeds; p4 left for later
    f = stats["filters"]
    assert f["pool_seeds"]["dropped"] == {"near_benchmark": 1, "too_short": 1, "evolution_eliminated": 1}
    assert f["evolve_pool_seeds"]["dropped"] == {"check_failed": 1}
    assert any(r["meta"]["pool_seed"] is None for r in recs)      # the rest are the teacher's proposals


def test_select_seeds_by_tags_then_by_embedding():
    from synth.seeds import select_seeds

    def rec(i, text):
        return {"id": f"r{i}", "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}

    records = [rec(0, "Add the prices of three books in a shop."), rec(1, "Write a poem about rain in lowercase."),
               rec(2, "x"), rec(3, "Compute the total cost of five pens at 2 dollars.")]
    feats = [["fine:arithmetic"], ["fine:lowercase writing"], ["fine:arithmetic"], []]
    defs = [{"id": "a"}, {"id": "b"}]
    asked = []

    def similar(texts, k):
        asked.append(texts)
        return [(2, 0.9), (3, 0.8), (0, 0.7)]

    out = select_seeds(defs, records, feats, [["fine:arithmetic"], []], [["q1"], ["q2", "q3"]], similar, n=2)
    # a: the tag match r0 (r2 is too short to seed), then the nearest by embedding not taken yet
    assert [(s["id"], s["match"]) for s in out["a"]] == [("r0", "tags"), ("r3", "embedding")]
    assert [(s["id"], s["match"]) for s in out["b"]] == [("r3", "embedding"), ("r0", "embedding")]
    assert asked == [["q1"], ["q2", "q3"]]
