"""Multi-turn dialogues by role-play, every assistant turn verified by its kind.

A verified single-turn item grows to its target number of user turns (2..``max_turns``): the
teacher plays a user role from ``configs/prompts/roles.yaml`` (a beginner asking why, a
reviewer doubting the answer, a learner asking for a harder version, ...; one role per turn,
in file order from a random start) and writes the next user message (``followup.j2``); for the
instruction kind the message also carries a fresh constraint from the catalogue. The answer
is sampled k times and goes through the same gate as a first turn (``synth.gate``: worked
answer agreeing with a program for math, the first turn's verified tests for code, the IFEval
checkers for constraints (drawn from the checkers the deficiency failed), a judge score for other kinds). A turn that fails ends its dialogue
where it is (counted by reason): a dialogue never ends on a user turn or an unverified answer.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Sequence

from synth import gate, parse, verify_if
from synth.ledger import Ledger
from synth.llm.base import Sampling
from synth.prompts import load_data, render_chat, with_prefill

MAX_TURN_CHARS = 600  # per turn shown to the role-playing teacher


def load_roles(prompts_dir: str | None = None) -> list[dict]:
    roles = load_data("roles.yaml", prompts_dir)
    if not isinstance(roles, list) or not roles:
        raise ValueError("roles.yaml: a non-empty list of {name, says, example}")
    for i, r in enumerate(roles):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) and r[k] for k in ("name", "says", "example")):
            raise ValueError(f"roles.yaml: roles[{i}] needs non-empty 'name', 'says' and 'example'")
    return roles


def format_input(messages: Sequence[dict], role: dict) -> dict:
    turns = []
    for m in messages:
        if m["role"] == "system":
            continue
        c = m["content"].strip()
        turns.append({"role": m["role"], "content": c if len(c) <= MAX_TURN_CHARS else c[:MAX_TURN_CHARS] + " ..."})
    return {"turns": turns, "role": role}


def parse_followup(answer: str) -> str | None:
    text = parse.strip_label(answer, ["User", "Follow-up", "Question"])
    text = re.split(r"(?im)^[^\S\n]*assistant\s*:", text)[0]  # the teacher sometimes answers itself too
    text = text.split("\n\n")[0].strip()
    if len(text) < 5 or parse.is_refusal(text):
        return None
    return text


def _user_turns(messages: Sequence[dict]) -> int:
    return sum(m["role"] == "user" for m in messages)


def extend(ledger: Ledger, items: list[dict], targets: list[int], cfg, rng: random.Random, seed: int,
           eval_targets: dict[str, str] | None = None) -> dict:
    """Grow each verified item's dialogue (``it["messages"]``) to ``targets[i]`` user turns; each
    added turn's check goes to ``it["turn_checks"]`` and its role to ``it["roles"]``. An
    instruction-following turn's constraint is drawn from the checkers the deficiency failed
    (``verify_if.failed_ids``; ``eval_targets`` as for the first turn), like the first turn's."""
    roles = load_roles(cfg.prompts_dir)
    cat = verify_if.catalogue(cfg.prompts_dir) if any(it["kind"] == "instruction" for it in items) else None
    stats = {"dialogues": len(items), "turns_added": 0, "stopped": {}, "completed": 0, "by_role": {}}
    starts = [rng.randrange(len(roles)) for _ in items]
    active = [i for i, it in enumerate(items) if _user_turns(it["messages"]) < targets[i]]
    step = 0
    while active:
        step += 1
        role_of = {i: roles[(starts[i] + _user_turns(items[i]["messages"]) - 1) % len(roles)] for i in active}
        prompts = [render_chat("followup", cfg.prompts_dir, **format_input(items[i]["messages"], role_of[i]))
                   for i in active]
        outs = ledger.generate("followup", prompts, [items[i]["deficiency"]["id"] for i in active],
                               Sampling(max_new_tokens=cfg.instruct_max_new_tokens,
                                        temperature=cfg.followup_temperature, seed=seed + 10 * step, stop=["\n\n"]))
        turns, stopped = [], Counter()
        for i, prompt, out in zip(active, prompts, outs):
            it = items[i]
            q = parse_followup(with_prefill(prompt, out))
            it["provenance"].append({"step": "followup", "role": role_of[i]["name"], "prompt": prompt, "output": out})
            if q is None:
                ledger.parse_failed("followup")
                stopped["followup_unparsed"] += 1
                continue
            turn = {"index": i, "kind": it["kind"], "deficiency": it["deficiency"], "topic": it.get("topic"),
                    "context": list(it["messages"]), "function": it.get("function"), "tests": it.get("tests"),
                    "provenance": it["provenance"], "instruction": q}
            if it["kind"] == "instruction":
                turn["constraints"] = verify_if.draw_constraints(
                    it["deficiency"], rng, cat, verify_if.failed_ids(it["deficiency"], eval_targets),
                    cfg.if_max_constraints)
                turn["instruction"] = verify_if.render_instruction(q, turn["constraints"])
            turns.append(turn)
        gate.answer(ledger, turns, cfg, seed + 10 * step + 1, step="answer_turn")
        gate.verify(ledger, turns, cfg, seed + 10 * step + 2, suffix="_turn")
        still = []
        for t in turns:
            it, chk = items[t["index"]], t["check"]
            if t["response"] is None or not chk.passed:
                stopped[chk.reason or "failed"] += 1
                continue
            it["messages"] += [{"role": "user", "content": t["instruction"]}, {"role": "assistant", "content": t["response"]}]
            it["turn_checks"].append({**chk.as_meta(), **({"constraints": t["constraints"]} if "constraints" in t else {})})
            it["roles"].append(role_of[t["index"]]["name"])
            stats["turns_added"] += 1
            stats["by_role"][role_of[t["index"]]["name"]] = stats["by_role"].get(role_of[t["index"]]["name"], 0) + 1
            if _user_turns(it["messages"]) < targets[t["index"]]:
                still.append(t["index"])
        for reason, c in stopped.items():
            stats["stopped"][reason] = stats["stopped"].get(reason, 0) + c
        active = still
    stats["completed"] = sum(_user_turns(it["messages"]) >= t for it, t in zip(items, targets))
    return stats
