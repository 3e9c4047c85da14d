"""Role-play dialogues: roles from data, every added turn verified, a failed turn ends the dialogue."""
import json
import random

import pytest

from synth import gate
from synth.generate import SynthConfig
from synth.ledger import Ledger
from synth.llm import LLMConfig, load_llm
from synth.multiturn import extend, load_roles, parse_followup


def test_parse_followup_and_roles():
    assert parse_followup("User: And why is that?\nAssistant: Because.") == "And why is that?"
    assert parse_followup("User: ok") is None
    roles = load_roles()
    assert len(roles) >= 3 and {"beginner", "reviewer", "harder"} <= {r["name"] for r in roles}


def test_bad_roles_file_is_a_clear_error(tmp_path):
    (tmp_path / "roles.yaml").write_text("- name: x\n")
    with pytest.raises(ValueError, match="roles\\[0\\]"):
        load_roles(str(tmp_path))


def _items(llm, cfg, kind, questions):
    ledger = Ledger(llm)
    items = [{"kind": kind, "instruction": q, "deficiency": {"id": "d", "ability": "arithmetic"}, "topic": "t",
              "provenance": []} for q in questions]
    gate.answer(ledger, items, cfg, 0)
    gate.verify(ledger, items, cfg, 1)
    for it in items:
        assert it["check"].verifies
        it.update(messages=[{"role": "user", "content": it["instruction"]},
                            {"role": "assistant", "content": it["response"]}], turn_checks=[], roles=[])
    return ledger, items


def test_dialogues_reach_four_turns_each_verified():
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    cfg = SynthConfig(samples_per_instruction=2)
    ledger, items = _items(llm, cfg, "math", ["Ann has 3 bags of 4 apples. How many apples?", "What is 12 times 3?"])
    stats = extend(ledger, items, [4, 2], cfg, random.Random(0), seed=5)
    assert [it["messages"][-1]["role"] for it in items] == ["assistant", "assistant"]
    assert [sum(m["role"] == "user" for m in it["messages"]) for it in items] == [4, 2]
    assert stats["turns_added"] == 4 and stats["completed"] == 2
    assert all(t["method"] == "pot_and_majority" and t["passed"] for it in items for t in it["turn_checks"])
    assert len(set(items[0]["roles"])) == 3     # roles change turn by turn
    assert ledger.steps["followup"]["calls"] == 3 and ledger.steps["pot_turn"]["calls"] == 3


def test_a_failing_turn_ends_the_dialogue(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "Continue the conversation", "responses": ["User: Are you sure about that?"]},
        {"match": "Write a short Python program", "responses": ["```python\nprint(12)\n```"]},
        {"match": "Are you sure", "responses": ["Sorry, it is 13.\nThe answer is 13."]},
        {"match": "Solve the math", "responses": ["3 × 4 = 12\nThe answer is 12."]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    cfg = SynthConfig(samples_per_instruction=1, pot_programs=1)
    ledger, items = _items(llm, cfg, "math", ["Ann has 3 bags of 4 apples. How many apples?"])
    stats = extend(ledger, items, [3], cfg, random.Random(0), seed=5)
    # the follow-up's answer (13) disagrees with the program (12): the dialogue stays one verified turn
    assert len(items[0]["messages"]) == 2 and stats["stopped"] == {"routes_disagree": 1}


def test_followup_constraints_come_from_the_failed_checkers():
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    cfg = SynthConfig(samples_per_instruction=2)
    d = {"id": "d", "ability": "following the instruction", "evidence": {
        "checks": [{"id": "punctuation:no_comma", "kwargs": {}}]}}
    ledger = Ledger(llm)
    items = [{"kind": "instruction", "deficiency": d, "topic": "t", "provenance": [], "turn_checks": [], "roles": [],
              "messages": [{"role": "user", "content": "Write a note."}, {"role": "assistant", "content": "Hi friend"}]}
             for _ in range(3)]
    extend(ledger, items, [2, 2, 2], cfg, random.Random(0), seed=5)
    drawn = [c["id"] for it in items for t in it["turn_checks"] for c in t["constraints"][:1]]
    assert drawn and set(drawn) == {"punctuation:no_comma"}


def test_the_default_config_reaches_four_turn_dialogues_through_the_stage(tmp_path):
    from evalsuite.records import read_records
    from synth.generate import synthesize

    defs = [{"id": f"def-{i}", "ability": "multi-step arithmetic", "error": "", "tasks": ["math_offline"],
             "tags": [], "impact": 0.1} for i in range(5)]
    stats = synthesize(load_llm(LLMConfig(backend="fake", model="builtin")), defs, SynthConfig(), 0,
                       tmp_path / "r.jsonl", seed=2)
    turns = [r["meta"]["turns"] for r in read_records(tmp_path / "r.jsonl")]
    assert max(turns) == SynthConfig().max_turns == 4 and stats["multiturn"]["completed"] >= 1
    assert all(t["passed"] for r in read_records(tmp_path / "r.jsonl") for t in r["meta"]["verification"].get("turns", []))
