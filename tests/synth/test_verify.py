"""Verification checks: basic, numeric agreement, code execution through the evalsuite sandbox."""
import pytest

from synth import verify


def test_basic_and_numeric():
    assert verify.basic_check("") == "empty"
    assert verify.basic_check("I'm sorry, but I can't help with that request.") == "refusal"
    assert verify.basic_check("ok") == "too_short"
    assert verify.basic_check("A complete and helpful answer.") is None
    assert verify.wants_number("How many apples are left if you eat 3 of 10?")
    assert verify.wants_number("What is 20 percent of 30?")
    assert not verify.wants_number("Write a poem about apples.")
    assert not verify.wants_number("Write 3 sentences about apples.")
    assert verify.numbers_agree("so it is 7", "The answer is 7.0")
    assert verify.numbers_agree("it is 7", "it is 8") is False
    assert verify.numbers_agree("no number", "8") is None


def test_code_extraction_and_execution():
    pytest.importorskip("evalsuite.sandbox")
    good = "Here:\n```python\ndef f(x):\n    return x + 1\nassert f(1) == 2\n```"
    bad = "```python\nraise ValueError('boom')\n```"
    assert verify.wants_code("Write a Python function f.", good)
    assert not verify.wants_code("Write a poem.", good)
    assert verify.run_code_check(verify.extract_code(good), timeout_s=20) == (True, "passed")
    passed, status = verify.run_code_check(verify.extract_code(bad), timeout_s=20)
    assert passed is False and status == "failed"
