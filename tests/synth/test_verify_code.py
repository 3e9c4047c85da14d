"""Code: solutions kept only when they pass non-vacuous tests in the sandbox."""
from synth.verify_code import function_name, parse_solution, parse_tests, signature, stub_passes, verify, why_invalid

TASK = "Write a Python function `add_two(x)` that returns x plus 2."
GOOD = "def add_two(x):\n    return x + 2"
WRONG = "def add_two(x):\n    return x * 2"
TESTS = "assert add_two(1) == 3\nassert add_two(0) == 2\nassert add_two(-2) == 0"


def test_parsing():
    assert function_name(TASK) == "add_two"
    assert function_name("Write a function called count_words(text) that counts words.") == "count_words"
    assert function_name("Write something nice.") is None
    assert signature(GOOD, "add_two") == "def add_two(x)" and signature(GOOD, "other") is None
    assert parse_solution("```python\n" + GOOD + "\n```\nDone.") == GOOD
    assert parse_solution(GOOD + "\n```\nIt adds two.") == GOOD      # continuation of a prefilled fence
    assert parse_solution("Just words.") is None
    assert parse_tests("```python\nassert add_two(1) == 3\nprint('x')\nassert add_two(1) == 3\n```") == "assert add_two(1) == 3"


def test_right_solution_kept_wrong_one_rejected():
    kept, chk = verify([WRONG, GOOD], [TESTS], "add_two", timeout_s=20)
    assert kept == 1 and chk.verifies and chk.details["passed_per_solution"] == [0, 3] and chk.details["asserts"] == 3
    assert chk.details["tests"] == [TESTS]
    kept, chk = verify([WRONG], [TESTS], "add_two", timeout_s=20)
    assert kept is None and chk.reason == "tests_failed"
    bare = "def add_two(x):\n    pass"               # a bare def exits 0 but does not pass real tests
    assert verify([bare], [TESTS], "add_two", timeout_s=20)[0] is None


def test_vacuous_tests_are_rejected():
    never = "assert 1 + 1 == 2\nassert True\nassert 'a' in 'abc'"
    assert why_invalid(never, "add_two", 3) == "tests_never_call_function"
    assert why_invalid("assert add_two(1) == 3", "add_two", 3) == "too_few_asserts"
    assert why_invalid("def add_two(x):\n    return 3\n" + TESTS, "add_two", 3) == "tests_define_function"
    guarded = "\n".join(f"assert add_two({i}) == {i + 2} if False else True" for i in range(3))
    assert why_invalid(guarded, "add_two", 3) is None and stub_passes(guarded, "add_two")   # never reaches it
    kept, chk = verify([GOOD], [never, guarded], "add_two", timeout_s=20)
    assert kept is None and chk.reason == "vacuous_tests"
    assert chk.details["invalid_test_sets"] == {"tests_never_call_function": 1} and chk.details["vacuous_asserts"] == 3
    # a vacuous assert does not count towards a set's asserts
    mixed = "assert add_two(1) == 3\nassert add_two(0) == 2\nassert True or add_two(5) == 0"
    assert verify([GOOD], [mixed], "add_two", timeout_s=20)[1].reason == "no_valid_tests"
    assert not stub_passes(TESTS, "add_two")


def test_a_solution_that_exits_early_does_not_pass():
    early = GOOD + "\nimport sys\nsys.exit(0)"
    assert verify([early], [TESTS], "add_two", timeout_s=20)[0] is None


def test_trusted_asserts_are_those_most_solutions_pass():
    # the teacher's tests hold one wrong assert; three of four solutions agree on the others
    tests = [TESTS + "\nassert add_two(5) == 8", "assert add_two(10) == 12"]
    kept, chk = verify([GOOD, GOOD, WRONG, GOOD], tests, "add_two", rule="trusted_asserts", timeout_s=20)
    assert kept == 0 and chk.details["trusted_asserts"] == 4 and chk.details["asserts"] == 5
    assert verify([GOOD, GOOD, WRONG, GOOD], tests, "add_two", timeout_s=20)[0] is None   # all_tests: no set passes
    # fewer than min_asserts trusted: rejected
    kept, chk = verify([GOOD], ["assert add_two(1) == 3\nassert add_two(2) == 9"], "add_two", rule="trusted_asserts",
                       timeout_s=20)
    assert kept is None and chk.reason == "too_few_trusted_asserts"


def test_asserts_on_one_input_count_once():
    from synth.verify_code import distinct_calls

    same = "assert add_two(1) == 3\nassert add_two( 1 ) == 3.0\nassert add_two(1) != 4\nassert add_two(0) == 2"
    assert distinct_calls(same.splitlines(), "add_two") == 2
    assert distinct_calls(["assert add_two(max(1, 2)) == 4", "assert add_two(max(1, 3)) == 5"], "add_two") == 2
    # string literals are inputs as written: a bracket inside one does not end the call (the
    # fuzzer's find: "f('(')" was read to the end of the line), nor do its spaces vanish
    assert distinct_calls(["assert f('(') == 0", "assert f( '(' ) != None"], "f") == 1
    assert distinct_calls(["assert f('a b') == 1", "assert f('ab') == 1", "assert f(')x') == 1",
                           "assert f(')y') == 1"], "f") == 4
    assert distinct_calls(["assert f(1) == f(2)", "assert f(1)==0"], "f") == 1   # the first call on the line
    assert verify([GOOD], [same], "add_two", timeout_s=20)[1].reason == "no_valid_tests"
