"""Code: the teacher writes a task naming its function, solutions, and (separately, without
seeing a solution) assert tests; solutions are kept only when they pass non-trivial tests in the
sandbox (the self-oss-instruct exec-filter recipe, with a vacuity guard).

Tests are non-trivial when their ``assert`` lines compare the function's result on at least
``min_asserts`` different inputs, do not define the function themselves, and fail against a stub
that raises: an assert that still passes never reaches the function and is dropped. Every program
ends by printing a sentinel, so a solution that exits early does not pass.
"""
from __future__ import annotations

import ast
import re

from evalsuite.metrics import code_block
from evalsuite.sandbox import run_code
from synth.verify import Check

SENTINEL = "__synth_tests_completed__"
_TAG = "__synth_assert__"
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
    code = fenced_or_continued(answer, lambda t: re.search(r"(?m)^[ \t]*(def|import|from|class)\s", t))
    return code.strip() if code and code.strip() else None


def parse_tests(answer: str) -> str | None:
    """The assert lines of a test answer (fenced or bare), or None when there are none."""
    code = code_block(answer)
    code = code if code is not None else (answer or "")
    lines = [ln.rstrip() for ln in code.splitlines() if ln.strip().startswith("assert ")]
    return "\n".join(dict.fromkeys(lines)) or None


def why_invalid(tests: str, name: str, min_asserts: int) -> str | None:
    """Why a test set cannot judge a solution (without running it), or None."""
    if re.search(rf"(?m)^[ \t]*def\s+{re.escape(name)}\b", tests):
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


def distinct_calls(asserts: list[str], name: str) -> int:
    """How many different calls of the function the asserts make (three asserts on one input
    test one input)."""
    return len({key for a in asserts if (key := _call_key(a, name)) is not None})


def _call_key(line: str, name: str) -> str | None:
    """The first call of ``name`` in an assert line, canonical: its syntax tree when the line
    parses (spacing, quotes and brackets inside string literals do not matter), else its text
    without whitespace up to the matching parenthesis."""
    m = re.search(rf"\b{re.escape(name)}\s*\(", line)
    if not m:
        return None
    try:
        tree = ast.parse(line.strip())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id == name]
        if calls:
            return ast.dump(min(calls, key=lambda n: (n.lineno, n.col_offset)))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    depth, i = 0, m.end() - 1
    for i in range(m.end() - 1, len(line)):
        depth += {"(": 1, ")": -1}.get(line[i], 0)
        if depth == 0:
            break
    return re.sub(r"\s+", "", line[m.start():i + 1])


def assert_results(prefix: str, asserts: list[str], timeout_s: float = 10.0, memory_mb: int = 512) -> list[bool]:
    """Run ``prefix`` (a solution, or the raising stub) then each assert on its own: which passed.
    One sandbox run; a prefix that fails or exits early passes none."""
    body = "\n".join(f"try:\n    {a.strip()}\n    print({_TAG!r}, {i}, 1)\nexcept BaseException:\n    print({_TAG!r}, {i}, 0)"
                     for i, a in enumerate(asserts))
    res = run_code(f"{prefix}\n\n{body}\n", timeout_s=timeout_s, memory_mb=memory_mb)
    ok = {int(m.group(1)) for m in re.finditer(rf"^{_TAG} (\d+) 1$", res.stdout, re.M)}
    return [i in ok for i in range(len(asserts))]


def verify(solutions: list[str | None], test_sets: list[str | None], name: str, min_asserts: int = 3,
           rule: str = "all_tests", timeout_s: float = 10.0, memory_mb: int = 512) -> tuple[int | None, Check]:
    """(index of the kept solution, check). Asserts passing against the raising stub are vacuous
    and dropped. ``all_tests``: the solution passes every remaining assert of at least one test
    set whose asserts call the function on ``min_asserts`` different inputs. ``trusted_asserts``: asserts passed by at least half
    of the k solutions are trusted (CodeT-style dual agreement); the solution passes all trusted
    asserts, which call the function on at least ``min_asserts`` different inputs."""
    problems: dict[str, int] = {}
    sets = []
    for tests in test_sets:
        why = "no_tests" if not tests else why_invalid(tests, name, 1)
        if why:
            problems[why] = problems.get(why, 0) + 1
            continue
        sets.append([ln.strip() for ln in tests.splitlines() if re.search(rf"\b{re.escape(name)}\s*\(", ln)
                     and re.search(r"==|!=|<|>|\bin\b|\bis\b", ln)])
    candidates = list(dict.fromkeys(a for st in sets for a in st))
    stub = f"def {name}(*args, **kwargs):\n    raise NotImplementedError('stub')\n"
    vacuous = {a for a, ok in zip(candidates, assert_results(stub, candidates, min(timeout_s, 5.0), memory_mb)) if ok}
    good = [a for a in candidates if a not in vacuous]
    details = {"function": name, "rule": rule, "test_sets": len(test_sets), "invalid_test_sets": problems,
               "asserts": len(good), "vacuous_asserts": len(vacuous), "solutions": len(solutions)}
    memo: dict[str, dict] = {}
    for sol in solutions:
        if sol and sol not in memo and signature(sol, name) is not None:
            memo[sol] = dict(zip(good, assert_results(sol, good, timeout_s, memory_mb)))
    details["passed_per_solution"] = [sum(memo[s].values()) if s in memo else None for s in solutions]
    if not memo:
        return None, Check(False, "code_tests", "no_solution_defines_function" if good else "no_valid_tests", details)
    if rule == "trusted_asserts":
        runs = [memo[s] for s in solutions if s in memo]
        trusted = [a for a in good if 2 * sum(r[a] for r in runs) >= len(runs)]
        held = [trusted] if distinct_calls(trusted, name) >= min_asserts else []
        details["trusted_asserts"] = len(trusted)
    else:
        held = [[a for a in st if a not in vacuous] for st in sets]
        held = [st for st in held if distinct_calls(st, name) >= min_asserts]
    details["valid_test_sets"] = len(held)
    if not held:
        reason = "vacuous_tests" if vacuous and not good else "too_few_trusted_asserts" if rule == "trusted_asserts" \
            else "no_valid_tests"
        return None, Check(False, "code_tests", reason, details)
    for i, sol in enumerate(solutions):
        passed = [st for st in held if sol in memo and all(memo[sol][a] for a in st)]
        if passed:
            return i, Check(True, "code_tests", "", {**details, "passed_test_sets": len(passed),
                                                     "tests": ["\n".join(st) for st in passed]})
    return None, Check(False, "code_tests", "tests_failed", details)
