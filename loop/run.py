"""THE algorithm: one round is EVAL -> TAG -> DIAGNOSE -> SYNTHESIZE + RETRIEVE -> MIX -> TRAIN.

Reads top to bottom like DESIGN.md's diagram. Each stage is a function from input
files to output files under ``round_NNN/<stage>/``; ``RunDir.stage`` makes it atomic
and resumable (fingerprint in DONE). Model-heavy stages (eval, train, and the teacher
on a GPU) run in subprocesses so their memory is freed when they end.
"""
from __future__ import annotations

import importlib.metadata
import logging
import statistics
import time
from collections import Counter
from pathlib import Path

from evalsuite.harness import run_eval
from evalsuite.models import resolve_model
from evalsuite.records import read_json, read_jsonl, read_records, write_json, write_jsonl
from evalsuite.samples import decontam_rows, sample_key, split_rows
from evalsuite.stats import paired_diff
from evalsuite.suite import load_suite, suite_hash
from loop import isolate, preflight
from loop.artifacts import RunDir, StageResult
from loop.config import Config, save_config, to_dict
from loop.report import write_report
from loop.tracking import Tracker
from synth.generate import TEMPLATES as SYNTH_TEMPLATES
from synth.pool import source_fingerprint
from synth.prompts import templates_hash

log = logging.getLogger("loop")
VERSION = importlib.metadata.version("synthloop")


def run(cfg: Config, run_dir: Path) -> dict:
    preflight.check(cfg, run_dir)   # everything the run will need, before any work
    rd = RunDir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    state = rd.update_state(name=cfg.name, rounds_planned=cfg.rounds, status="running")
    tracker = Tracker(run_dir, cfg.name, to_dict(cfg), cfg.tracking.wandb, cfg.tracking.project,
                      cfg.tracking.entity, run_id=state.get("wandb_id"))
    rd.update_state(wandb_id=tracker.run_id, wandb_dir=tracker.run_path)
    student = resolve_model(cfg.student.model, cfg.cache_dir)
    cache = Path(cfg.cache_dir)
    # what the stages read besides their config slice and upstream outputs: the code's version,
    # the suite's files, the prompt templates, the pool source (each in the stages that read it)
    ext = {"eval": [VERSION, suite_hash(cfg.eval.suite)],
           "tag": [VERSION, templates_hash(("tag",), cfg.tag.prompts_dir)],
           "diagnose": [VERSION, templates_hash(("diagnose", "ability"), cfg.diagnose.prompts_dir)],
           "synthesize": [VERSION, templates_hash(SYNTH_TEMPLATES, cfg.synthesize.prompts_dir)],
           "retrieve": [VERSION, source_fingerprint(cfg.retrieve.pool)],
           "mix": [VERSION], "train": [VERSION]}

    adapter, train_fp, history, test_scores = None, "base", [], []
    try:
        for r in range(cfg.rounds):
            log.info("===== round %d / %d =====", r, cfg.rounds - 1)
            walls: dict[str, float] = {}

            def done(res: StageResult, walls=walls) -> None:
                walls[res.name] = res.wall_s
                log.info("[round %d] %-10s %s in %.1f s  %s", r, res.name,
                         "resumed" if res.skipped else "done", res.wall_s, _brief(res.summary))

            # 1. EVAL the current student (base + adapter, never merged): per-item samples + the
            #    texts no training record may overlap (a run extended with more rounds finds this
            #    student already measured in final/)
            ev = rd.stage(r, "eval", [cfg.eval, cfg.student, train_fp, *ext["eval"]],
                          lambda out: eval_stage(cfg, student, adapter, out), on_done=done, reuse_from=("final",))
            samples, decontam = ev.dir / "samples.jsonl", ev.dir / "decontam_texts.jsonl"

            # 2. TAG the dev items (teacher; cached by content hash across rounds)
            tg = rd.stage(r, "tag", [cfg.tag, cfg.teacher, ev.fingerprint, *ext["tag"]],
                          lambda out: _teacher(tag_stage, cfg, out, samples=samples,
                                               cache_path=run_dir / "cache" / "tags.jsonl"), on_done=done)

            # 3. DIAGNOSE the failed dev items into ranked deficiencies
            dg = rd.stage(r, "diagnose", [cfg.diagnose, cfg.teacher, tg.fingerprint, *ext["diagnose"]],
                          lambda out: _teacher(diagnose_stage, cfg, out, samples=samples,
                                               tags=tg.dir / "tags.jsonl"), on_done=done)
            deficiencies = dg.dir / "deficiencies.json"

            # 4. SYNTHESIZE targeted instructions for the top deficiencies
            sy = rd.stage(r, "synthesize", [cfg.synthesize, cfg.teacher, cfg.seed, dg.fingerprint, *ext["synthesize"]],
                          lambda out: _teacher(synthesize_stage, cfg, out, deficiencies=deficiencies,
                                               avoid=decontam, round_idx=r), on_done=done)

            # 5. RETRIEVE matched records from the pool (neighbours of failures and deficiencies)
            rt = rd.stage(r, "retrieve", [cfg.retrieve, dg.fingerprint, *ext["retrieve"]],
                          lambda out: retrieve_stage(cfg, cache, samples, deficiencies, out), on_done=done)

            # 6. MIX: dedup + decontaminate the union into the exact training input
            mx = rd.stage(r, "mix", [cfg.mix, sy.fingerprint, rt.fingerprint, *ext["mix"]],
                          lambda out: mix_stage(cfg, sy.dir / "records.jsonl", rt.dir / "records.jsonl",
                                                decontam, out), on_done=done)

            # 7. TRAIN the next adapter (subprocess; a killed run resumes from its checkpoint)
            tr = rd.stage(r, "train", [cfg.train, cfg.student, mx.fingerprint, train_fp, *ext["train"]],
                          lambda out: isolate.train_subprocess(cfg.train, [mx.dir / "train_data.jsonl"], student,
                                                               out, adapter_in=adapter, history=list(history)),
                          keep_partial=True, on_done=done)
            adapter, train_fp = str(tr.dir / "adapter"), tr.fingerprint
            history.append(tr.dir / "train_set.jsonl")

            # 8. TRACK
            scores = read_json(ev.dir / "results.json")
            test_scores.append(_headline(scores))
            _track(rd, tracker, r, scores, dict(tag=tg, diagnose=dg, synthesize=sy, retrieve=rt, mix=mx, train=tr),
                   walls)
            if _plateaued(test_scores, cfg):
                log.info("test score plateaued (%s); stopping after round %d", test_scores, r)
                rd.update_state(stopped_reason="plateau")
                break

        # the last adapter is measured too: that is the student the loop hands over
        fin = rd.stage("final", "eval", [cfg.eval, cfg.student, train_fp, *ext["eval"]],
                       lambda out: eval_stage(cfg, student, adapter, out))
        final_scores = read_json(fin.dir / "results.json")
        tracker.log({**_score_metrics(final_scores), "final": 1}, step=len(test_scores))
        tracker.summary({"final/test_mean": _headline(final_scores)})
        rd.update_state(status="finished", final={"adapter": adapter, "test_mean": _headline(final_scores)})
        write_report(run_dir)
        return rd.state()
    finally:
        tracker.close()


# ------------------------------------------------------------------ stage glue
# Each stage function reads its inputs from files and writes its outputs under ``out``, so it can
# be rerun from the run directory alone. Teacher stages are top-level functions: ``isolate.call``
# pickles them by reference when the teacher needs its own process.

def eval_stage(cfg: Config, student: str, adapter: str | None, out: Path) -> dict:
    res = isolate.call(run_eval, cfg.eval, student, adapter, out)
    write_jsonl(out / "decontam_texts.jsonl", decontam_rows(read_jsonl(out / "samples.jsonl")))
    return {"test_mean": _headline(res), "wall_s": res.get("wall_s")}


def tag_stage(cfg: Config, out: Path, samples: Path, cache_path: Path) -> dict:
    from synth.tagging import tag_texts

    dev, _ = split_rows(read_jsonl(samples))
    texts = {sample_key(s): s["prompt"] for s in dev}
    tags, stats = _with_teacher(cfg, lambda llm: tag_texts(llm, texts, cfg.tag, cache_path))
    write_jsonl(out / "tags.jsonl", ({"key": k, **tags[k]} for k in texts if k in tags))
    write_json(out / "stats.json", stats)
    return stats


def diagnose_stage(cfg: Config, out: Path, samples: Path, tags: Path) -> dict:
    from synth.diagnose import diagnose

    dev, failures = split_rows(read_jsonl(samples))
    tag_of = {row["key"]: {"fine": row.get("fine", []), "macro": row.get("macro", [])} for row in read_jsonl(tags)}
    sizes = dict(Counter(s["task"] for s in dev))     # impact = share of a task's dev items lost
    if not failures:  # nothing to diagnose: no teacher needed
        return diagnose(None, [], tag_of, cfg.diagnose, out, task_sizes=sizes)
    return _with_teacher(cfg, lambda llm: diagnose(llm, failures, tag_of, cfg.diagnose, out, task_sizes=sizes))


def synthesize_stage(cfg: Config, out: Path, deficiencies: Path, avoid: Path, round_idx: int) -> dict:
    from synth.generate import synthesize

    defs = read_json(deficiencies)["deficiencies"]
    path = out / "records.jsonl"
    if not defs:
        write_jsonl(path, [])
        return {"records": 0, "reason": "no deficiencies"}
    rows = read_jsonl(avoid)
    avoid_texts = [row["text"] for row in rows]
    targets = {row["key"]: row["text"] for row in rows if row.get("field") == "target"}  # IFEval: the checkers
    scorers = {t.name: t.metric or t.scoring_from or t.task or t.name for t in load_suite(cfg.eval.suite).tasks}
    return _with_teacher(cfg, lambda llm: synthesize(llm, defs, cfg.synthesize, round_idx, path,
                                                     seed=cfg.seed + round_idx, avoid_texts=avoid_texts,
                                                     task_scorers=scorers, eval_targets=targets))


def retrieve_stage(cfg: Config, cache: Path, samples: Path, deficiencies: Path, out: Path) -> dict:
    from synth.pool import load_pool, pool_stats
    from synth.retrieve import retrieve

    dev, failures = split_rows(read_jsonl(samples))
    items = failures or dev
    defs = read_json(deficiencies)["deficiencies"]
    queries = [s["prompt"] for s in items] + [d["ability"] for d in defs]
    # a deficiency stands for `count` failures: weight its query accordingly
    weights = [1.0] * len(items) + [float(max(1, d.get("count", 1))) for d in defs]
    pool = load_pool(cfg.retrieve.pool, cache)
    stats = retrieve(pool, queries, cfg.retrieve, cache, out / "records.jsonl", weights=weights)
    return {**stats, "pool": pool_stats(cfg.retrieve.pool, cache)}   # what the pool's filters kept and dropped


def mix_stage(cfg: Config, synthesized: Path, retrieved: Path, decontam: Path, out: Path) -> dict:
    from synth.mix import mix

    return mix(read_records(synthesized), read_records(retrieved), [row["text"] for row in read_jsonl(decontam)],
               cfg.mix, out / "train_data.jsonl")


def _teacher(fn, cfg: Config, out: Path, **kw) -> dict:
    # a teacher on a GPU (or vLLM) gets its own process so its memory is freed afterwards
    if cfg.teacher.backend == "vllm" or (cfg.teacher.backend == "hf" and cfg.teacher.device != "cpu"):
        return isolate.call(fn, cfg, out, **kw)
    return fn(cfg, out, **kw)


def _with_teacher(cfg: Config, fn):
    from synth.llm import load_llm

    llm = load_llm(cfg.teacher)
    try:
        return fn(llm)
    finally:
        llm.close()


# ------------------------------------------------------------------ tracking

def _headline(results: dict) -> float:
    vals = [t["test"]["score"] for t in results["tasks"].values() if t.get("test", {}).get("n")]
    return round(statistics.fmean(vals), 4) if vals else 0.0


def _score_metrics(results: dict) -> dict:
    m = {}
    for task, t in results["tasks"].items():
        for split in ("dev", "test"):
            if split in t:
                m[f"{split}/{task}"] = t[split]["score"]
    m["test/mean"] = _headline(results)
    return m


def _track(rd: RunDir, tracker: Tracker, r: int, scores: dict, st: dict[str, StageResult], walls: dict) -> None:
    metrics = _score_metrics(scores)
    tg, dg, sy, rt, mx, tr = (st[k] for k in ("tag", "diagnose", "synthesize", "retrieve", "mix", "train"))
    metrics.update({
        "tag/parse_failures": tg.summary.get("parse_failures", 0),
        "deficiencies": dg.summary.get("deficiencies", 0),
        "diagnose/failures": dg.summary.get("failures", 0),
        "diagnose/parse_failures": dg.summary.get("parse_failures", 0),
        "synthesize/records": sy.summary.get("records", 0),
        "synthesize/multi_turn": sy.summary.get("multi_turn_records", 0),
        "retrieve/records": rt.summary.get("selected", 0),
        "retrieve/mean_similarity": rt.summary.get("mean_similarity"),
        "mix/records": mx.summary.get("kept", 0),
        "train/loss": tr.summary.get("train_loss"),
        "train/tokens": tr.summary.get("tokens_seen"),
        "train/tokens_per_s": tr.summary.get("tokens_per_s"),
        **{f"time/{k}": v for k, v in walls.items()},
    })
    if r > 0:  # paired change on the same test items against the previous round
        prev = read_jsonl(rd.round_dir(r - 1) / "eval" / "samples.jsonl")
        cur = read_jsonl(rd.round_dir(r) / "eval" / "samples.jsonl")
        metrics.update({f"delta/{task}": d["diff"] for task, d in paired_diff(prev, cur).items()})
    tracker.log({k: v for k, v in metrics.items() if v is not None}, step=r)
    rounds = rd.state().get("rounds", {})
    rounds[str(r)] = {"scores": _score_metrics(scores), "metrics": metrics,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    rd.update_state(rounds=rounds, current_round=r)


def _plateaued(test_scores: list[float], cfg: Config) -> bool:
    p = cfg.stop.patience
    if p <= 0 or len(test_scores) <= p:
        return False
    best_before = max(test_scores[:-p])
    return max(test_scores[-p:]) < best_before + cfg.stop.min_delta


def _brief(summary: dict) -> str:
    keys = list(summary)[:6]
    return ", ".join(f"{k}={summary[k]}" for k in keys if not isinstance(summary[k], (dict, list)))
