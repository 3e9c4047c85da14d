"""A teacher judge score (1-5) against a rubric, for kinds without a verifier.

A judge score is a check, never a verification: records judged this way carry
``meta.verified = false`` and whether they may be trained on is ``SynthConfig.train_unverified``.
"""
from __future__ import annotations

import re

from synth.prompts import render_chat, with_prefill
from synth.verify import Check

RUBRIC = "the answer is correct, complete, on topic and does what the request asks"


def format_input(instruction: str, response: str, max_chars: int = 1200) -> dict:
    return {"instruction": instruction[:max_chars], "response": response[:max_chars], "rubric": RUBRIC}


def prompt(instruction: str, response: str, prompts_dir: str | None = None) -> list[dict]:
    return render_chat("judge", prompts_dir, **format_input(instruction, response))


def parse_score(answer: str) -> int | None:
    m = re.search(r"(?i)score\s*[:=]?\s*\**\s*([1-5])\b", answer or "") or re.match(r"\s*([1-5])\b", answer or "")
    return int(m.group(1)) if m else None


def judge_check(prompt_msgs: list[dict], answer: str, min_score: int) -> Check:
    score = parse_score(with_prefill(prompt_msgs, answer))
    if score is None:
        return Check(False, "judge", "judge_unparsed", {"score": None})
    return Check(score >= min_score, "judge", "" if score >= min_score else "judge_low_score",
                 {"score": score, "min_score": min_score, "rubric": RUBRIC})
