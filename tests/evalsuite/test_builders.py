"""Generated task data: reproducible byte for byte, stable ids, well-formed items."""
from collections import Counter

from evalsuite.builders import __main__ as build_main
from evalsuite.builders import ifeval_prompts, math_problems
from evalsuite.metrics import extract_number, numbers_equal


def test_committed_data_matches_a_rebuild():
    assert build_main.main(["--check"]) == 0


def test_math_problems_are_varied_and_exact():
    rows = math_problems.build(300)
    assert len({r["id"] for r in rows}) == 300 and len({r["question"] for r in rows}) == 300
    assert set(Counter(r["shape"] for r in rows)) == set(math_problems.SHAPES)
    steps = Counter(r["steps"] for r in rows)
    assert min(steps) == 1 and max(steps) == 6
    assert {r["level"] for r in rows[:3]} == {1, 2, 3}  # any prefix holds every level
    assert all(abs(n - 100) <= 5 for n in Counter(r["level"] for r in rows).values())
    assert all(r["steps"] == 1 for r in rows if r["level"] == 1)
    assert all(r["steps"] >= 2 for r in rows if r["level"] > 1)
    for r in rows:
        assert numbers_equal(extract_number(r["solution"]), r["answer"])
    assert math_problems.build(20, seed=1) != math_problems.build(20, seed=2)


def test_math_fewshot_examples_are_not_test_items():
    test = {r["question"] for r in math_problems.build()}
    shots = math_problems.build_fewshot()
    assert len(shots) == 30 and not test & {r["question"] for r in shots}
    assert {r["level"] for r in shots} == {1, 2, 3}


def test_ifeval_prompts_have_one_to_three_compatible_constraints():
    rows = ifeval_prompts.build(300)
    assert len({r["prompt"] for r in rows}) == 300
    for r in rows:
        ids = r["instruction_id_list"]
        assert 1 <= len(ids) <= 3 and len(ids) == len(r["kwargs"]) and len(set(ids)) == len(ids)
        assert not ("change_case:english_lowercase" in ids and "startend:end_checker" in ids)
    assert Counter(len(r["instruction_id_list"]) for r in rows).keys() == {1, 2, 3}
