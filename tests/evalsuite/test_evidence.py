"""The scorer's evidence for failed items: checker ids, the failing assert, the wrong number."""
from __future__ import annotations

import json

from evalsuite import evidence
from evalsuite.sandbox import run_code


def test_checker_evidence_names_the_failed_checkers_with_kwargs():
    target = json.dumps([{"id": "change_case:english_lowercase", "kwargs": {}},
                         {"id": "length_constraints:number_words", "kwargs": {"relation": "less than", "num_words": 50,
                                                                             "unused": None}}])
    row = {"correct": False, "target": target, "metrics": {"inst_level_strict_acc": [False, True]}}
    ev = evidence.evidence(row)
    assert ev["key"] == "checker:change_case:english_lowercase" and ev["specific"]
    assert ev["failed"] == [{"id": "change_case:english_lowercase", "kwargs": {}}]
    assert ev["passed"] == ["length_constraints:number_words"]
    assert "change_case:english_lowercase" in evidence.describe(ev)
    assert evidence.evidence({**row, "correct": True}) is None


def test_code_evidence_is_the_failing_assert_from_the_sandbox():
    tests = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n\ncheck(square)"
    wrong = {"correct": False, "metrics": {"pass_at_1": 0.0}, "target": tests,
             "extracted": "def square(x):\n    return x * 2\n"}
    ev = evidence.evidence(wrong, run_code)
    assert ev["key"] == "code:AssertionError" and not ev["specific"]        # the family; the teacher splits it
    assert ev["line"] == "assert candidate(3) == 9"                         # 2*2 passed, 3*2 did not
    missing = {**wrong, "extracted": "def sq(x):\n    return x * x\n"}
    ev = evidence.evidence(missing, run_code)
    assert ev["key"] == "code:NameError" and ev["specific"] and "square" in ev["error"]
    loop = {**wrong, "extracted": "def square(x):\n    while True: pass\n"}
    assert evidence.evidence(loop, run_code)["key"] == "code:timeout"


def test_numeric_evidence_tells_slips_copies_and_plans_apart():
    base = {"correct": False, "metrics": {"exact_match": 0.0}, "target": "31",
            "prompt": "Tom has 3 bags with 12 apples each. He eats 5 apples. How many are left?"}
    slip = evidence.evidence({**base, "response": "3 x 12 = 36. 36 - 5 = 30. The answer is 30.", "extracted": "30"})
    assert slip["key"] == "numeric:arithmetic_slip" and slip["last_operation"] == "36 - 5 = 30"
    plan = evidence.evidence({**base, "response": "3 + 12 = 15. 15 - 5 = 10. The answer is 10.", "extracted": "10"})
    assert plan["key"] == "numeric:wrong_result" and plan["given"] == "10" and plan["expected"] == "31"
    copy = evidence.evidence({**base, "response": "The answer is 12.", "extracted": "12"})
    assert copy["key"] == "numeric:copied_number"
    none = evidence.evidence({**base, "response": "I do not know.", "extracted": ""})
    assert none["key"] == "numeric:no_answer" and none["specific"]
    assert "expected 31, the student gave 10; its last step: 15 - 5 = 10" == evidence.describe(plan)
