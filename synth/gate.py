"""The quality gate: answer each item k times, then verify it by its kind, one teacher call per step.

An item is ``{"kind", "instruction", "deficiency", "provenance", ...}``, optionally with
``context`` (the dialogue before this turn), ``constraints`` (instruction kind), ``function``
and ``tests`` (code kind: tests already verified on an earlier turn are reused). ``answer``
sets ``samples``; ``verify`` sets ``check`` (a ``synth.verify.Check``) and ``response`` (the
kept text, or None). Steps: ``answer`` (all kinds), ``pot`` (math), ``code_tests`` (code),
``judge`` (other); the instruction kind needs no teacher call, the checkers are code.
"""
from __future__ import annotations

from collections import Counter

from synth import judge, verify_code, verify_if, verify_math
from synth.ledger import Ledger
from synth.llm.base import Sampling
from synth.prompts import render_chat, user, with_prefill


def answer_prompt(it: dict, prompts_dir: str | None = None) -> list[dict]:
    ctx = list(it.get("context") or [])
    if it["kind"] == "math":
        return render_chat("solve", prompts_dir, question=it["instruction"], context=ctx)
    if it["kind"] == "code":
        return render_chat("solve_code", prompts_dir, task=it["instruction"], context=ctx)
    return ctx + user(it["instruction"])


def answer(ledger: Ledger, items: list[dict], cfg, seed: int, step: str = "answer") -> None:
    """k samples per item (1 for kinds without a verifier), all items in one call."""
    jobs = [(it, answer_prompt(it, cfg.prompts_dir)) for it in items]
    ks = [cfg.samples_per_instruction if it["kind"] != "other" else 1 for it in items]
    prompts = [p for (_, p), k in zip(jobs, ks) for _ in range(k)]
    owners = [it["deficiency"]["id"] for it, k in zip(items, ks) for _ in range(k)]
    outs = ledger.generate(step, prompts, owners, Sampling(max_new_tokens=cfg.response_max_new_tokens,
                                                           temperature=cfg.response_temperature, seed=seed))
    i = 0
    for (it, prompt), k in zip(jobs, ks):
        it["samples"] = outs[i:i + k]
        it["answer_prompt"] = prompt
        it["provenance"].append({"step": step, "prompt": prompt, "output": outs[i:i + k]})
        i += k


def verify(ledger: Ledger, items: list[dict], cfg, seed: int, suffix: str = "") -> None:
    """Set ``check`` and ``response`` on every item; counts go to the ledger's ``verify_<kind>``."""
    by_kind: dict[str, list[dict]] = {}
    for it in items:
        by_kind.setdefault(it["kind"], []).append(it)
    _math(ledger, by_kind.get("math", []), cfg, seed + 1, suffix)
    _code(ledger, by_kind.get("code", []), cfg, seed + 2, suffix)
    for it in by_kind.get("instruction", []):
        ctx = {"topic": it.get("topic"), "postscript": it.get("postscript", "I hope this helps.")}
        it["response"], it["check"] = verify_if.verify(it["samples"], it["constraints"], ctx, cfg.if_repair,
                                                       cfg.min_response_chars, it["instruction"])
    _judge(ledger, by_kind.get("other", []), cfg, seed + 3, suffix)
    for kind, its in by_kind.items():
        ledger.filter(f"verify_{kind}{suffix}", len(its),
                      Counter(it["check"].reason for it in its if it["response"] is None or not it["check"].passed))


def fallback_response(it: dict, min_chars: int) -> str | None:
    """For ``train_unverified: all``: the first usable sample of an item that failed its check."""
    from synth.verify import basic_check

    for s in it.get("samples") or []:
        if it["kind"] == "code":
            code = verify_code.parse_solution(s)
            if code:
                return f"```python\n{code}\n```"
        elif basic_check(s, min_chars) is None:
            return verify_math.trim_solution(s) if it["kind"] == "math" else s.strip()
    return None


def _math(ledger: Ledger, items: list[dict], cfg, seed: int, suffix: str) -> None:
    k = cfg.pot_programs if cfg.math_rule != "majority" else 0
    prompts = [render_chat("pot", cfg.prompts_dir, question=it["instruction"], context=list(it.get("context") or []))
               for it in items for _ in range(k)]
    outs = ledger.generate("pot" + suffix, prompts, [it["deficiency"]["id"] for it in items for _ in range(k)],
                           Sampling(max_new_tokens=cfg.pot_max_new_tokens, temperature=cfg.pot_temperature,
                                    seed=seed, stop=["\n```"]))
    for j, it in enumerate(items):
        raw = outs[j * k:(j + 1) * k]
        programs = [verify_math.parse_program(r) for r in raw]  # the continuation of the prefilled fence
        ledger.parse_failed("pot" + suffix, sum(p is None for p in programs))
        it["program_values"] = values = verify_math.run_programs(programs, cfg.code_timeout_s, cfg.code_memory_mb)
        if k:
            it["provenance"].append({"step": "pot" + suffix, "prompt": prompts[j * k], "output": raw})
        kept, it["check"] = verify_math.verify(it["samples"], values, cfg.math_rule, cfg.math_min_share,
                                               cfg.math_min_programs, cfg.min_response_chars)
        it["response"] = verify_math.trim_solution(it["samples"][kept]) if kept is not None else None


def _code(ledger: Ledger, items: list[dict], cfg, seed: int, suffix: str) -> None:
    for it in items:
        it["solutions"] = [verify_code.parse_solution(s) for s in it["samples"]]
    need = [it for it in items if not it.get("tests")]
    k = cfg.code_test_sets
    prompts, owners = [], []
    for it in need:
        sig = next((verify_code.signature(s, it["function"]) for s in it["solutions"] if s
                    and verify_code.signature(s, it["function"])), None) or f"def {it['function']}(...)"
        prompts += [render_chat("code_tests", cfg.prompts_dir, task=it["instruction"], signature=sig)] * k
        owners += [it["deficiency"]["id"]] * k
    outs = ledger.generate("code_tests" + suffix, prompts, owners,
                           Sampling(max_new_tokens=cfg.tests_max_new_tokens, temperature=cfg.tests_temperature,
                                    seed=seed, stop=["\n```"]))
    for j, it in enumerate(need):
        raw = outs[j * k:(j + 1) * k]
        it["test_sets"] = [verify_code.parse_tests(with_prefill(prompts[j * k], r)) for r in raw]
        ledger.parse_failed("code_tests" + suffix, sum(t is None for t in it["test_sets"]))
        it["provenance"].append({"step": "code_tests" + suffix, "prompt": prompts[j * k], "output": raw})
    for it in items:
        tests = it.get("tests") or it["test_sets"]
        rule = "all_tests" if it.get("tests") else cfg.code_rule   # a later turn is held to the kept tests
        kept, it["check"] = verify_code.verify(it["solutions"], tests, it["function"], cfg.code_min_asserts, rule,
                                               cfg.code_timeout_s, cfg.code_memory_mb)
        it["response"] = f"```python\n{it['solutions'][kept]}\n```" if kept is not None else None
        if kept is not None and not it.get("tests"):
            it["tests"] = it["check"].details["tests"]


def _judge(ledger: Ledger, items: list[dict], cfg, seed: int, suffix: str) -> None:
    from synth.verify import Check, basic_check

    usable = [(it, next((s.strip() for s in it["samples"] if basic_check(s, cfg.min_response_chars) is None), None))
              for it in items]
    asked = [(it, r) for it, r in usable if r is not None]
    prompts = [judge.prompt(it["instruction"], r, cfg.prompts_dir) for it, r in asked]
    outs = ledger.generate("judge" + suffix, prompts, [it["deficiency"]["id"] for it, _ in asked],
                           Sampling(max_new_tokens=8, temperature=0.0, seed=seed, stop=["\n"]))
    for it, r in usable:
        if r is None:
            it["response"], it["check"] = None, Check(False, "judge", "no_usable_sample")
    for (it, r), prompt, out in zip(asked, prompts, outs):
        it["check"] = judge.judge_check(prompt, out, cfg.judge_min_score)
        it["response"] = r
        it["provenance"].append({"step": "judge" + suffix, "prompt": prompt, "output": out})
