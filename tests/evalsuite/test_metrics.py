from evalsuite.metrics import (exact_match, extract_code, extract_number, first_line_answer,
                               numbers_equal, pass_at_1)


def test_extract_number_prefers_the_stated_answer_over_echoed_numbers():
    assert extract_number("Ava buys 3 books at $4 each.\n3 x 4 = 12\nThe answer is 12.") == "12"
    assert extract_number("There are 7 cats and 5 dogs, so 12 animals") == "12"
    assert extract_number("#### 1,250\nsee 99 more") == "1250"
    assert extract_number("Final answer: $12.50.") == "12.50"
    assert extract_number("the answer is **36**") == "36"
    assert extract_number("\\boxed{42} and then 7") == "42"
    assert extract_number("The final answer is 10 * 5 = 50.") == "50"
    assert extract_number("no digits at all") is None
    assert extract_number("") is None


def test_numbers_equal():
    assert numbers_equal("12.50", "12.5") and numbers_equal("1,200", 1200) and numbers_equal(-3, "-3.0")
    assert not numbers_equal("12", "13") and not numbers_equal(None, "1") and not numbers_equal("abc", "1")


def test_exact_match_and_short_answers():
    assert exact_match("The Paris.", "paris") and not exact_match("Lyon", "Paris")
    assert first_line_answer("Let me think.\nAnswer: Paris\nmore") == "Paris"
    assert first_line_answer("\n\nParis\n") == "Paris"


def test_extract_code_and_pass_at_1():
    text = "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert extract_code(text).strip().startswith("def add")
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # unclosed fence
    assert pass_at_1(["assert add(2, 3) == 5"], [extract_code(text)]) == 1.0
    assert pass_at_1(["assert add(2, 3) == 5"], [["def add(a, b):\n    return a * b"]]) == 0.0


def test_numbers_beyond_float_range_compare_without_crashing():
    from evalsuite.metrics import numbers_equal

    big = "9" * 400
    assert numbers_equal(big, big) and not numbers_equal(big, "8" + big[1:])
