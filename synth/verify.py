"""What every verifier shares: the outcome of a named check, the basic response check, number
agreement and program execution, by the rules that score the student.

A record is ``verified`` only when a named check passed (``Check.verifies``): the IFEval
checkers (``synth.verify_if``), sandboxed non-vacuous tests (``synth.verify_code``), an executed
program agreeing with a worked answer or a sample majority (``synth.verify_math``). A judge
score (``synth.judge``) is a check too, but never makes a record verified. Numbers and code are
read by ``evalsuite.metrics`` (``extract_number``/``numbers_equal``, ``code_block``), programs
run in ``evalsuite.sandbox.run_code``: the same functions that score the benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from evalsuite.metrics import extract_number, numbers_equal
from evalsuite.sandbox import run_code
from synth import parse

# methods of the checks that make a record verified (a judge score is not among them)
VERIFYING = ("ifeval_checkers", "pot_agreement", "majority", "pot_and_majority", "code_tests")


@dataclass
class Check:
    passed: bool
    method: str                 # ifeval_checkers | pot_agreement | majority | pot_and_majority | code_tests | judge | none
    reason: str = ""            # why it failed ('' when passed)
    details: dict = field(default_factory=dict)

    @property
    def verifies(self) -> bool:
        return self.passed and self.method in VERIFYING

    def as_meta(self) -> dict:
        out = {"method": self.method, "passed": self.passed}
        if self.reason:
            out["reason"] = self.reason
        return {**out, **self.details}


def basic_check(response: str, min_chars: int = 20) -> str | None:
    """Reason a response is unusable (empty, too_short, refusal), or None."""
    text = (response or "").strip()
    if not text:
        return "empty"
    if parse.is_refusal(text):
        return "refusal"
    if len(text) < min_chars:
        return "too_short"
    return None


def numbers_agree(a: str, b: str) -> bool | None:
    """True/False when both texts state a final number (as the scorer reads it); None when either has none."""
    x, y = extract_number(a), extract_number(b)
    if x is None or y is None:
        return None
    return numbers_equal(x, y)


def run_code_check(code: str, timeout_s: float = 10.0, memory_mb: int = 512) -> tuple[bool, str]:
    """(passed, status) of running ``code`` in the evalsuite sandbox."""
    res = run_code(code, timeout_s=timeout_s, memory_mb=memory_mb)
    return res.passed, res.status


def printed_number(program: str, timeout_s: float = 5.0, memory_mb: int = 256) -> tuple[str | None, str]:
    """(the number a program prints last, sandbox status); None when it fails or prints none."""
    res = run_code(program, timeout_s=timeout_s, memory_mb=memory_mb)
    if not res.passed:
        return None, res.status
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    value = extract_number(lines[-1]) if lines else None
    return value, "passed" if value is not None else "no_output"
