"""What every verifier shares: named checks, the basic check, number agreement, sandboxed execution."""
from evalsuite.metrics import code_block
from synth import verify
from synth.verify import Check


def test_only_a_named_passed_check_verifies():
    assert Check(True, "ifeval_checkers").verifies and Check(True, "code_tests").verifies
    assert Check(True, "pot_agreement").verifies and Check(True, "majority").verifies
    assert not Check(False, "code_tests", "tests_failed").verifies
    assert not Check(True, "judge", details={"score": 5}).verifies      # a judge score never verifies
    assert not Check(True, "none").verifies
    assert Check(False, "judge", "judge_low_score", {"score": 2}).as_meta() == {
        "method": "judge", "passed": False, "reason": "judge_low_score", "score": 2}


def test_basic_and_numeric():
    assert verify.basic_check("") == "empty"
    assert verify.basic_check("I'm sorry, but I can't help with that request.") == "refusal"
    assert verify.basic_check("ok") == "too_short"
    assert verify.basic_check("A complete and helpful answer.") is None
    assert verify.numbers_agree("so it is 7", "The answer is 7.0")
    assert verify.numbers_agree("it is 7", "it is 8") is False
    assert verify.numbers_agree("no number", "8") is None
    assert verify.numbers_agree("The answer is 1,250 dollars, not 3", "#### 1250")


def test_synth_reads_answers_exactly_as_the_scorer_does():
    """Verification and the benchmark's scorer extract the same number and the same code block."""
    from evalsuite import metrics

    answers = ["So 3 + 4 = 7.\nThe answer is 7 + 5 = 12.", "Step 1: 4 apples\nAnswer: 9\nCheck: 10 - 1 = 9 really 10",
               "first 3 then 5 finally 8", "The answer is 1,250 dollars, not 3"]
    for a in answers:
        assert verify.numbers_agree(a, a)
        assert verify.numbers_agree(a, f"#### {metrics.extract_number(a)}")
    # the scorer takes "12" (after the last '=' on the answer line); a synth rule reading the
    # first number after "answer is" would have said 7
    assert verify.numbers_agree(answers[0], "The answer is 7.") is False
    two = "```python\ndef f():\n    return 1\n```\nand a longer one\n```python\ndef g():\n    x = 2\n    return x\n```"
    assert metrics.code_block(two).strip() == "def f():\n    return 1"   # the first block, as scored


def test_code_execution_and_printed_numbers():
    good = "Here:\n```python\ndef f(x):\n    return x + 1\nassert f(1) == 2\n```"
    bad = "```python\nraise ValueError('boom')\n```"
    assert verify.run_code_check(code_block(good), timeout_s=20) == (True, "passed")
    passed, status = verify.run_code_check(code_block(bad), timeout_s=20)
    assert passed is False and status == "failed"
    assert verify.printed_number("x = 6 * 7\nprint('total', x)") == ("42", "passed")
    assert verify.printed_number("print('no number')")[0] is None
    assert verify.printed_number("raise SystemExit(3)") == (None, "failed")


def test_verify_precision_verdicts_against_the_target():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "verify_precision.py"
    spec = importlib.util.spec_from_file_location("verify_precision", path)
    vp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vp)
    assert vp.verdict({"verified": 8, "precision": 1.0}) == "PASS"
    assert vp.verdict({"verified": 10, "precision": 0.9}) == "PASS"
    assert vp.verdict({"verified": 3, "precision": 0.667}) == "FAIL"
    assert vp.verdict({"verified": 0, "precision": None}) == "n.a."
