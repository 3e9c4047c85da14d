"""What the scorer knows went wrong with a failed item: the evidence diagnosis starts from.

A scorer already holds much of the finding a teacher is asked for, and a small teacher often gets
it wrong ("the student misspelled change_case"). So every failed row of ``samples.jsonl`` gets an
``evidence`` dict, computed by the same rules that scored it:

* checker-scored items (IFEval-style): which checker ids, with their kwargs, failed and which
  passed — ``key`` ``checker:<first failed id>``;
* code (``pass_at_1``): the program re-run in the sandbox — the exception, its message and the
  source line that raised (the failing ``assert``), or timeout / memory — ``key``
  ``code:<ExceptionName>`` or ``code:timeout``;
* numeric answers: expected and given number and the student's last written operation;
  ``key`` ``numeric:no_answer`` (no number given), ``numeric:arithmetic_slip`` (its last
  operation is computed wrong), ``numeric:copied_number`` (the answer is a number of the question,
  unchanged) or ``numeric:wrong_result`` (a plan that leads elsewhere).

``specific`` says whether the key alone names the deficiency (a failed checker, a NameError) or
only its family (an assertion failed, a wrong number), where the teacher's words must split it.
"""
from __future__ import annotations

import json
import re
from fractions import Fraction

from evalsuite.metrics import extract_number, numbers_equal, to_fraction

_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_OP = re.compile(rf"({_NUM})\s*([-+*/×÷xX])\s*({_NUM})\s*=\s*\$?\s*({_NUM})")
COARSE = {"code:AssertionError", "numeric:wrong_result"}


def evidence(row: dict, run=None) -> dict | None:
    """The evidence for one scored row (None when the row passed or no rule applies). ``run``
    executes a program (``evalsuite.sandbox.run_code``), needed for code items only."""
    if row.get("correct"):
        return None
    metrics = row.get("metrics") or {}
    if "inst_level_strict_acc" in metrics:
        return _checkers(row, metrics["inst_level_strict_acc"])
    if "pass_at_1" in metrics and run is not None:
        return _code(row, run)
    if to_fraction(row.get("target")) is not None:
        return _numeric(row)
    return None


def add_evidence(rows: list[dict], run=None) -> int:
    """Set ``row["evidence"]`` on every failed row a rule applies to; how many got one."""
    n = 0
    for row in rows:
        ev = evidence(row, run)
        if ev is not None:
            row["evidence"] = ev
            n += 1
    return n


def describe(ev: dict | None) -> str:
    """One line for the teacher's prompt."""
    if not ev:
        return ""
    if ev["kind"] == "checker":
        failed = "; ".join(f"{c['id']}" + (f" {json.dumps(c['kwargs'], ensure_ascii=False)}" if c["kwargs"] else "")
                           for c in ev["failed"])
        return f"the checker rejected: {failed}" + (f" (passed: {', '.join(ev['passed'])})" if ev["passed"] else "")
    if ev["kind"] == "code":
        where = f" at `{ev['line']}`" if ev.get("line") else ""
        return f"the tests stopped with {ev['error'] or ev['status']}{where}"
    given = ev["given"] if ev["given"] is not None else "no number"
    last = f"; its last step: {ev['last_operation']}" if ev.get("last_operation") else ""
    return f"expected {ev['expected']}, the student gave {given}{last}"


def humanize(key: str) -> str:
    """A readable ability for a specific evidence key (the name of its deficiency)."""
    family, _, what = key.partition(":")
    if family == "checker":
        return "following the instruction " + what.replace("_", " ").replace(":", ": ")
    if family == "code":
        return {"timeout": "code that finishes within the time limit",
                "memory": "code that stays within memory"}.get(what, f"Python code that runs without {what}")
    return {"no_answer": "stating a final numeric answer",
            "arithmetic_slip": "accurate arithmetic in each step",
            "copied_number": "computing an answer instead of copying a number from the question"}.get(
                what, "finding the right solution plan")


def _checkers(row: dict, passed: list) -> dict | None:
    try:
        checks = json.loads(row["target"])
    except (TypeError, ValueError):
        return None
    if not isinstance(checks, list) or len(checks) != len(passed):
        return None
    failed = [{"id": c["id"], "kwargs": {k: v for k, v in (c.get("kwargs") or {}).items() if v is not None}}
              for c, ok in zip(checks, passed) if not ok]
    if not failed:
        return None
    return {"kind": "checker", "key": f"checker:{failed[0]['id']}", "specific": True, "failed": failed,
            "passed": [c["id"] for c, ok in zip(checks, passed) if ok]}


def _code(row: dict, run) -> dict:
    res = run(f"{row.get('extracted', '')}\n\n{row.get('target', '')}\n", timeout_s=5.0, memory_mb=512)
    error, line = "", ""
    if res.status == "failed":
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        if lines:
            error = lines[-1].strip()[:200]
            src = [ln.strip() for ln in lines[:-1] if not ln.lstrip().startswith(("File ", "Traceback", "^", "~"))]
            line = src[-1][:200] if src else ""
    name = re.match(r"[A-Za-z_][\w.]*", error)
    what = name.group(0).rsplit(".", 1)[-1] if (name and res.status == "failed") else res.status
    key = f"code:{what}"
    return {"kind": "code", "key": key, "specific": key not in COARSE, "status": res.status,
            "error": error, "line": line}


def _numeric(row: dict) -> dict:
    response = str(row.get("response", ""))
    given = row.get("extracted") or extract_number(response)
    ops = _OP.findall(response)
    last = None
    slip = False
    if ops:
        a, op, b, c = ops[-1]
        last = f"{a} {op} {b} = {c}"
        slip = not _computes(a, op, b, c)
    question = set(n.replace(",", "") for n in re.findall(_NUM, str(row.get("prompt", ""))[-1000:]))
    if given is None or to_fraction(given) is None:
        what = "no_answer"
    elif slip:
        what = "arithmetic_slip"
    elif str(given).replace(",", "") in question and not numbers_equal(given, row.get("target")):
        what = "copied_number"
    else:
        what = "wrong_result"
    key = f"numeric:{what}"
    return {"kind": "numeric", "key": key, "specific": key not in COARSE, "expected": str(row.get("target")),
            "given": given, "last_operation": last}


def _computes(a: str, op: str, b: str, c: str) -> bool:
    x, y, z = (to_fraction(v) for v in (a, b, c))
    if x is None or y is None or z is None:
        return True
    if op in "+":
        v = x + y
    elif op == "-":
        v = x - y
    elif op in "*×xX":
        v = x * y
    else:
        if y == 0:
            return False
        v = x / y
    return abs(v - z) <= Fraction(1, 100) * max(1, abs(z))
