"""New instructions per deficiency, by kind: the first teacher step of synthesize.

The template follows the kind: ``request.j2`` (a writing request; instruction-following
constraints are added after evolution, ``synth.verify_if``), ``instruct_code.j2`` (a Python
task naming its function), ``instruct.j2`` (a question exercising the skill, for math and
other kinds). Each prompt shows what diagnosis found: the ability, the student's mistake, the
shortcut it took and the scorer's findings (expected vs given number and last step for math, the
failing assert for code, the failed checker ids for instruction following), so the new
instruction is one where that shortcut fails. One topic hint per prompt gives variety. Drops, counted by reason: parse
failures, ``too_short``, ``refusal``, ``near_benchmark`` (word-3-gram Jaccard with an eval
item), ``duplicate``, ``no_function_name`` (code).
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Sequence

from synth import parse
from synth.ledger import Ledger
from synth.llm.base import Sampling
from synth.overlap import NgramIndex, shingles, words
from synth.prompts import render_chat, with_prefill
from synth.verify_code import function_name

TOPICS = ["shopping", "cooking", "school", "sports", "travel", "animals", "music", "gardening", "money",
          "weather", "health", "science class", "a library", "a farm", "a birthday party", "the office",
          "computers", "movies", "history", "the ocean", "trains", "a city park", "art", "games"]
TEMPLATE = {"instruction": "request", "code": "instruct_code", "math": "instruct", "other": "instruct"}
TEMPLATES = ("request", "instruct_code", "instruct")
LABELS = ["Question", "Request", "Task"]


class NearCopyFilter:
    """Finds texts whose word 3-grams nearly equal a reference text's (``synth.overlap``)."""

    def __init__(self, texts: Sequence[str] = (), threshold: float = 0.6, n: int = 3):
        self.threshold, self.n = threshold, n
        self.index = NgramIndex()
        for t in texts:
            self.add(t)

    def add(self, text: str) -> None:
        sh = shingles(words(text), self.n)
        if sh:
            self.index.add(sh)

    def hits(self, text: str) -> bool:
        return self.index.jaccard_match(shingles(words(text), self.n), self.threshold) is not None


def format_input(deficiency: dict, topic: str, max_chars: int = 300) -> dict:
    ev = deficiency.get("evidence") or {}
    findings = [str(f)[:max_chars] for f in ev.get("findings") or [] if f][:2]
    checks = list(dict.fromkeys(c["id"] for c in ev.get("checks") or [] if isinstance(c, dict) and c.get("id")))
    return {"ability": deficiency.get("ability", ""), "error": str(deficiency.get("error") or "")[:max_chars],
            "shortcut": str(deficiency.get("shortcut") or "")[:max_chars], "findings": findings,
            "checks": checks[:3], "tags": list(deficiency.get("tags", []))[:3], "topic": topic}


def parse_instruction(answer: str) -> str | None:
    """The text after ``Question:``/``Request:``/``Task:`` (or a first list item / paragraph), or None."""
    if not answer or not answer.strip():
        return None
    if re.search(r"(?im)^[^\S\n]*\**(?:question|request|task)\**\s*[:：]", answer):
        text = parse.strip_label(answer, LABELS)
    else:
        items = parse.parse_list(answer)
        text = items[0] if items else answer.strip()
    text = re.split(r"(?im)^[^\S\n]*(?:\**answer\**|solution|skill|topic)\s*[:：]", text)[0]
    text = text.split("\n\n")[0].strip()
    return text or None


def instruction_drop(ins: str, min_chars: int, bench: NearCopyFilter, seen: NearCopyFilter) -> str | None:
    if len(ins) < min_chars:
        return "too_short"
    if parse.is_refusal(ins):
        return "refusal"
    if bench.hits(ins):
        return "near_benchmark"
    if seen.hits(ins):
        return "duplicate"
    return None


def propose(ledger: Ledger, wants: list[tuple[dict, str, int]], rng: random.Random, sampling: Sampling,
            bench: NearCopyFilter, seen: NearCopyFilter, min_chars: int = 15,
            prompts_dir: str | None = None) -> list[dict]:
    """``wants``: (deficiency, kind, prompts to send). Returns new items (one teacher call)."""
    jobs, prompts = [], []
    for d, kind, n in wants:
        for _ in range(n):
            topic = rng.choice(TOPICS)
            jobs.append((d, kind, topic))
            prompts.append(render_chat(TEMPLATE[kind], prompts_dir, **format_input(d, topic)))
    outs = ledger.generate("instruct", prompts, [d["id"] for d, _, _ in jobs], sampling)
    items, dropped = [], Counter()
    for (d, kind, topic), prompt, out in zip(jobs, prompts, outs):
        text = parse_instruction(with_prefill(prompt, out))
        if text is None:
            ledger.parse_failed("instruct")
            dropped["parse_failure"] += 1
            continue
        reason = instruction_drop(text, min_chars, bench, seen)
        if reason is None and kind == "code" and not function_name(text):
            reason = "no_function_name"
        if reason:
            dropped[reason] += 1
            continue
        seen.add(text)
        items.append({"deficiency": d, "kind": kind, "topic": topic, "instruction": text, "original": None,
                      "evolved": None, "function": function_name(text) if kind == "code" else None,
                      "provenance": [{"step": "instruct", "prompt": prompt, "output": out}]})
    ledger.filter("instructions", len(prompts), dropped)
    return items
