"""Multi-turn dialogues by role-play: the teacher writes the user's follow-up, then answers it.

A single-turn (instruction, response) pair grows to its target number of user turns
(2-4); when a follow-up is unparseable or its answer fails the basic check, that dialogue
stops growing where it is (counted), so a dialogue never ends on a user turn.
"""
from __future__ import annotations

import re
from typing import Sequence

from synth import parse
from synth.llm.base import LLM, Sampling
from synth.prompts import render_chat, with_prefill
from synth.verify import basic_check

MAX_TURN_CHARS = 600  # per turn shown to the role-playing teacher


def format_input(messages: Sequence[dict]) -> dict:
    turns = []
    for m in messages:
        if m["role"] == "system":
            continue
        c = m["content"].strip()
        turns.append({"role": m["role"], "content": c if len(c) <= MAX_TURN_CHARS else c[:MAX_TURN_CHARS] + " ..."})
    return {"turns": turns}


def parse_followup(answer: str) -> str | None:
    text = parse.strip_label(answer, ["User", "Follow-up", "Question"])
    text = re.split(r"(?im)^[^\S\n]*assistant\s*:", text)[0]  # the teacher sometimes answers itself too
    text = text.split("\n\n")[0].strip()
    if len(text) < 5 or parse.is_refusal(text):
        return None
    return text


def _user_turns(messages: Sequence[dict]) -> int:
    return sum(m["role"] == "user" for m in messages)


def extend_dialogues(llm: LLM, dialogues: list[list[dict]], targets: list[int], followup_sampling: Sampling,
                     answer_sampling: Sampling, prompts_dir: str | None = None,
                     min_answer_chars: int = 20) -> tuple[list[list[dict]], dict]:
    """Grow each dialogue (ending on an assistant turn) to ``targets[i]`` user turns."""
    dialogues = [list(d) for d in dialogues]
    stats = {"dialogues": len(dialogues), "prompted": 0, "parse_failures": 0, "turns_added": 0,
             "dropped_answers": {}, "completed": 0}
    active = [i for i, d in enumerate(dialogues) if _user_turns(d) < targets[i]]
    step = 0
    while active:
        step += 1
        prompts = [render_chat("followup", prompts_dir, **format_input(dialogues[i])) for i in active]
        answers = llm.generate(prompts, followup_sampling)
        stats["prompted"] += len(prompts)
        asked = []
        for i, prompt, ans in zip(active, prompts, answers):
            q = parse_followup(with_prefill(prompt, ans))
            if q is None:
                stats["parse_failures"] += 1
            else:
                asked.append((i, q))
        replies = llm.generate([dialogues[i] + [{"role": "user", "content": q}] for i, q in asked],
                               Sampling(**{**answer_sampling.__dict__, "seed": answer_sampling.seed + step})) \
            if asked else []
        still = []
        for (i, q), reply in zip(asked, replies):
            reason = basic_check(reply, min_answer_chars)
            if reason:
                stats["dropped_answers"][reason] = stats["dropped_answers"].get(reason, 0) + 1
                continue
            dialogues[i] += [{"role": "user", "content": q}, {"role": "assistant", "content": reply.strip()}]
            stats["turns_added"] += 1
            if _user_turns(dialogues[i]) < targets[i]:
                still.append(i)
        active = still
    stats["completed"] = sum(_user_turns(d) >= t for d, t in zip(dialogues, targets))
    return dialogues, stats
