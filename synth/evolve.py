"""Evol-Instruct evolution of an instruction along one randomly chosen dimension, with elimination.

Dimensions follow WizardLM's in-depth / in-breadth evolving, reduced to four rewrites a
small teacher can follow. A failed evolution (empty, a copy of the original, a refusal,
too short, or leaking the prompt's own labels) is eliminated and counted; the caller keeps
the original instruction then. Survivors can be validated by an AI-assistant compliance
check (``evolve_check.j2``, after WizardLM's elimination step): does the rewrite keep the
original's intent and add what the dimension asked? A "no" (or no verdict) eliminates it.
"""
from __future__ import annotations

import difflib
import random
import re
from typing import Sequence

from synth import parse
from synth.llm.base import LLM, Sampling
from synth.prompts import render_chat, with_prefill

DIMENSIONS = {
    "breadth": "about a new situation or topic that needs the same skill",
    "depth": "need more steps of reasoning to answer",
    "difficulty": "harder, with bigger numbers or an extra condition",
    "complexity": "more complex by adding one more requirement or constraint",
}
_LEAK = re.compile(r"(?i)\b(new question|rewrite the question|rewritten question|the given question)\b")


def format_input(instruction: str, dimension: str) -> dict:
    return {"instruction": instruction, "dimension": dimension, "how": DIMENSIONS[dimension]}


def parse_evolved(answer: str) -> str | None:
    text = parse.strip_label(answer, ["New question", "Rewritten question", "Question"])
    text = text.split("\n\n")[0].strip()
    return text or None


def eliminate(original: str, evolved: str | None, min_chars: int = 15) -> str | None:
    """The reason an evolution failed, or None when it is kept."""
    if not evolved:
        return "empty"
    if parse.is_refusal(evolved):
        return "refusal"
    if len(evolved) < max(min_chars, len(original) // 2):
        return "too_short"
    a, b = " ".join(original.lower().split()), " ".join(evolved.lower().split())
    if a == b or difflib.SequenceMatcher(None, a, b).ratio() >= 0.95:
        return "copy"
    if _LEAK.search(evolved):
        return "leaked_prompt"
    return None


def parse_verdict(answer: str) -> bool | None:
    m = re.search(r"(?i)verdict\s*[:=]?\s*\**\s*(yes|no)\b", answer or "") or re.match(r"(?i)\s*(yes|no)\b", answer or "")
    return m.group(1).lower() == "yes" if m else None


def check_evolutions(llm: LLM, originals: Sequence[str], evolved: Sequence[str], dims: Sequence[str],
                     sampling: Sampling, prompts_dir: str | None = None) -> list[dict]:
    """The compliance verdict of each evolution: ``{"ok": bool, "reason", "prompt", "output"}``."""
    prompts = [render_chat("evolve_check", prompts_dir, original=o, evolved=e, how=DIMENSIONS[d])
               for o, e, d in zip(originals, evolved, dims)]
    answers = llm.generate(prompts, sampling) if prompts else []
    out = []
    for prompt, ans in zip(prompts, answers):
        verdict = parse_verdict(with_prefill(prompt, ans))
        reason = "" if verdict else ("check_unparsed" if verdict is None else "check_failed")
        out.append({"ok": bool(verdict), "reason": reason, "prompt": prompt, "output": ans})
    return out


def evolve(llm: LLM, instructions: Sequence[str], rng: random.Random, sampling: Sampling,
           prompts_dir: str | None = None) -> tuple[list[tuple[str | None, str]], dict]:
    """Evolve each instruction along a random dimension.

    Returns ``[(evolved text or None if eliminated, dimension)]`` and stats
    (``prompted``, ``kept``, ``parse_failures``, ``eliminated`` by reason, ``by_dimension``,
    ``raw``: each prompt and answer, for provenance).
    """
    dims = [rng.choice(sorted(DIMENSIONS)) for _ in instructions]
    prompts = [render_chat("evolve", prompts_dir, **format_input(ins, d)) for ins, d in zip(instructions, dims)]
    answers = llm.generate(prompts, sampling) if prompts else []
    stats = {"prompted": len(prompts), "kept": 0, "parse_failures": 0, "eliminated": {}, "by_dimension": {},
             "raw": [{"prompt": p, "output": a} for p, a in zip(prompts, answers)]}
    out = []
    for ins, d, prompt, ans in zip(instructions, dims, prompts, answers):
        evolved = parse_evolved(with_prefill(prompt, ans))
        if evolved is None:
            stats["parse_failures"] += 1
            out.append((None, d))
            continue
        reason = eliminate(ins, evolved)
        if reason:
            stats["eliminated"][reason] = stats["eliminated"].get(reason, 0) + 1
            out.append((None, d))
        else:
            stats["kept"] += 1
            stats["by_dimension"][d] = stats["by_dimension"].get(d, 0) + 1
            out.append((evolved, d))
    return out, stats
