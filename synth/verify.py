"""Verification of synthesized (instruction, response) pairs, by the rules that score the student.

Checks, cheapest first: the response is non-empty, long enough and not a refusal; for an
instruction with a numeric answer, a second, independently sampled response must reach the same
number (agreement); for a Python answer, the code runs without error in the evalsuite sandbox.
Numbers and code are extracted by ``evalsuite.metrics`` (``extract_number``/``numbers_equal``,
``code_block``): the same functions that score the benchmark.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from evalsuite.metrics import code_block, extract_number, numbers_equal
from evalsuite.sandbox import run_code
from synth import parse

_NUMERIC_ASK = re.compile(r"(?i)\b(how many|how much|how long|how far|how old|what is the (?:total|sum|product|"
                          r"difference|value|cost|price|area|average)|what is \$?\d|calculate|compute|solve|total|percent)\b")
_CODE_ASK = re.compile(r"(?i)\b(python|function|program|script|code)\b")


@dataclass
class Verdict:
    ok: bool
    method: str          # basic | numeric | code
    reason: str = ""     # why it failed ('' when ok)


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


def wants_number(instruction: str) -> bool:
    """Does the instruction ask for a quantity (so two answers can be compared by number)?"""
    return bool(re.search(r"\d", instruction)) and bool(_NUMERIC_ASK.search(instruction))


def numbers_agree(a: str, b: str) -> bool | None:
    """True/False when both responses state a final number (as the scorer reads it); None when either has none."""
    x, y = extract_number(a), extract_number(b)
    if x is None or y is None:
        return None
    return numbers_equal(x, y)


def wants_code(instruction: str, response: str) -> bool:
    return bool(_CODE_ASK.search(instruction)) and code_block(response) is not None


def run_code_check(code: str, timeout_s: float = 10.0, memory_mb: int = 512) -> tuple[bool, str]:
    """(passed, status) of running ``code`` in the evalsuite sandbox."""
    res = run_code(code, timeout_s=timeout_s, memory_mb=memory_mb)
    return res.passed, res.status
