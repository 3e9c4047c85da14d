"""Evol-Instruct: elimination reasons and counted outcomes."""
import json
import random

from synth.evolve import DIMENSIONS, eliminate, evolve, parse_evolved
from synth.llm import LLMConfig, Sampling, load_llm

ORIG = "A farmer has 12 cows and buys 5 more. How many cows does he have?"


def test_eliminate_reasons():
    assert eliminate(ORIG, None) == "empty"
    assert eliminate(ORIG, "I'm sorry, I cannot rewrite this question for you at all.") == "refusal"
    assert eliminate(ORIG, "How many?") == "too_short"
    assert eliminate(ORIG, ORIG.upper() + " ") == "copy"
    assert eliminate(ORIG, "New question: " + ORIG + " Then he sells 3 of them to a neighbour.") == "leaked_prompt"
    assert eliminate(ORIG, ORIG + " Then he sells 3 of them to a neighbour, how many remain?") is None
    assert parse_evolved("New question: Why?\n\nAnswer: because") == "Why?"


def test_evolve_counts_kept_eliminated_and_parse_failures(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "Question: keep", "responses": ["New question: keep this one but with three extra conditions added"]},
        {"match": "Question: copy", "responses": ["New question: copy me please now"]},
        {"match": "Question: blank", "responses": ["   "]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    out, stats = evolve(llm, ["keep me", "copy me please now", "blank"], random.Random(0), Sampling())
    assert out[0][0].startswith("keep this one") and out[1][0] is None and out[2][0] is None
    assert all(d in DIMENSIONS for _, d in out)
    assert stats["kept"] == 1 and stats["eliminated"] == {"copy": 1} and stats["parse_failures"] == 1
    assert sum(stats["by_dimension"].values()) == 1


def test_compliance_check_eliminates_what_does_not_keep_the_intent(tmp_path):
    from synth.evolve import check_evolutions, parse_verdict

    assert parse_verdict("Verdict: yes") is True and parse_verdict("no, it drifts") is False
    assert parse_verdict("maybe") is None
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [{"match": "Rewritten: capital", "responses": ["Verdict: no"]},
                                            {"match": "Rewritten: huh", "responses": ["hmm"]},
                                            {"match": "Check a rewritten", "responses": ["Verdict: yes"]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    out = check_evolutions(llm, [ORIG] * 3, [ORIG + " Then he sells 3.", "capital of Spain?", "huh"],
                           ["depth", "breadth", "depth"], Sampling())
    assert [o["ok"] for o in out] == [True, False, False]
    assert [o["reason"] for o in out] == ["", "check_failed", "check_unparsed"]
    assert out[0]["prompt"][-1] == {"role": "assistant", "content": "Verdict:"}
