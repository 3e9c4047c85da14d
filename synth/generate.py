"""Stage 4, synthesize: targeted instructions per deficiency, evolved, answered, verified, some multi-turn.

Per deficiency (top ``top_k`` of the ranked list): the teacher writes new questions that
exercise the missing ability (few-shot ``instruct.j2``, one topic hint per prompt for
variety); near-copies of benchmark items (``avoid_texts``) and duplicates are dropped; a
share is evolved along a random dimension (``synth.evolve``); the teacher answers; the
answers are verified (``synth.verify``); a share grows into 2-4-turn dialogues
(``synth.multiturn``). Every step counts what it produced, dropped (by reason) and failed
to parse. Records carry their provenance in ``meta``.
"""
from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from evalsuite.metrics import code_block
from evalsuite.records import content_hash, make_record, write_jsonl
from synth import evolve as evolve_mod
from synth import multiturn, parse, verify
from synth.llm.base import LLM, Sampling
from synth.overlap import NgramIndex, shingles, words
from synth.prompts import render_chat, user, with_prefill

log = logging.getLogger(__name__)

TOPICS = ["shopping", "cooking", "school", "sports", "travel", "animals", "music", "gardening", "money",
          "weather", "health", "science class", "a library", "a farm", "a birthday party", "the office",
          "computers", "movies", "history", "the ocean", "trains", "a city park", "art", "games"]


@dataclass
class SynthConfig:
    per_deficiency: int = 4        # instructions kept per deficiency (before verification)
    oversample: float = 1.5        # prompts per kept instruction (drops are expected)
    top_k: int = 5                 # deficiencies served, in rank order
    evolve_share: float = 0.5      # share of instructions evolved
    multiturn_share: float = 0.25  # share of verified records grown into dialogues
    max_turns: int = 3             # user turns of a dialogue (2..max_turns)
    near_copy_threshold: float = 0.6  # word-3-gram Jaccard at which an instruction copies a benchmark item
    min_instruction_chars: int = 15
    min_response_chars: int = 20
    instruct_max_new_tokens: int = 80
    instruct_temperature: float = 0.9
    evolve_temperature: float = 0.7
    response_max_new_tokens: int = 256
    response_temperature: float = 0.0   # greedy answers; the agreement sample uses verify_temperature
    verify_temperature: float = 0.7
    verify_numeric: bool = True
    verify_code: bool = True
    keep_unverified: bool = False  # keep records that failed agreement/execution (meta.verified=False)
    followup_temperature: float = 0.8
    code_timeout_s: float = 10.0
    code_memory_mb: int = 512
    prompts_dir: str | None = None


# ------------------------------------------------------------------ near-copy filter
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


# ------------------------------------------------------------------ instruction pieces
def format_input(deficiency: dict, topic: str) -> dict:
    return {"ability": deficiency.get("ability", ""), "error": deficiency.get("error", ""),
            "tags": list(deficiency.get("tags", []))[:3], "topic": topic}


def parse_instruction(answer: str) -> str | None:
    """The question from ``Question: ...`` (or a first list item / paragraph), or None."""
    if not answer or not answer.strip():
        return None
    if re.search(r"(?im)^[^\S\n]*\**question\**\s*[:：]", answer):
        text = parse.strip_label(answer, ["Question"])
    else:
        items = parse.parse_list(answer)
        text = items[0] if items else answer.strip()
    text = re.split(r"(?im)^[^\S\n]*(?:\**answer\**|solution|skill|topic)\s*[:：]", text)[0]
    text = text.split("\n\n")[0].strip()
    return text or None


def _count(d: dict, key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


def _sampling(cfg: SynthConfig, max_new: int, temperature: float, seed: int, stop=()) -> Sampling:
    return Sampling(max_new_tokens=max_new, temperature=temperature, seed=seed, stop=list(stop))


# ------------------------------------------------------------------ the stage
def synthesize(llm: LLM, deficiencies: list[dict], cfg: SynthConfig, round_idx: int, out_path: Path,
               seed: int, avoid_texts: Sequence[str] = ()) -> dict:
    """Write synthesized records for the top deficiencies to ``out_path``; return stats."""
    t0 = time.time()
    rng = random.Random(f"{seed}/{round_idx}")
    for i, d in enumerate(deficiencies):
        if not isinstance(d, dict) or not d.get("ability") or "id" not in d:
            raise ValueError(f"synthesize: deficiencies[{i}] needs 'id' and 'ability' (from deficiencies.json)")
    served = deficiencies[: cfg.top_k]
    stats: dict = {"deficiencies": len(served), "instructions": {"prompted": 0, "parsed": 0, "parse_failures": 0,
                                                                 "kept": 0, "dropped": {}},
                   "evolve": {}, "responses": {"prompted": 0, "dropped": {}},
                   "verify": {"numeric_checked": 0, "numeric_agree": 0, "numeric_no_number": 0, "code_checked": 0,
                              "code_passed": 0, "dropped": {}},
                   "multiturn": {}, "records": 0}
    bench = NearCopyFilter(avoid_texts, cfg.near_copy_threshold)

    # 1. new instructions per deficiency (one topic hint per prompt for variety)
    n_prompts = max(1, round(cfg.per_deficiency * cfg.oversample))
    jobs, prompts = [], []
    for d in served:
        for k in range(n_prompts):
            topic = rng.choice(TOPICS)
            jobs.append((d, topic))
            prompts.append(render_chat("instruct", cfg.prompts_dir, **format_input(d, topic)))
    answers = llm.generate(prompts, _sampling(cfg, cfg.instruct_max_new_tokens, cfg.instruct_temperature, seed,
                                              stop=["\n\n"])) if prompts else []
    st = stats["instructions"]
    st["prompted"] = len(prompts)
    seen = NearCopyFilter(threshold=0.9)  # near-exact duplicates within this run
    items: list[dict] = []
    per_def: dict[str, int] = {}
    for (d, topic), prompt, ans in zip(jobs, prompts, answers):
        ins = parse_instruction(with_prefill(prompt, ans))
        if ins is None:
            st["parse_failures"] += 1
            continue
        st["parsed"] += 1
        reason = _instruction_drop(ins, cfg, bench, seen, per_def.get(d["id"], 0))
        if reason:
            _count(st["dropped"], reason)
            continue
        seen.add(ins)
        per_def[d["id"]] = per_def.get(d["id"], 0) + 1
        items.append({"deficiency": d, "topic": topic, "instruction": ins, "original": None, "evolved": None})
    st["kept"] = len(items)

    # 2. Evol-Instruct for a share; an eliminated evolution keeps the original instruction
    chosen = [it for it in items if rng.random() < cfg.evolve_share]
    results, stats["evolve"] = evolve_mod.evolve(
        llm, [it["instruction"] for it in chosen], rng,
        _sampling(cfg, cfg.instruct_max_new_tokens * 2, cfg.evolve_temperature, seed + 1, stop=["\n\n"]),
        cfg.prompts_dir)
    for it, (evolved, dim) in zip(chosen, results):
        if evolved is None:
            continue
        if bench.hits(evolved):
            _count(stats["evolve"].setdefault("eliminated", {}), "near_benchmark")
            stats["evolve"]["kept"] -= 1
            continue
        it.update(original=it["instruction"], instruction=evolved, evolved=dim)

    # 3. responses by the teacher
    resp_sampling = _sampling(cfg, cfg.response_max_new_tokens, cfg.response_temperature, seed + 2)
    responses = llm.generate([user(it["instruction"]) for it in items], resp_sampling) if items else []
    stats["responses"]["prompted"] = len(items)
    answered = []
    for it, r in zip(items, responses):
        reason = verify.basic_check(r, cfg.min_response_chars)
        if reason:
            _count(stats["responses"]["dropped"], reason)
            continue
        it["response"] = r.strip()
        answered.append(it)

    # 4. verification: agreement for numeric answers, execution for code
    verified = _verify(llm, answered, cfg, seed, stats["verify"])

    # 5. a share grows into dialogues
    grow = [it for it in verified if rng.random() < cfg.multiturn_share]
    dialogs = [[{"role": "user", "content": it["instruction"]}, {"role": "assistant", "content": it["response"]}]
               for it in grow]
    targets = [rng.randint(2, max(2, cfg.max_turns)) for _ in grow]
    dialogs, stats["multiturn"] = multiturn.extend_dialogues(
        llm, dialogs, targets, _sampling(cfg, cfg.instruct_max_new_tokens, cfg.followup_temperature, seed + 4,
                                         stop=["\n\n"]),
        _sampling(cfg, cfg.response_max_new_tokens, cfg.response_temperature, seed + 5), cfg.prompts_dir,
        cfg.min_response_chars)
    for it, msgs in zip(grow, dialogs):
        it["messages"] = msgs

    records = [_record(it, round_idx, seed) for it in verified]
    write_jsonl(out_path, records)
    stats["records"] = len(records)
    stats["multi_turn_records"] = sum(len(r["messages"]) > 2 for r in records)
    stats["seconds"] = round(time.time() - t0, 1)
    stats["records_per_minute"] = round(60 * len(records) / max(time.time() - t0, 1e-6), 2)
    log.info("synthesize: %d records for %d deficiencies in %.0f s", len(records), len(served), stats["seconds"])
    return stats


def _instruction_drop(ins: str, cfg: SynthConfig, bench: NearCopyFilter, seen: NearCopyFilter,
                      kept_for_def: int) -> str | None:
    if len(ins) < cfg.min_instruction_chars:
        return "too_short"
    if parse.is_refusal(ins):
        return "refusal"
    if bench.hits(ins):
        return "near_benchmark"
    if seen.hits(ins):
        return "duplicate"
    if kept_for_def >= cfg.per_deficiency:
        return "over_budget"
    return None


def _verify(llm: LLM, items: list[dict], cfg: SynthConfig, seed: int, st: dict) -> list[dict]:
    numeric = [it for it in items if cfg.verify_numeric and verify.wants_number(it["instruction"])]
    if numeric:  # a second, sampled answer must reach the same number
        seconds = llm.generate([user(it["instruction"]) for it in numeric],
                               _sampling(cfg, cfg.response_max_new_tokens, cfg.verify_temperature, seed + 3))
        for it, second in zip(numeric, seconds):
            agree = verify.numbers_agree(it["response"], second)
            if agree is None:
                st["numeric_no_number"] += 1
                continue  # no number to compare: only the basic check applies
            st["numeric_checked"] += 1
            st["numeric_agree"] += int(agree)
            it["verify"] = verify.Verdict(agree, "numeric", "" if agree else "numeric_disagreement")
    for it in items:
        if "verify" in it or not (cfg.verify_code and verify.wants_code(it["instruction"], it["response"])):
            continue
        passed, status = verify.run_code_check(code_block(it["response"]), cfg.code_timeout_s, cfg.code_memory_mb)
        st["code_checked"] += 1
        st["code_passed"] += int(passed)
        it["verify"] = verify.Verdict(passed, "code", "" if passed else f"code_{status}")
    kept = []
    for it in items:
        v = it.setdefault("verify", verify.Verdict(True, "basic"))
        if not v.ok:
            _count(st["dropped"], v.reason)
            if not cfg.keep_unverified:
                continue
        kept.append(it)
    return kept


def _record(it: dict, round_idx: int, seed: int) -> dict:
    d = it["deficiency"]
    msgs = it.get("messages") or [{"role": "user", "content": it["instruction"]},
                                  {"role": "assistant", "content": it["response"]}]
    meta = {"deficiency_id": d["id"], "ability": d.get("ability", ""), "round": round_idx, "seed": seed,
            "topic": it["topic"], "evolved": it["evolved"], "original_instruction": it["original"],
            "verified": it["verify"].ok, "verify_method": it["verify"].method,
            "turns": sum(m["role"] == "user" for m in msgs)}
    return make_record(msgs, "synth", id=f"synth-r{round_idx}-{content_hash(msgs)}",
                       tags={"fine": d.get("tags", []), "macro": d.get("macro", [])}, meta=meta)
