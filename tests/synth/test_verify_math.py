"""Math: a program's printed answer and a worked answer must agree, read as the scorer reads them."""
from synth.verify_math import parse_program, run_programs, trim_solution, verify

W7 = "3 + 4 = 7\nThe answer is 7.\nThen some rambling 99"
W8 = "3 + 5 = 8\nThe answer is 8."


def test_programs_run_in_the_sandbox():
    assert parse_program("```python\nx = 3 + 4\nprint(x)\n```") == "x = 3 + 4\nprint(x)"
    assert parse_program("x = 3 + 4\nprint(x)\n```\nmore") == "x = 3 + 4\nprint(x)"   # continued prefill
    assert parse_program("no code here") is None
    assert run_programs(["print(3 + 4)", "print(1 / 0)", None]) == ["7", None, None]


def test_routes_agreeing_keep_the_matching_worked_answer():
    kept, chk = verify([W8, W7], ["7", None], rule="pot")
    assert kept == 1 and chk.verifies and chk.method == "pot_agreement" and chk.details["answer"] == "7"
    assert trim_solution(W7) == "3 + 4 = 7\nThe answer is 7."


def test_routes_disagreeing_drop_the_record():
    kept, chk = verify([W8, W8], ["7", "7"], rule="pot")
    assert kept is None and not chk.passed and chk.reason == "routes_disagree"
    kept, chk = verify([W7, W7], ["8"], rule="pot_and_majority")
    assert kept is None and chk.reason == "routes_disagree"
    kept, chk = verify([W7, W7, W8, W8], [None], rule="pot")
    assert kept is None and chk.reason == "no_program_answer"


def test_majority_and_combined_rules():
    assert verify([W7, W7, W8], [None], rule="majority", min_share=0.6)[0] == 0
    assert verify([W7, W8, W8.replace("8", "9")], [None], rule="majority", min_share=0.6)[0] is None
    kept, chk = verify([W8, W7, W7, W7], ["7"], rule="pot_and_majority", min_share=0.5)
    assert kept == 1 and chk.method == "pot_and_majority"
    assert verify([W7, W8, W8, W8], ["7"], rule="pot_and_majority", min_share=0.5)[0] is None  # majority is 8
    # two programs must both print it when min_programs=2
    assert verify([W7], ["7", "9"], rule="pot", min_programs=2)[0] is None
    assert verify([W7], ["7", "7.0"], rule="pot", min_programs=2)[0] == 0


def test_an_answer_must_be_stated():
    kept, chk = verify(["I think it is 7 apples in total, yes."], ["7"], rule="pot")
    assert kept is None and chk.reason == "no_stated_answer"
