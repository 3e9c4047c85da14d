"""Stage 4, synthesize: targeted data per deficiency, kept only when a checker shows it right.

Per served deficiency (top ``top_k`` of the ranked list) the kind of its eval tasks picks the
verifier (``synth.kinds``): IFEval checkers with repair for instruction following, sandboxed
non-vacuous tests for code, an executed program agreeing with a worked answer for math, a
judge score (never "verified") for anything else. Each attempt sends, for every deficiency
still short of its quota, one batch per step: new instructions (``synth.propose``),
Evol-Instruct for a share (``synth.evolve``, with a compliance check), k answers per
instruction and the kind's verification (``synth.gate``). A ``pool_seed_share`` of each
deficiency's instructions are Evol-Instruct seeds taken from the pool (``synth.seeds``: pool
records matching its fine tags or its failed items) instead of the teacher's proposals: each is
evolved along one random dimension and compliance-checked (a seed whose evolution fails is
eliminated, counted by reason), then answered and verified like a proposal.

The round's budget (``synth.budget``): ``max(per_deficiency × served, per_round)`` records and
``teacher_tokens_per_deficiency`` × served tokens, each deficiency getting 1 record plus a share
of the rest in proportion to its impact (largest remainder; equal shares when no impact is
known), and the same share of the tokens. Attempts repeat until every quota is met, its
teacher-token budget is spent, or ``max_attempts``; between them the budget follows yield (a
deficiency done or dry hands its unspent tokens and unmet quota to those that yield), and each
attempt's prompts are sized by the deficiency's measured verified records per prompt. A share of the kept records grows into 2..``max_turns``-turn dialogues with
role-play users, every turn verified (``synth.multiturn``). Every step and filter is counted
(``synth.ledger``); every record carries its provenance: each step's raw teacher prompt and
output, the deficiency it serves and its verification result.
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from evalsuite.records import content_hash, make_record, write_jsonl
from synth import evolve as evolve_mod
from synth import gate, multiturn, propose, verify_if
from synth.budget import Budget
from synth.decontam import EvalIndex
from synth.kinds import DEFAULT_TASK_KINDS, VERIFIABLE, check_kinds, kind_of
from synth.ledger import Ledger
from synth.llm.base import LLM, Sampling
from synth.propose import NearCopyFilter
from synth.verify_code import function_name

log = logging.getLogger(__name__)

# what the stage reads from configs/prompts (its fingerprint covers them)
TEMPLATES = (*propose.TEMPLATES, "evolve", "evolve_check", "solve", "pot", "solve_code", "code_tests", "judge",
             "followup", "roles.yaml", "constraints.yaml")


@dataclass
class SynthConfig:
    top_k: int = 5                 # deficiencies served, in rank order
    per_deficiency: int = 4        # quota: records kept per served deficiency per round
    per_round: int = 0             # quota of the round at least (split by impact like per_deficiency x served)
    oversample: float = 2.0        # instruction prompts per missing record, until a deficiency's yield is measured
    max_prompts_per_attempt: int = 32  # instruction prompts per deficiency per attempt at most (0 = no cap)
    max_attempts: int = 3          # propose-answer-verify passes while a quota is unmet
    teacher_tokens_per_deficiency: int = 60000  # est. teacher tokens (prompt+output chars/4) per deficiency; 0 = no limit
    follow_yield: bool = True      # between attempts, done/dry deficiencies hand unspent tokens and quota to yielding ones
    dry_after: int = 1             # attempts with no kept record that make a deficiency dry
    task_kinds: dict = field(default_factory=lambda: dict(DEFAULT_TASK_KINDS))  # eval task or scorer -> instruction|code|math|other
    train_unverified: Literal["none", "unverifiable", "all"] = "unverifiable"  # unverified records written: none; judge-passed ones of kinds without a verifier; also failed ones
    samples_per_instruction: int = 4  # k answers per instruction (verifiable kinds; 1 otherwise)
    evolve_share: float = 0.5      # share of instructions evolved
    evolve_check: bool = True      # compliance check of each evolution (fails are eliminated)
    pool_seed_share: float = 0.25  # share of each deficiency's instructions seeded from matching pool records (evolved)
    pool_seeds_per_deficiency: int = 8  # pool seed candidates selected per deficiency (used once each)
    pool_seed_max_chars: int = 600  # a pool instruction longer than this is no seed
    multiturn_share: float = 0.25  # share of kept records grown into dialogues
    min_turns: int = 2             # user turns of a dialogue: min_turns..max_turns
    max_turns: int = 4
    near_copy_threshold: float = 0.6  # word-3-gram Jaccard at which an instruction copies a benchmark item
    decontam_n: int = 13           # a shared word n-gram with an eval text drops an instruction/record (as mix does)
    min_instruction_chars: int = 15
    min_response_chars: int = 20
    instruct_max_new_tokens: int = 80
    instruct_temperature: float = 0.9
    evolve_temperature: float = 0.7
    response_max_new_tokens: int = 256
    response_temperature: float = 0.5  # the k answers are samples (a small teacher is more often right when cooler)
    followup_temperature: float = 0.8
    math_rule: Literal["pot", "majority", "pot_and_majority"] = "pot_and_majority"  # see synth/verify_math.py
    math_min_share: float = 0.5    # majority: share of the k answers that must agree
    math_min_programs: int = 1     # pot: programs that must print the agreed value
    pot_programs: int = 2          # program-of-thought samples per question
    pot_max_new_tokens: int = 160
    pot_temperature: float = 0.5
    code_test_sets: int = 6        # independent test sets per task (written without seeing a solution)
    code_min_asserts: int = 3      # different inputs the non-vacuous asserts must test
    code_rule: Literal["all_tests", "trusted_asserts"] = "trusted_asserts"  # see synth/verify_code.py (README: measured)
    tests_max_new_tokens: int = 200
    tests_temperature: float = 0.5
    if_max_constraints: int = 2    # constraints per instruction: 1..this
    if_repair: bool = True         # repair responses by deterministic transforms (re-checked)
    judge_min_score: int = 4       # judge score (1-5) an unverifiable record needs
    code_timeout_s: float = 10.0
    code_memory_mb: int = 512
    prompts_dir: str | None = None

    def __post_init__(self):
        check_kinds(self.task_kinds)
        if not 0.0 <= self.pool_seed_share <= 1.0:
            raise ValueError(f"pool_seed_share: need 0..1, got {self.pool_seed_share}")
        if not 1 <= self.min_turns <= self.max_turns:
            raise ValueError(f"min_turns/max_turns: need 1 <= min_turns <= max_turns, got {self.min_turns}/{self.max_turns}")


def _sampling(max_new: int, temperature: float, seed: int, stop=()) -> Sampling:
    return Sampling(max_new_tokens=max_new, temperature=temperature, seed=seed, stop=list(stop))


# ------------------------------------------------------------------ the stage
def synthesize(llm: LLM, deficiencies: list[dict], cfg: SynthConfig, round_idx: int, out_path: Path,
               seed: int, avoid_texts: Sequence[str] = (), task_scorers: dict[str, str] | None = None,
               eval_targets: dict[str, str] | None = None, pool_seeds: dict[str, list[dict]] | None = None) -> dict:
    """Write verified records for the top deficiencies to ``out_path``; return stats.

    ``avoid_texts``: eval prompts and targets no instruction may copy; ``task_scorers``: eval task
    -> its scorer (a user task's metric), for kinds; ``eval_targets``: ``task/doc_id`` -> target
    (IFEval targets list the failed items' checkers); ``pool_seeds``: deficiency id -> pool seed
    candidates, best first (``synth.seeds.select_seeds``), evolved into a ``pool_seed_share``."""
    t0 = time.time()
    rng = random.Random(f"{seed}/{round_idx}")
    for i, d in enumerate(deficiencies):
        if not isinstance(d, dict) or not d.get("ability") or "id" not in d:
            raise ValueError(f"synthesize: deficiencies[{i}] needs 'id' and 'ability' (from deficiencies.json)")
    served = deficiencies[: cfg.top_k]
    kinds = {d["id"]: kind_of(d, cfg.task_kinds, task_scorers) for d in served}
    ledger = Ledger(llm)
    bench, seen = NearCopyFilter(avoid_texts, cfg.near_copy_threshold), NearCopyFilter(threshold=0.9)
    contam = EvalIndex(list(avoid_texts), n=cfg.decontam_n)
    trainable = [d for d in served if kinds[d["id"]] in VERIFIABLE or cfg.train_unverified != "none"]
    kept: dict[str, list[dict]] = {d["id"]: [] for d in served}
    # the round's records and tokens, split over the deficiencies that can use them, by impact;
    # between attempts they follow yield (synth.budget)
    plan = Budget(trainable, len(served), cfg.per_deficiency, cfg.per_round, cfg.teacher_tokens_per_deficiency)
    quota = plan.quota
    seeds_left = {d["id"]: list((pool_seeds or {}).get(d["id"], [])) for d in trainable}
    moved: Counter = Counter()
    for attempt in range(cfg.max_attempts):
        counts = {k: len(v) for k, v in kept.items()}
        if attempt and cfg.follow_yield:
            moved.update(plan.follow_yield(counts, ledger.tokens, cfg.dry_after))
        n_of = plan.wants(counts, ledger.tokens, cfg.oversample, cfg.max_prompts_per_attempt)
        wants = [(d, kinds[d["id"]], n_of[d["id"]]) for d in trainable if d["id"] in n_of]
        if not wants:
            break
        s = seed + 1000 * attempt
        for d, _, n in wants:
            plan.sent(d["id"], n)
        picks = []   # (deficiency, kind, pool seeds) standing in for a share of its proposals
        for d, kind, n in wants:
            k = min(len(seeds_left[d["id"]]), math.floor(n * cfg.pool_seed_share + 0.5))
            picks.append((d, kind, seeds_left[d["id"]][:k]))
            del seeds_left[d["id"]][:k]
        wants = [(d, kind, n - len(p)) for (d, kind, n), (_, _, p) in zip(wants, picks)]
        items = propose.propose(ledger, wants, rng, _sampling(cfg.instruct_max_new_tokens, cfg.instruct_temperature, s,
                                                              ["\n\n"]), bench, seen, cfg.min_instruction_chars,
                                cfg.prompts_dir)
        _evolve(ledger, [it for it in items if rng.random() < cfg.evolve_share], cfg, rng, s, bench)
        if any(p for _, _, p in picks):   # alternate, so the quota does not favour either source
            items = _interleave(_pool_seed_items(ledger, picks, cfg, rng, s + 5, bench, seen), items)
        items = _finish_instructions(ledger, items, cfg, rng, bench, contam, eval_targets)
        gate.answer(ledger, items, cfg, s + 2)
        gate.verify(ledger, items, cfg, s + 3)
        _accept(ledger, items, kept, quota, cfg, contam)
        log.info("synthesize attempt %d: %s", attempt + 1, ", ".join(
            f"{d['id']} {len(kept[d['id']])}/{quota[d['id']]} ({ledger.tokens[d['id']]} tokens)" for d in trainable))

    accepted = [it for d in served for it in kept[d["id"]]]
    grow = [it for it in accepted if rng.random() < cfg.multiturn_share]
    targets = [rng.randint(cfg.min_turns, cfg.max_turns) for _ in grow]
    mt = multiturn.extend(ledger, grow, targets, cfg, rng, seed + 500, eval_targets) if grow else {"dialogues": 0}

    records = [_record(it, round_idx, seed) for it in accepted]
    write_jsonl(out_path, records)
    n = len(records)
    total = ledger.total_tokens()
    stats = {"records": n, "verified_records": sum(r["meta"]["verified"] for r in records),
             "multi_turn_records": sum(len(r["messages"]) > 2 for r in records),
             "from_pool_seeds": sum(bool(r["meta"]["pool_seed"]) for r in records),
             "pool_seeds": {"candidates": sum(len(v) for v in (pool_seeds or {}).values()),
                            "by_match": dict(Counter(sd["match"] for v in (pool_seeds or {}).values() for sd in v)),
                            "used": sum(len((pool_seeds or {}).get(d["id"], [])) - len(seeds_left[d["id"]])
                                        for d in trainable)},
             "deficiencies": len(served), "teacher_tokens": total,
             "tokens_per_kept_record": round(total / n, 1) if n else None,
             "kinds": {d["id"]: kinds[d["id"]] for d in served},
             "by_deficiency": {d["id"]: {"kind": kinds[d["id"]], "records": len(kept[d["id"]]),
                                         **plan.report(d["id"], len(kept[d["id"]]), ledger.tokens[d["id"]]),
                                         "impact": d.get("impact"),
                                         "pool_seeds": len((pool_seeds or {}).get(d["id"], [])),
                                         "verified": sum(it["check"].verifies for it in kept[d["id"]]),
                                         "tokens": ledger.tokens[d["id"]],
                                         "skipped": d not in trainable}
                               for d in served},
             "reallocated": dict(moved) or {"quota": 0, "tokens": 0},
             "steps": ledger.steps, "filters": ledger.filters, "multiturn": mt,
             "seconds": round(time.time() - t0, 1)}
    stats["records_per_minute"] = round(60 * n / max(time.time() - t0, 1e-6), 2)
    log.info("synthesize: %d records (%d verified) for %d deficiencies in %.0f s, %s teacher tokens per record",
             n, stats["verified_records"], len(served), stats["seconds"], stats["tokens_per_kept_record"])
    return stats


def _evolve(ledger: Ledger, chosen: list[dict], cfg: SynthConfig, rng: random.Random, seed: int,
            bench: NearCopyFilter, name: str = "evolve") -> list[dict]:
    """Evolve ``chosen`` in place (one random dimension each, compliance-checked); returns those
    whose evolution survived. An eliminated evolution leaves the item's instruction as it was."""
    owners = [it["deficiency"]["id"] for it in chosen]
    results, st = evolve_mod.evolve(ledger.as_llm("evolve", owners), [it["instruction"] for it in chosen], rng,
                                    _sampling(cfg.instruct_max_new_tokens * 2, cfg.evolve_temperature, seed + 1, ["\n\n"]),
                                    cfg.prompts_dir)
    ledger.parse_failed("evolve", st["parse_failures"])
    dropped = Counter(st["eliminated"])
    dropped["parse_failure"] += st["parse_failures"]
    survivors = []
    for it, (evolved, dim), raw in zip(chosen, results, st["raw"]):
        it["provenance"].append({"step": "evolve", "dimension": dim, **raw})
        if evolved is not None and bench.hits(evolved):
            dropped["near_benchmark"] += 1
        elif evolved is not None:
            survivors.append((it, evolved, dim))
    if cfg.evolve_check and survivors:
        verdicts = evolve_mod.check_evolutions(ledger.as_llm("evolve_check", [it["deficiency"]["id"] for it, _, _ in survivors]),
                                               [it["instruction"] for it, _, _ in survivors], [e for _, e, _ in survivors],
                                               [d for _, _, d in survivors],
                                               _sampling(8, 0.0, seed + 2, ["\n"]), cfg.prompts_dir)
        for (it, _, _), v in zip(survivors, verdicts):
            it["provenance"].append({"step": "evolve_check", "prompt": v["prompt"], "output": v["output"]})
            if not v["ok"]:
                dropped[v["reason"]] += 1
        survivors = [s for s, v in zip(survivors, verdicts) if v["ok"]]
    for it, evolved, dim in survivors:
        it.update(original=it["instruction"], instruction=evolved, evolved=dim)
    ledger.filter(name, len(chosen), dropped)
    return [it for it, _, _ in survivors]


def _interleave(a: list, b: list) -> list:
    out = [x for pair in zip(a, b) for x in pair]
    return out + a[len(b):] + b[len(a):]


def _pool_seed_items(ledger: Ledger, picks: list[tuple[dict, str, list[dict]]], cfg: SynthConfig,
                     rng: random.Random, seed: int, bench: NearCopyFilter, seen: NearCopyFilter) -> list[dict]:
    """Items from pool seeds: each evolved (the pool's text itself is never trained on here); a seed
    that copies a benchmark item or an earlier instruction, whose evolution is eliminated, or (code)
    whose evolved task names no function, is dropped — counted in ``pool_seeds``/``evolve_pool_seeds``."""
    items, dropped, n = [], Counter(), 0
    for d, kind, seeds in picks:
        for sd in seeds:
            n += 1
            reason = propose.instruction_drop(sd["instruction"], cfg.min_instruction_chars, bench, seen)
            if reason:
                dropped[reason] += 1
                continue
            seen.add(sd["instruction"])
            items.append({"deficiency": d, "kind": kind, "topic": None, "instruction": sd["instruction"],
                          "original": None, "evolved": None, "function": None, "pool_seed": sd["id"],
                          "provenance": [{"step": "pool_seed", "record_id": sd["id"], "match": sd["match"],
                                          "score": sd["score"], "instruction": sd["instruction"]}]})
    out = []
    for it in _evolve(ledger, items, cfg, rng, seed, bench, name="evolve_pool_seeds"):
        if it["kind"] == "code":
            it["function"] = function_name(it["instruction"])
            if not it["function"]:
                dropped["no_function_name"] += 1
                continue
        seen.add(it["instruction"])
        out.append(it)
    dropped["evolution_eliminated"] += len(items) - len(out) - dropped["no_function_name"]
    ledger.filter("pool_seeds", n, +dropped)
    return out


def _finish_instructions(ledger: Ledger, items: list[dict], cfg: SynthConfig, rng: random.Random,
                         bench: NearCopyFilter, contam: EvalIndex, eval_targets: dict | None) -> list[dict]:
    """Instruction kind: base request + constraints; every kind: no copy of an eval text."""
    cat = verify_if.catalogue(cfg.prompts_dir) if any(it["kind"] == "instruction" for it in items) else None
    out, dropped = [], Counter()
    for it in items:
        if it["kind"] == "instruction":
            d = it["deficiency"]
            it["request"] = it["instruction"]
            it["constraints"] = verify_if.draw_constraints(d, rng, cat, verify_if.failed_ids(d, eval_targets),
                                                           cfg.if_max_constraints)
            it["instruction"] = verify_if.render_instruction(it["request"], it["constraints"])
            it["postscript"] = rng.choice(cat.postscripts)
            if bench.hits(it["instruction"]):
                dropped["near_benchmark"] += 1
                continue
        if contam.match(it["instruction"]):
            dropped["contaminated"] += 1
            continue
        out.append(it)
    ledger.filter("final_instructions", len(items), dropped)
    return out


def _accept(ledger: Ledger, items: list[dict], kept: dict, quota: dict[str, int], cfg: SynthConfig,
            contam: EvalIndex) -> None:
    dropped = Counter()
    for it in items:
        chk = it["check"]
        if it["response"] is None and cfg.train_unverified == "all":
            it["response"] = gate.fallback_response(it, cfg.min_response_chars)
        ok = chk.verifies or (it["response"] is not None and (
            cfg.train_unverified == "all" or (cfg.train_unverified == "unverifiable" and it["kind"] not in VERIFIABLE
                                              and chk.passed)))
        if not ok or it["response"] is None:
            dropped[chk.reason or "unverified"] += 1
        elif contam.match(it["response"]):
            dropped["contaminated"] += 1
        elif len(kept[it["deficiency"]["id"]]) >= quota[it["deficiency"]["id"]]:
            dropped["over_quota"] += 1
        else:
            it.update(messages=[{"role": "user", "content": it["instruction"]},
                                {"role": "assistant", "content": it["response"]}], turn_checks=[], roles=[])
            kept[it["deficiency"]["id"]].append(it)
    ledger.filter("accept", len(items), dropped)


def _record(it: dict, round_idx: int, seed: int) -> dict:
    d, chk = it["deficiency"], it["check"]
    msgs = it["messages"]
    verification = chk.as_meta()
    if it["kind"] == "instruction":
        verification["constraints"] = [{k: c[k] for k in ("id", "kwargs", "text")} for c in it["constraints"]]
    if it["turn_checks"]:
        verification["turns"] = it["turn_checks"]
    verified = chk.verifies and all(t["passed"] and t["method"] not in ("judge", "none") for t in it["turn_checks"])
    meta = {"deficiency_id": d["id"], "ability": d.get("ability", ""), "kind": it["kind"], "round": round_idx,
            "seed": seed, "topic": it["topic"], "evolved": it["evolved"], "original_instruction": it["original"],
            "pool_seed": it.get("pool_seed"),
            "verified": verified, "verification": verification, "turns": sum(m["role"] == "user" for m in msgs),
            "roles": it["roles"], "deficiency": {k: d[k] for k in ("id", "ability", "error", "shortcut", "tasks", "examples")
                                                 if k in d},
            "provenance": it["provenance"]}
    return make_record(msgs, "synth", id=f"synth-r{round_idx}-{content_hash(msgs)}",
                       tags={"fine": d.get("tags", []), "macro": d.get("macro", [])}, meta=meta)
