"""The control arm's data: pool records drawn at random, with the targeted mix's token count.

The comparison a round needs is "targeted data vs the same budget of ordinary data": the control
set goes through the same pool filters (the pool's conversion rules) and the same decontamination
as the targeted mix, and is drawn in a seeded random order until it holds as many tokens (counted
by the same counter) as the targeted mix. It never feeds the next round.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from evalsuite.records import write_jsonl
from synth.decontam import EvalIndex
from synth.mix import MixConfig


def random_control(pool: list[dict], targeted: list[dict], eval_texts: list[str], mix_cfg: MixConfig,
                   count: Callable[[dict], int], seed: int, out_path: Path) -> dict:
    """Write the control records to ``out_path``; return counts (tokens matched, drops)."""
    target = sum(count(r) for r in targeted)
    index = EvalIndex(eval_texts, n=mix_cfg.decontam_n, min_words=mix_cfg.decontam_min_words,
                      boilerplate_items=mix_cfg.decontam_boilerplate_items)
    taken_ids = {r["id"] for r in targeted}
    order = list(range(len(pool)))
    random.Random(f"control/{seed}").shuffle(order)
    chosen, used, contaminated, seen = [], 0, 0, 0
    for i in order:
        if used >= target:
            break
        rec = pool[i]
        seen += 1
        if rec["id"] in taken_ids:
            continue
        if any(index.match(m["content"]) for m in rec["messages"]):
            contaminated += 1
            continue
        chosen.append(rec)
        used += count(rec)
    write_jsonl(out_path, chosen)
    return {"records": len(chosen), "tokens": used, "target_tokens": target,
            "token_ratio": round(used / target, 4) if target else None,
            "pool_records_drawn": seen, "dropped_contaminated": contaminated, "targeted_records": len(targeted)}
