"""The control arm's data: pool records drawn at random, with the targeted mix's token count.

The comparison a round needs is "targeted data vs the same budget of ordinary data": the control
set passes every gate a retrieved record passes — the pool's conversion rules, the content rules
(``retrieve.drop_rules``), the student's ``max_seq_len`` (a long multi-turn record keeps its longest
fitting prefix of whole exchanges, as in retrieval) and the same decontamination — and is drawn in a
seeded random order until it holds as many tokens, counted by the same counter, as the targeted
records the trainer will actually train on (those that fit ``max_seq_len``). It never feeds the
next round.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from evalsuite.records import write_jsonl
from synth.decontam import EvalIndex
from synth.heuristics import DropRule, RuleSet
from synth.mix import MixConfig
from synth.retrieve import fit_record


def random_control(pool: list[dict], targeted: list[dict], eval_texts: list[str], mix_cfg: MixConfig,
                   count: Callable[[dict], int], seed: int, out_path: Path, *, max_seq_len: int = 0,
                   drop_rules: list[DropRule] | None = None, split_long: bool = True) -> dict:
    """Write the control records to ``out_path``; return counts (tokens matched, drops per gate)."""
    fits = [n for r in targeted if (n := count(r)) and (not max_seq_len or n <= max_seq_len)]
    target = sum(fits)
    index = EvalIndex(eval_texts, n=mix_cfg.decontam_n, min_words=mix_cfg.decontam_min_words,
                      boilerplate_items=mix_cfg.decontam_boilerplate_items)
    rules = RuleSet(drop_rules or [])
    taken_ids = {r["id"] for r in targeted}
    order = list(range(len(pool)))
    random.Random(f"control/{seed}").shuffle(order)
    chosen, used, seen, prefixed = [], 0, 0, 0
    drops = {"contaminated": 0, "too_long": 0, "rule": 0}
    by_rule: dict[str, int] = {}
    for i in order:
        if used >= target:
            break
        rec = pool[i]
        seen += 1
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
    write_jsonl(out_path, chosen)
    return {"records": len(chosen), "tokens": used, "target_tokens": target,
            "token_ratio": round(used / target, 4) if target else None,
            "pool_records_drawn": seen, "dropped_contaminated": drops["contaminated"],
            "dropped_too_long": drops["too_long"], "dropped_by_rule": by_rule, "kept_prefix": prefixed,
            "targeted_records": len(targeted), "targeted_records_over_max_seq_len": len(targeted) - len(fits),
            "max_seq_len": max_seq_len or None}
