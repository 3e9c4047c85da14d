"""synthesize stage with the fake teacher: records, provenance, drops by reason, verification."""
import json

from evalsuite.records import read_records
from synth.generate import NearCopyFilter, SynthConfig, parse_instruction, synthesize
from synth.llm import LLMConfig, load_llm

DEFS = [{"id": "def-a", "ability": "multi-step arithmetic", "error": "stops early", "count": 3,
         "tags": ["arithmetic"], "macro": ["Math Reasoning"]},
        {"id": "def-b", "ability": "following formatting constraints", "error": "", "count": 1, "tags": []},
        {"id": "def-c", "ability": "not served", "error": "", "count": 1, "tags": []}]


def test_parse_instruction_and_near_copy():
    assert parse_instruction("Question: How many legs do 3 cats have?\nAnswer: 12") == "How many legs do 3 cats have?"
    assert parse_instruction("1. First question here\n2. second") == "First question here"
    assert parse_instruction("  ") is None
    f = NearCopyFilter(["Natalia sold clips to 48 of her friends in April and then half as many in May."])
    assert f.hits("natalia sold clips to 48 of her friends in april, and then half as many in may!")
    assert not f.hits("Tom sold 12 apples on Monday and twice as many on Tuesday.")


def test_synthesize_builtin_fake_writes_valid_records(tmp_path):
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    cfg = SynthConfig(per_deficiency=3, top_k=2, evolve_share=0.5, multiturn_share=0.5, max_turns=3)
    out = tmp_path / "records.jsonl"
    stats = synthesize(llm, DEFS, cfg, round_idx=2, out_path=out, seed=7)
    recs = read_records(out)
    assert len(recs) == stats["records"] == 6
    assert {r["meta"]["deficiency_id"] for r in recs} == {"def-a", "def-b"}
    assert all(r["source"] == "synth" and r["meta"]["round"] == 2 and r["meta"]["verified"] for r in recs)
    assert any(r["meta"]["evolved"] for r in recs) and any(r["meta"]["evolved"] is None for r in recs)
    assert any(len(r["messages"]) >= 4 for r in recs) and stats["multi_turn_records"] >= 1
    assert all(r["messages"][-1]["role"] == "assistant" for r in recs)
    by_id = {d["id"]: d for d in DEFS}
    for r in recs:  # a record carries the tags of the deficiency it serves
        d = by_id[r["meta"]["deficiency_id"]]
        assert r["tags"] == {"fine": d["tags"], "macro": d.get("macro", [])}
    assert stats["instructions"]["dropped"].get("over_budget", 0) >= 1  # oversampled prompts beyond the budget
    assert stats["verify"]["numeric_checked"] >= 1
    again = tmp_path / "again.jsonl"
    synthesize(llm, DEFS, cfg, round_idx=2, out_path=again, seed=7)
    assert out.read_text() == again.read_text()  # deterministic


def test_drops_benchmark_copies_parse_failures_and_disagreement(tmp_path):
    bench = "Tom has 3 bags with 12 apples each. He eats 5 apples. How many apples are left?"
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "Topic:", "responses": ["Question: " + bench, "no label, just rambling without a question\n\n",
                                          "Question: A train travels 60 km in 2 hours. How many km per hour is that?",
                                          "Question: Write the word dog in capital letters please."]},
        {"match": "train travels", "responses": ["It is 60 / 2 = 30 km per hour. The answer is 30.",
                                                 "I think the answer is 25."]},
        {"match": "dog in capital", "responses": ["Sure, here it is in capitals: DOG"]}],
        "default": ""}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    cfg = SynthConfig(per_deficiency=4, oversample=1.0, top_k=1, evolve_share=0.0, multiturn_share=0.0)
    stats = synthesize(llm, DEFS, cfg, 0, tmp_path / "r.jsonl", seed=0, avoid_texts=[bench])
    ins = stats["instructions"]
    assert ins["prompted"] == 4 and ins["dropped"] == {"near_benchmark": 1}
    # 'no label, just rambling' is taken as the question itself (tolerant), then its answer is empty
    assert stats["responses"]["dropped"] == {"empty": 1}
    assert stats["verify"]["dropped"] == {"numeric_disagreement": 1}
    recs = read_records(tmp_path / "r.jsonl")
    assert [r["messages"][0]["content"] for r in recs] == ["Write the word dog in capital letters please."]
    assert recs[0]["meta"]["verify_method"] == "basic"

    keep = SynthConfig(**{**cfg.__dict__, "keep_unverified": True})
    llm2 = load_llm(LLMConfig(backend="fake", model=str(script)))
    synthesize(llm2, DEFS, keep, 0, tmp_path / "k.jsonl", seed=0, avoid_texts=[bench])
    flags = {r["messages"][0]["content"][:7]: r["meta"]["verified"] for r in read_records(tmp_path / "k.jsonl")}
    assert flags == {"A train": False, "Write t": True}


def test_no_deficiencies_writes_empty_file(tmp_path):
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    stats = synthesize(llm, [], SynthConfig(), 0, tmp_path / "r.jsonl", seed=0)
    assert stats["records"] == 0 and (tmp_path / "r.jsonl").read_text() == ""
