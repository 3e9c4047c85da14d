"""Code: the teacher writes a task naming its function, solutions, and (separately, without
seeing a solution) assert tests; solutions are kept only when they pass non-trivial tests in the
sandbox (the self-oss-instruct exec-filter recipe, with a vacuity guard).

Tests are non-trivial when they call the function in at least ``min_asserts`` distinct
``assert`` lines that compare its result, do not define the function themselves, and fail
against a stub that raises: tests that still pass never reach the function. Every program
ends by printing a sentinel, so a solution that exits early does not pass.
"""
from __future__ import annotations

import re

from evalsuite.metrics import code_block
from evalsuite.sandbox import run_code
from synth.verify import Check

SENTINEL = "__synth_tests_completed__"
_NAME_IN_TASK = re.compile(r"`\s*([A-Za-z_]\w*)\s*\(|\bfunction\s+(?:called\s+|named\s+)?`?([A-Za-z_]\w*)`?\s*\(")


def function_name(task: str) -> str | None:
    """The function a task names (``count_word(text, word)``), or None."""
    m = _NAME_IN_TASK.search(task or "")
    return (m.group(1) or m.group(2)) if m else None


def signature(code: str, name: str) -> str | None:
    """The ``def name(...)`` line of a solution, or None when it does not define ``name``."""
    m = re.search(rf"(?m)^def\s+{re.escape(name)}\s*\((.*?)\)\s*(?:->\s*[^:]+)?:", code or "")
    return f"def {name}({m.group(1).strip()})" if m else None


def fenced_or_continued(answer: str, looks_like_code) -> str | None:
    """The code of an answer: its first fenced block (as the code tasks score it), or, when the
    answer continues a prefilled opening fence, the code before its closing fence."""
    answer = answer or ""
    head = answer.split("```")[0]
    if head.strip() and looks_like_code(head):
        return head
    return code_block(answer)


def parse_solution(answer: str) -> str | None:
    code = fenced_or_continued(answer, lambda t: re.search(r"(?m)^\s*(def|import|from|class)\s", t))
    return code.strip() if code and code.strip() else None


def parse_tests(answer: str) -> str | None:
    """The assert lines of a test answer (fenced or bare), or None when there are none."""
    code = code_block(answer)
    code = code if code is not None else (answer or "")
    lines = [ln.rstrip() for ln in code.splitlines() if ln.strip().startswith("assert ")]
    return "\n".join(dict.fromkeys(lines)) or None


def why_invalid(tests: str, name: str, min_asserts: int) -> str | None:
    """Why a test set cannot judge a solution (without running it), or None."""
    if re.search(rf"(?m)^\s*def\s+{re.escape(name)}\b", tests):
        return "tests_define_function"
    calls = [ln for ln in tests.splitlines() if re.search(rf"\b{re.escape(name)}\s*\(", ln)]
    if not calls:
        return "tests_never_call_function"
    if sum(bool(re.search(r"==|!=|<|>|\bin\b|\bis\b", ln)) for ln in calls) < min_asserts:
        return "too_few_asserts"
    return None


def _run(program: str, timeout_s: float, memory_mb: int) -> bool:
    res = run_code(f"{program}\n\nprint({SENTINEL!r})\n", timeout_s=timeout_s, memory_mb=memory_mb)
    return res.passed and SENTINEL in res.stdout


def stub_passes(tests: str, name: str, timeout_s: float = 5.0, memory_mb: int = 256) -> bool:
    """Do the tests pass against a function that only raises? (then they are vacuous)"""
    stub = f"def {name}(*args, **kwargs):\n    raise NotImplementedError('stub')\n"
    return _run(f"{stub}\n{tests}", timeout_s, memory_mb)


def verify(solutions: list[str | None], test_sets: list[str | None], name: str, min_asserts: int = 3,
           timeout_s: float = 10.0, memory_mb: int = 512) -> tuple[int | None, Check]:
    """(index of the kept solution, check): the solution passing the most valid test sets (at
    least one); test sets are valid when non-trivial and failing against the raising stub."""
    problems: dict[str, int] = {}
    valid = []
    for tests in dict.fromkeys(test_sets):
        why = "no_tests" if not tests else why_invalid(tests, name, min_asserts)
        if why is None and stub_passes(tests, name, min(timeout_s, 5.0), memory_mb):
            why = "vacuous_tests"
        if why:
            problems[why] = problems.get(why, 0) + 1
        else:
            valid.append(tests)
    details = {"function": name, "test_sets": len(test_sets), "valid_test_sets": len(valid),
               "invalid_test_sets": problems, "solutions": len(solutions)}
    if not valid:
        return None, Check(False, "code_tests", "no_valid_tests", details)
    best, best_passed, runs, memo = None, 0, [], {}
    for i, sol in enumerate(solutions):
        if not sol or signature(sol, name) is None:
            runs.append(None)
            continue
        if sol not in memo:  # samples of a small model repeat: run each distinct solution once
            memo[sol] = sum(_run(f"{sol}\n\n{t}", timeout_s, memory_mb) for t in valid)
        passed = memo[sol]
        runs.append(passed)
        if passed > best_passed:
            best, best_passed = i, passed
    details["passed_per_solution"] = runs
    if best is None:
        reason = "no_solution_defines_function" if all(r is None for r in runs) else "tests_failed"
        return None, Check(False, "code_tests", reason, details)
    asserts = sum(len(t.splitlines()) for t in valid)
    return best, Check(True, "code_tests", "", {**details, "passed_test_sets": best_passed, "asserts": asserts,
                                                "tests": valid})
