"""Simple verification of synthesized (instruction, response) pairs.

Checks, cheapest first: the response is non-empty, long enough and not a refusal; for an
instruction with a numeric answer, a second, independently sampled response must end in
the same number (agreement); for a Python answer, the code runs without error in
``evalsuite.sandbox.run_code`` (skipped, and counted, when the sandbox is unavailable).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from synth import parse

_NUMERIC_ASK = re.compile(r"(?i)\b(how many|how much|how long|how far|how old|what is the (?:total|sum|product|"
                          r"difference|value|cost|price|area|average)|what is \$?\d|calculate|compute|solve|total|percent)\b")
_CODE_ASK = re.compile(r"(?i)\b(python|function|program|script|code)\b")
_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


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


def numbers_agree(a: str, b: str, rel_tol: float = 1e-6) -> bool | None:
    """True/False when both responses end in a number; None when either has none."""
    x, y = parse.final_number(a), parse.final_number(b)
    if x is None or y is None:
        return None
    return math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-9)


def extract_code(response: str) -> str | None:
    blocks = _CODE_BLOCK.findall(response or "")
    return max(blocks, key=len).strip() if blocks else None


def wants_code(instruction: str, response: str) -> bool:
    return bool(_CODE_ASK.search(instruction)) and extract_code(response) is not None


def run_code_check(code: str, timeout_s: float = 10.0, memory_mb: int = 512) -> tuple[bool | None, str]:
    """(passed, status) from the evalsuite sandbox; (None, 'no_sandbox') if it cannot be imported."""
    try:
        from evalsuite.sandbox import run_code
    except ImportError:
        return None, "no_sandbox"
    res = run_code(code, timeout_s=timeout_s, memory_mb=memory_mb)
    return res.passed, res.status
