"""diagnose stage: parse failures skipped and counted, merge + rank, impact, empty input."""
import json

import pytest

from evalsuite.records import read_json, read_jsonl
from evalsuite.samples import split_rows
from synth.diagnose import DiagnoseConfig, diagnose, parse_diagnosis
from synth.llm import LLMConfig, load_llm


def _fail(task, i, q):
    return {"task": task, "doc_id": i, "split": "dev", "prompt": q, "target": "7", "response": "8",
            "extracted": "8", "correct": False, "metrics": {"acc": 0.0}}


def test_parse_diagnosis_variants():
    assert parse_diagnosis("Ability: Carrying in addition.\nError: forgot the carry") == \
        {"ability": "Carrying in addition", "error": "forgot the carry", "shortcut": ""}
    assert parse_diagnosis("Error: The student added.\nShortcut: It added the two numbers it saw. Then stopped.\n"
                           "Ability: multiplication")["shortcut"] == "It added the two numbers it saw."
    assert parse_diagnosis('{"ability": "units", "shortcut": "kept cm"}')["shortcut"] == "kept cm"
    assert parse_diagnosis('{"ability": "unit conversion", "error": "used cm"}')["ability"] == "unit conversion"
    assert parse_diagnosis("The student is wrong.") is None
    assert parse_diagnosis("Ability: 48 + 24 = 62") is None  # an echoed calculation is not an ability


def test_merge_rank_and_counted_parse_failures(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "Question: add", "responses": ["Ability: carrying in additions\nError: dropped the carry",
                                                  "Ability: Carrying in addition.\nError: forgot to carry"]},
        {"match": "Question: fmt", "responses": ["Ability: following the output format\nError: used caps"]},
        {"match": "Question: junk", "responses": ["Sure, the answer is 7."]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    rows = [_fail("math", 1, "add 1"), _fail("math", 2, "add 2"), _fail("math", 3, "add 3"),
            _fail("ifeval", 1, "fmt 1"), _fail("math", 4, "junk 4"),
            {**_fail("math", 5, "add 5"), "correct": True}, {**_fail("math", 6, "add 6"), "split": "test"}]
    dev, failures = split_rows(rows)  # the one place failures are chosen: wrong answers on dev
    assert len(dev) == 6 and len(failures) == 5
    tags = {"math/1": {"fine": ["addition"], "macro": ["Math Reasoning"]}}
    stats = diagnose(llm, failures, tags, DiagnoseConfig(), tmp_path / "out", task_sizes={"math": 10, "ifeval": 4})
    assert stats["failures"] == 5 and stats["diagnosed"] == 5
    assert stats["parse_failures"] == 1 and stats["parsed"] == 4 and stats["parse_rate"] == 0.8
    out = read_json(tmp_path / "out" / "deficiencies.json")
    defs = out["deficiencies"]
    assert [d["count"] for d in defs] == [3, 1]
    top = defs[0]
    assert top["tasks"] == ["math"] and sorted(top["examples"]) == ["math/1", "math/2", "math/3"]
    assert top["impact"] == pytest.approx(3 / 10 / 2)  # 3 of 10 math dev items, averaged over 2 tasks
    assert defs[1]["impact"] == pytest.approx(1 / 4 / 2) and "addition" in top["tags"]
    assert top["ability"] and top["error"] and top["id"].startswith("def-") and defs[0]["id"] != defs[1]["id"]
    rows = read_jsonl(tmp_path / "out" / "diagnoses.jsonl")
    bad = [r for r in rows if not r["parsed"]]
    assert len(bad) == 1 and bad[0]["key"] == "math/4" and bad[0]["raw"].startswith("Error: The student Sure, the answer is 7.")  # raw keeps the prefill
    report = (tmp_path / "out" / "report.md").read_text()
    assert "carrying" in report.lower() and "Unparseable" in report


def test_max_items_spreads_over_tasks_and_top_k(tmp_path):
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    failures = [_fail("a", i, f"question a{i}") for i in range(10)] + [_fail("b", i, f"question b{i}") for i in range(2)]
    stats = diagnose(llm, failures, {}, DiagnoseConfig(max_items=4, top_k=1), tmp_path)
    rows = read_jsonl(tmp_path / "diagnoses.jsonl")
    assert stats["diagnosed"] == 4 and sorted(r["task"] for r in rows) == ["a", "a", "b", "b"]
    assert len(read_json(tmp_path / "deficiencies.json")["deficiencies"]) == 1


def test_zero_failures_writes_empty_list(tmp_path):
    stats = diagnose(None, [], {}, DiagnoseConfig(), tmp_path)
    assert read_json(tmp_path / "deficiencies.json")["deficiencies"] == [] and stats["diagnosed"] == 0
    assert "No deficiencies" in (tmp_path / "report.md").read_text()


def test_bad_failure_row_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"failure #0 is missing key\(s\) \['prompt'"):
        diagnose(None, [{"task": "t", "doc_id": 1, "target": "", "response": ""}], {}, DiagnoseConfig(), tmp_path)


def test_second_step_names_the_ability_from_the_error(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "Mistake: The student subtracted", "responses": ["dividing by two"]},  # a prefill continuation
        {"match": "Question: half", "responses": ["subtracted instead of halving.\nAbility: 10 - 2 = 8"]},
        {"match": "Question: none", "responses": ["is wrong"]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    stats = diagnose(llm, [_fail("m", 1, "half of 10"), _fail("m", 2, "none here")], {}, DiagnoseConfig(), tmp_path)
    assert stats["parsed"] == 1 and stats["parsed_in_step2"] == 1 and stats["parse_failures"] == 1
    d = read_json(tmp_path / "deficiencies.json")["deficiencies"][0]
    assert d["ability"] == "dividing by two" and d["error"] == "The student subtracted instead of halving."


def test_evidence_groups_first_names_the_deficiency_and_reaches_the_teacher(tmp_path):
    """Three IFEval items fail the same checker: one deficiency named by the checker, whatever the
    teacher said (one answer does not even parse); two wrong-number items with different teacher
    abilities stay two deficiencies (the key names only the family)."""
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "Question: if1", "responses": ["misspelled change_case.\nAbility: spelling"]},
        {"match": "Question: if2", "responses": ["wrote in capitals.\nAbility: lowercase writing"]},
        {"match": "Question: if3", "responses": ["Sure."]},
        {"match": "Question: m1", "responses": ["added.\nAbility: multiplication in word problems"]},
        {"match": "Question: m2", "responses": ["forgot minutes.\nAbility: converting units of time"]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    checks = json.dumps([{"id": "change_case:english_lowercase", "kwargs": {}}])
    ifs = [{**_fail("ifeval", i, f"if{i}"), "target": checks,
            "evidence": {"kind": "checker", "key": "checker:change_case:english_lowercase", "specific": True,
                         "failed": [{"id": "change_case:english_lowercase", "kwargs": {}}], "passed": []}}
           for i in (1, 2, 3)]
    ms = [{**_fail("math", i, f"m{i}"), "evidence": {"kind": "numeric", "key": "numeric:wrong_result", "specific": False,
                                                     "expected": "7", "given": "8", "last_operation": "4 + 4 = 8"}}
          for i in (1, 2)]
    prompts = []
    real_generate = llm.generate
    llm.generate = lambda ps, s: prompts.extend(ps) or real_generate(ps, s)
    stats = diagnose(llm, ifs + ms, {}, DiagnoseConfig(), tmp_path, task_sizes={"ifeval": 6, "math": 6})
    assert any("Scorer's finding: the checker rejected: change_case:english_lowercase" in p[-2]["content"]
               for p in prompts)
    assert any("Scorer's finding: expected 7, the student gave 8; its last step: 4 + 4 = 8" in p[-2]["content"]
               for p in prompts)
    defs = read_json(tmp_path / "deficiencies.json")["deficiencies"]
    top = defs[0]
    assert top["count"] == 3 and top["ability"] == "following the instruction change case: english lowercase"
    assert top["evidence"]["key"] == "checker:change_case:english_lowercase" and top["evidence"]["items"] == 3
    assert top["evidence"]["checks"] == [{"id": "change_case:english_lowercase", "kwargs": {}}]
    assert set(top["teacher_abilities"]) == {"spelling", "lowercase writing"}
    assert sorted(d["ability"] for d in defs[1:]) == ["converting units of time", "multiplication in word problems"]
    assert stats["grouped_by_evidence"] == 1 and stats["with_evidence"] == 5
    assert stats["evidence_keys"] == {"checker:change_case:english_lowercase": 3, "numeric:wrong_result": 2}


def test_one_call_gives_mistake_shortcut_and_ability_and_the_deficiency_keeps_them(tmp_path):
    """One teacher call per item returns all three; the deficiency, its report row and the
    evidence findings synthesis reads carry them (also when the ability came from step 2)."""
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "Mistake: The student", "responses": ["multiplying in word problems"]},
        {"match": "Question: m1", "responses": ["added 3 and 4.\nShortcut: It added the numbers it saw.\n"
                                                "Ability: multiplying in word problems"]},
        {"match": "Question: m2", "responses": ["summed the two numbers.\nShortcut: It added the numbers it saw."]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    calls = []
    real_generate = llm.generate
    llm.generate = lambda ps, s: calls.append(len(ps)) or real_generate(ps, s)
    ev = {"kind": "numeric", "key": "numeric:wrong_result", "specific": False, "expected": "12", "given": "7",
          "last_operation": "3 + 4 = 7"}
    diagnose(llm, [{**_fail("math", 1, "m1"), "evidence": ev}, {**_fail("math", 2, "m2"), "evidence": ev}], {},
             DiagnoseConfig(merge_by="words"), tmp_path)
    assert calls[0] == 2     # one call per failed item returns mistake, shortcut and ability together
    rows = read_jsonl(tmp_path / "diagnoses.jsonl")
    assert [r["shortcut"] for r in rows] == ["It added the numbers it saw."] * 2
    d = read_json(tmp_path / "deficiencies.json")["deficiencies"][0]
    assert d["count"] == 2 and d["shortcut"] == "It added the numbers it saw."
    assert d["error"].startswith("The student added 3 and 4")
    assert d["evidence"]["findings"] == ["expected 12, the student gave 7; its last step: 3 + 4 = 7"]
    assert "It added the numbers it saw." in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("merge_by,groups", [("embedding", 2), ("words", 3)])
def test_paraphrased_abilities_merge_by_embedding(merge_by, groups, tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "Question: a", "responses": ["added.\nAbility: multiplication in word problems"]},
        {"match": "Question: b", "responses": ["added.\nAbility: multiplying in story problems"]},
        {"match": "Question: c", "responses": ["forgot minutes.\nAbility: converting units of time"]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    stats = diagnose(llm, [_fail("m", 1, "a"), _fail("m", 2, "b"), _fail("m", 3, "c")], {},
                     DiagnoseConfig(merge_by=merge_by), tmp_path)
    assert stats["groups"] == groups
    if merge_by == "embedding":
        assert read_json(tmp_path / "deficiencies.json")["deficiencies"][0]["count"] == 2
