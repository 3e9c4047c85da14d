"""The control arm's data: pool records drawn at random, with the targeted mix's token count.

The comparison a round needs is "targeted data vs the same budget of ordinary data": the control
set passes every gate a retrieved record passes — the pool's conversion rules, the content rules
(``retrieve.drop_rules``), the student's ``max_seq_len`` (a long multi-turn record keeps its longest
fitting prefix of whole exchanges, as in retrieval) and the same decontamination — and is drawn in a
seeded random order until it holds as many tokens, counted by the same counter, as the targeted
records the trainer will actually train on (those that fit ``max_seq_len``). It never feeds the
next round.

``control: untargeted`` asks what the diagnosis adds: the same synthesis (budget, verifiers, Evol-
Instruct, dialogues) run on stand-in deficiencies that know only the suite's tasks (``undiagnosed``),
its verified records taken first, then random pool records up to the same token count.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Callable

from evalsuite.records import write_jsonl
from synth.decontam import EvalIndex
from synth.heuristics import DropRule, RuleSet
from synth.mix import MixConfig
from synth.retrieve import fit_record


# what an untargeted stand-in deficiency asks for, by the verifier kind of its task
UNDIAGNOSED_ABILITY = {"math": "solving math word problems with numeric answers",
                       "code": "writing correct Python functions",
                       "instruction": "following formatting and length instructions",
                       "other": "answering questions accurately"}


def undiagnosed(tasks: list[str], kind_of_task: Callable[[str], str]) -> list[dict]:
    """``deficiencies.json`` entries for the untargeted control: one per task, equal impact, named by
    the task's kind alone — no failed items, mistakes, shortcuts, scorer evidence or tags."""
    return [{"id": f"untargeted-{i}", "ability": UNDIAGNOSED_ABILITY[kind_of_task(t)], "error": "", "shortcut": "",
             "tasks": [t], "impact": round(1 / len(tasks), 6), "count": 0, "tags": [], "macro": [], "examples": []}
            for i, t in enumerate(tasks)]


def random_control(pool: list[dict], targeted: list[dict], eval_texts: list[str], mix_cfg: MixConfig,
                   count: Callable[[dict], int], seed: int, out_path: Path, *, max_seq_len: int = 0,
                   drop_rules: list[DropRule] | None = None, split_long: bool = True,
                   first: list[dict] = ()) -> dict:
    """Write the control records to ``out_path``; return counts (tokens matched, drops per gate).
    ``first``: records offered before the shuffled pool, in their order (the untargeted arm's
    synthesized ones), through the same gates and token count."""
    fits = [n for r in targeted if (n := count(r)) and (not max_seq_len or n <= max_seq_len)]
    target = sum(fits)
    index = EvalIndex(eval_texts, n=mix_cfg.decontam_n, min_words=mix_cfg.decontam_min_words,
                      boilerplate_items=mix_cfg.decontam_boilerplate_items)
    rules = RuleSet(drop_rules or [])
    taken_ids = {r["id"] for r in targeted}
    order = list(range(len(pool)))
    random.Random(f"control/{seed}").shuffle(order)
    first = list(first)
    candidates = itertools.chain(first, (pool[i] for i in order))
    chosen, used, seen, prefixed, from_first = [], 0, 0, 0, 0
    drops = {"contaminated": 0, "too_long": 0, "rule": 0}
    by_rule: dict[str, int] = {}
    for j, rec in enumerate(candidates):
        if used >= target:
            break
        seen += j >= len(first)
        if rec["id"] in taken_ids:
            continue
        rule = rules.first_match(rec)
        if rule is not None:
            drops["rule"] += 1
            by_rule[rule] = by_rule.get(rule, 0) + 1
            continue
        fit = fit_record(rec, count, max_seq_len, split_long)
        if fit is None:
            drops["too_long"] += 1
            continue
        msgs, n = fit
        if any(index.match(m["content"]) for m in msgs):
            drops["contaminated"] += 1
            continue
        if len(msgs) < len(rec["messages"]):
            rec, prefixed = {**rec, "messages": list(msgs)}, prefixed + 1
        chosen.append(rec)
        used += n
        from_first += j < len(first)
    write_jsonl(out_path, chosen)
    return {"records": len(chosen), "tokens": used, "target_tokens": target,
            "token_ratio": round(used / target, 4) if target else None,
            "pool_records_drawn": seen, "dropped_contaminated": drops["contaminated"],
            "dropped_too_long": drops["too_long"], "dropped_by_rule": by_rule, "kept_prefix": prefixed,
            "targeted_records": len(targeted), "targeted_records_over_max_seq_len": len(targeted) - len(fits),
            "max_seq_len": max_seq_len or None, "first_offered": len(first), "first_taken": from_first}
