"""Math / numeric answers: two independent routes must agree, read by the scorer's extractor.

Route 1, program of thought: the teacher writes a Python program that prints the answer
(``pot.j2``), run in the sandbox. Route 2: worked natural-language solutions (``solve.j2``,
k samples) whose final number is read by ``evalsuite.metrics.extract_number`` and compared
with ``numbers_equal``. Rules (``SynthConfig.math_rule``):

* ``pot``: the programs' most common printed value (printed by at least ``min_programs``
  programs) equals a worked solution's answer;
* ``majority``: one answer holds at least ``min_share`` of the k worked solutions;
* ``pot_and_majority``: both, on the same value.

The kept response is a worked solution with the agreed answer, cut after its answer line.
"""
from __future__ import annotations

import re

from evalsuite.metrics import extract_number, numbers_equal
from synth.verify import Check, basic_check, printed_number
from synth.verify_code import fenced_or_continued

_STATED = re.compile(r"(?i)\bthe (?:final )?answer is\b")


def parse_program(answer: str) -> str | None:
    """The program: a fenced block, or the continuation of a prefilled fence up to its end."""
    code = fenced_or_continued(answer, lambda t: "print" in t)
    return code.strip() if code and "print" in code else None


def run_programs(programs: list[str | None], timeout_s: float = 5.0, memory_mb: int = 256) -> list[str | None]:
    return [printed_number(p, timeout_s, memory_mb)[0] if p else None for p in programs]


def trim_solution(text: str) -> str:
    """The worked solution up to the end of its last 'The answer is ...' line."""
    hits = list(_STATED.finditer(text))
    if not hits:
        return text.strip()
    end = text.find("\n", hits[-1].end())
    return (text if end == -1 else text[:end]).strip()


def _mode(values: list[str]) -> tuple[str | None, int]:
    groups: list[list[str]] = []
    for v in values:
        for g in groups:
            if numbers_equal(v, g[0]):
                g.append(v)
                break
        else:
            groups.append([v])
    if not groups:
        return None, 0
    best = max(groups, key=len)
    return best[0], len(best)


def verify(worked: list[str], program_values: list[str | None], rule: str = "pot", min_share: float = 0.6,
           min_programs: int = 1, min_chars: int = 20) -> tuple[int | None, Check]:
    """(index of the kept worked solution, check)."""
    answers = [extract_number(w) if basic_check(w, min_chars) is None and _STATED.search(w) else None
               for w in worked]
    stated = [a for a in answers if a is not None]
    pot_value, pot_n = _mode([v for v in program_values if v is not None])
    maj_value, maj_n = _mode(stated)
    share = maj_n / max(len(worked), 1)
    details = {"rule": rule, "answers": answers, "program_answers": program_values,
               "majority_share": round(share, 3)}
    pot_ok = pot_value is not None and pot_n >= min_programs and any(numbers_equal(a, pot_value) for a in stated)
    maj_ok = maj_value is not None and share >= min_share
    if rule == "pot":
        ok, value, reason = pot_ok, pot_value, "no_program_answer" if pot_value is None else "routes_disagree"
        method = "pot_agreement"
    elif rule == "majority":
        ok, value, reason, method = maj_ok, maj_value, "no_majority", "majority"
    else:
        ok = pot_ok and maj_ok and numbers_equal(pot_value, maj_value)
        value, reason, method = maj_value, "routes_disagree", "pot_and_majority"
    if not stated:
        ok, reason = False, "no_stated_answer"
    if not ok:
        return None, Check(False, method, reason, details)
    kept = next(i for i, a in enumerate(answers) if a is not None and numbers_equal(a, value))
    return kept, Check(True, method, "", {**details, "answer": value})
