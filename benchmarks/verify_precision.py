"""Precision and yield of synthesize's verifiers with the real teacher, on items whose answers are known.

    .venv/bin/python benchmarks/verify_precision.py [--math 16] [--ifeval 8] [--code 16] [--threads 1] [--backend hf|ct2] [key=value ...]

The answer + verify path of ``synth.gate`` (the stage's own code: k sampled answers, then the
kind's check) runs on items in no eval split:

* math: fresh word problems from ``evalsuite.builders.math_problems`` (another seed, the eval's
  questions excluded; levels 1-3 in turn); correct = the kept worked answer's number (read by
  ``extract_number``) equals the known answer;
* instruction: fresh prompts from ``evalsuite.builders.ifeval_prompts`` (another seed, eval prompts
  excluded) with their known checkers; correct = the ``ifeval_offline`` task's own scoring
  (``process_results``, prompt-level strict) of the kept response — the same checkers the
  verifier ran, so precision is 1 by construction; the figure to read is the yield with and
  without repair;
* code: the tasks below with hidden reference tests the teacher never sees; correct = the kept
  solution passes the hidden tests.

Printed per kind: items, verified, yield, precision (verified and correct / verified, Wilson 95%
CI) and, for comparison, the accuracy of the first sample taken without verification, and the
verdict against the issue's target precision of 0.9: PASS, FAIL, or n.a. when nothing of that kind
was verified (a yield of 0 measures no precision). The exit status is 1 when a kind FAILs.
``key=value`` overrides ``SynthConfig`` fields (``samples_per_instruction=8``, ``math_rule=majority``).
``--compare`` also prints every math and code rule on the same samples (the checks are
deterministic given the teacher's outputs, so the rules differ only in what they accept).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalsuite import typedconfig  # noqa: E402
from evalsuite.builders import ifeval_prompts, math_problems  # noqa: E402
from evalsuite.metrics import extract_number, numbers_equal  # noqa: E402
from evalsuite.sandbox import run_code  # noqa: E402
from synth import gate, verify_code, verify_if, verify_math  # noqa: E402
from synth.generate import SynthConfig  # noqa: E402
from synth.ledger import Ledger  # noqa: E402
from synth.llm import LLMConfig, load_llm  # noqa: E402

TARGET_PRECISION = 0.9   # what a verified record must be right with (issue 11)


def verdict(row: dict, target: float = TARGET_PRECISION) -> str:
    """PASS / FAIL against ``target`` for a kind with verified records; n.a. without any."""
    if not row.get("verified") or row.get("precision") is None:
        return "n.a."
    return "PASS" if row["precision"] >= target else "FAIL"

# (task, hidden tests): simple functions a small teacher might get right; never shown to it
CODE_TASKS = [
    ("Write a Python function `add_numbers(a, b)` that returns the sum of a and b.",
     "assert add_numbers(2, 3) == 5\nassert add_numbers(-1, 1) == 0\nassert add_numbers(0, 0) == 0\nassert add_numbers(10, -4) == 6"),
    ("Write a Python function `is_even(n)` that returns True if the integer n is even and False otherwise.",
     "assert is_even(4) is True\nassert is_even(7) is False\nassert is_even(0) is True\nassert is_even(-3) is False"),
    ("Write a Python function `reverse_string(s)` that returns the string s reversed.",
     "assert reverse_string('abc') == 'cba'\nassert reverse_string('') == ''\nassert reverse_string('a') == 'a'\nassert reverse_string('race car') == 'rac ecar'"),
    ("Write a Python function `max_of_list(numbers)` that returns the largest number in a non-empty list.",
     "assert max_of_list([1, 5, 3]) == 5\nassert max_of_list([-2, -7]) == -2\nassert max_of_list([4]) == 4\nassert max_of_list([0, 0, 1]) == 1"),
    ("Write a Python function `count_vowels(text)` that returns how many vowels (a, e, i, o, u, lowercase or uppercase) are in text.",
     "assert count_vowels('hello') == 2\nassert count_vowels('AEIOU') == 5\nassert count_vowels('xyz') == 0\nassert count_vowels('') == 0"),
    ("Write a Python function `square(n)` that returns n multiplied by itself.",
     "assert square(3) == 9\nassert square(-4) == 16\nassert square(0) == 0\nassert square(1) == 1"),
    ("Write a Python function `sum_list(numbers)` that returns the sum of a list of numbers, or 0 for an empty list.",
     "assert sum_list([1, 2, 3]) == 6\nassert sum_list([]) == 0\nassert sum_list([-1, 1]) == 0\nassert sum_list([10]) == 10"),
    ("Write a Python function `first_char(s)` that returns the first character of the non-empty string s.",
     "assert first_char('apple') == 'a'\nassert first_char('Z') == 'Z'\nassert first_char(' x') == ' '\nassert first_char('42') == '4'"),
    ("Write a Python function `count_positive(numbers)` that returns how many numbers in the list are greater than zero.",
     "assert count_positive([1, -2, 3]) == 2\nassert count_positive([]) == 0\nassert count_positive([0, -1]) == 0\nassert count_positive([5, 5]) == 2"),
    ("Write a Python function `to_upper(s)` that returns the string s in upper case.",
     "assert to_upper('abc') == 'ABC'\nassert to_upper('') == ''\nassert to_upper('Hi 5') == 'HI 5'\nassert to_upper('ABC') == 'ABC'"),
    ("Write a Python function `average(numbers)` that returns the mean of a non-empty list of numbers.",
     "assert average([1, 2, 3]) == 2\nassert average([4]) == 4\nassert average([1, 2]) == 1.5\nassert average([-2, 2]) == 0"),
    ("Write a Python function `celsius_to_fahrenheit(c)` that converts a temperature in Celsius to Fahrenheit.",
     "assert celsius_to_fahrenheit(0) == 32\nassert celsius_to_fahrenheit(100) == 212\nassert celsius_to_fahrenheit(-40) == -40\nassert celsius_to_fahrenheit(10) == 50"),
    ("Write a Python function `word_count(text)` that returns the number of words in text, where words are separated by spaces.",
     "assert word_count('one two three') == 3\nassert word_count('') == 0\nassert word_count('hello') == 1\nassert word_count('a b  c') == 3"),
    ("Write a Python function `last_element(items)` that returns the last element of a non-empty list.",
     "assert last_element([1, 2, 3]) == 3\nassert last_element(['a']) == 'a'\nassert last_element([None, 0]) == 0\nassert last_element([[1], [2]]) == [2]"),
    ("Write a Python function `is_palindrome(s)` that returns True if the string s reads the same forwards and backwards.",
     "assert is_palindrome('level') is True\nassert is_palindrome('abc') is False\nassert is_palindrome('') is True\nassert is_palindrome('ab') is False"),
    ("Write a Python function `multiply_list(numbers, k)` that returns a new list with every number multiplied by k.",
     "assert multiply_list([1, 2], 3) == [3, 6]\nassert multiply_list([], 5) == []\nassert multiply_list([-1], 2) == [-2]\nassert multiply_list([0, 4], 0) == [0, 0]"),
]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def math_items(n: int, seed: int) -> list[dict]:
    taken = {r["question"] for r in math_problems.build()} | {r["question"] for r in math_problems.build_fewshot()}
    rows = math_problems.build(n, seed=seed, prefix="vp", exclude=taken)
    return [{"kind": "math", "instruction": r["question"], "gold": r["answer"], "level": r["level"]} for r in rows]


def if_items(n: int, seed: int, cat: verify_if.Catalogue) -> list[dict]:
    taken = {r["prompt"] for r in ifeval_prompts.build()}
    rows = [r for r in ifeval_prompts.build(n * 3, seed=seed) if r["prompt"] not in taken]
    out = []
    for r in rows:
        cons = verify_if.known_constraints(r["instruction_id_list"], r["kwargs"], cat)
        out.append({"kind": "instruction", "instruction": r["prompt"], "constraints": cons, "doc": r,
                    "topic": None})
        if len(out) == n:
            break
    return out


def code_items(n: int) -> list[dict]:
    return [{"kind": "code", "instruction": t, "function": verify_code.function_name(t), "hidden": h}
            for t, h in CODE_TASKS[:n]]


def correct(it: dict, text: str | None, if_utils) -> bool:
    if text is None:
        return False
    if it["kind"] == "math":
        return numbers_equal(extract_number(text), it["gold"])
    if it["kind"] == "instruction":
        return bool(if_utils.process_results(it["doc"], [text])["prompt_level_strict_acc"])
    code = verify_code.parse_solution(text)
    return bool(code) and run_code(f"{code}\n\n{it['hidden']}\n", timeout_s=10, memory_mb=512).passed


def first_sample(it: dict) -> str | None:
    s = it["samples"][0] if it["samples"] else None
    if s is None or it["kind"] != "code":
        return s
    code = verify_code.parse_solution(s)
    return f"```python\n{code}\n```" if code else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--math", type=int, default=16, help="math word problems (levels 1-3 in turn)")
    ap.add_argument("--ifeval", type=int, default=8, help="instruction-following prompts")
    ap.add_argument("--code", type=int, default=16, help=f"code tasks (at most {len(CODE_TASKS)})")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--backend", default="hf", choices=["hf", "ct2"],
                    help="hf: fp32 transformers; ct2: the compiled CPU engine (same weights, faster; the loop's teacher runs it at int8)")
    ap.add_argument("--quantization", default="float32", help="ct2 weights (float32 reproduces hf's greedy text)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--compare", action="store_true", help="also score the other math and code rules")
    ap.add_argument("--dump", help="write every item (samples, teacher outputs, check) here as JSONL, to audit")
    ap.add_argument("overrides", nargs="*", help="SynthConfig key=value")
    args = ap.parse_args(argv)
    cfg = typedconfig.load(SynthConfig, None, args.overrides)
    cat = verify_if.catalogue(cfg.prompts_dir)
    items = math_items(args.math, args.seed) + if_items(args.ifeval, args.seed, cat) + code_items(args.code)
    for it in items:
        it.update(deficiency={"id": f"bench-{it['kind']}", "ability": it["kind"]}, provenance=[])
    llm = load_llm(LLMConfig(backend=args.backend, model=args.model, threads=args.threads, batch_size=args.batch_size,
                             quantization=args.quantization))
    ledger = Ledger(llm)
    t0 = time.time()
    gate.answer(ledger, items, cfg, args.seed)
    t_answer = time.time() - t0
    gate.verify(ledger, items, cfg, args.seed + 1)
    wall = time.time() - t0
    if_utils = verify_if._scorer()
    rows = {}
    for kind in ("math", "instruction", "code"):
        its = [it for it in items if it["kind"] == kind]
        if not its:
            continue
        ver = [it for it in its if it["check"].verifies]
        good = sum(correct(it, it["response"], if_utils) for it in ver)
        base = sum(correct(it, first_sample(it), if_utils) for it in its)
        lo, hi = wilson(good, len(ver))
        rows[kind] = {"items": len(its), "verified": len(ver), "yield": round(len(ver) / len(its), 3),
                      "correct_of_verified": good, "precision": round(good / len(ver), 3) if ver else None,
                      "precision_ci95": [round(lo, 3), round(hi, 3)] if ver else None,
                      "first_sample_accuracy": round(base / len(its), 3),
                      "reasons": dict(ledger.filters.get(f"verify_{kind}", {}).get("dropped", {}))}
        if kind == "instruction":
            rows[kind]["repaired"] = sum(bool(it["check"].details.get("repaired")) for it in ver)
        if kind == "math":
            rows[kind]["verified_by_level"] = {lvl: sum(it["level"] == lvl for it in ver) for lvl in (1, 2, 3)}
    print(f"verify_precision: model={args.model} backend={args.backend}"
          f"{'/' + args.quantization if args.backend == 'ct2' else ''} k={cfg.samples_per_instruction} math_rule={cfg.math_rule} "
          f"pot_programs={cfg.pot_programs} code_test_sets={cfg.code_test_sets} seed={args.seed}; "
          f"{wall:.0f} s ({t_answer:.0f} s answering), {ledger.total_tokens()} est. teacher tokens")
    print(f"{'kind':<12} {'items':>5} {'verified':>8} {'yield':>6} {'precision':>9} {'95% CI':>14} {'first-sample acc':>16}"
          f" {'target ' + str(TARGET_PRECISION):>11}")
    for kind, r in rows.items():
        ci = f"[{r['precision_ci95'][0]:.2f}, {r['precision_ci95'][1]:.2f}]" if r["verified"] else "-"
        prec = f"{r['precision']:.3f}" if r["verified"] else "-"
        print(f"{kind:<12} {r['items']:>5} {r['verified']:>8} {r['yield']:>6.3f} {prec:>9} {ci:>14} "
              f"{r['first_sample_accuracy']:>16.3f} {verdict(r):>11}")
    for kind, r in rows.items():
        extra = {k: v for k, v in r.items() if k in ("reasons", "repaired", "verified_by_level")}
        print(f"  {kind}: {json.dumps(extra)}")
    if args.compare:
        print("rules on the same samples (verified / correct of verified):")
        for rule in ("pot", "majority", "pot_and_majority"):
            for share in ((0.5, 0.75) if rule != "pot" else (cfg.math_min_share,)):
                got = [verify_math.verify(it["samples"], it["program_values"], rule, share, cfg.math_min_programs,
                                          cfg.min_response_chars) for it in items if it["kind"] == "math"]
                its = [it for it in items if it["kind"] == "math"]
                ok = [(it, verify_math.trim_solution(it["samples"][k])) for it, (k, c) in zip(its, got) if k is not None]
                print(f"  math {rule:<17} min_share={share:<5} {len(ok):>3} / {sum(correct(it, t, if_utils) for it, t in ok)}")
        for rule in ("all_tests", "trusted_asserts"):
            its = [it for it in items if it["kind"] == "code"]
            ok = []
            for it in its:
                k, c = verify_code.verify(it["solutions"], it["test_sets"], it["function"], cfg.code_min_asserts, rule,
                                          cfg.code_timeout_s, cfg.code_memory_mb)
                if k is not None:
                    ok.append((it, f"```python\n{it['solutions'][k]}\n```"))
            print(f"  code {rule:<17} {len(ok):>3} / {sum(correct(it, t, if_utils) for it, t in ok)}")
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as f:
            for it in items:
                row = {k: v for k, v in it.items() if k not in ("deficiency", "doc", "answer_prompt")}
                row["check"] = it["check"].as_meta()
                row["correct"] = correct(it, it["response"], if_utils)
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "wall_s": round(wall, 1), "argv": sys.argv[1:],
                                               "verdicts": {k: verdict(r) for k, r in rows.items()}}, indent=1))
    failed = [k for k, r in rows.items() if verdict(r) == "FAIL"]
    if failed:
        print(f"verify_precision: precision below {TARGET_PRECISION} for {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
