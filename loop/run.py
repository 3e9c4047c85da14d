"""THE algorithm: one round is EVAL -> TAG -> DIAGNOSE -> SYNTHESIZE + RETRIEVE -> MIX -> TRAIN.

Reads top to bottom like DESIGN.md's diagram. Each stage is a function from input
files to output files under ``round_NNN/<stage>/``; ``RunDir.stage`` makes it atomic
and resumable (fingerprint in DONE). Model-heavy stages (eval, train, and the teacher
on a GPU) run in subprocesses so their memory is freed when they end.
"""
from __future__ import annotations

import importlib.metadata
import logging
import time
from collections import Counter
from pathlib import Path

from evalsuite.harness import run_eval
from evalsuite.models import resolve_model
from evalsuite.records import read_json, read_jsonl, read_records, write_json, write_jsonl
from evalsuite.samples import mean_score, sample_key, split_rows
from evalsuite.stats import paired_diff
from evalsuite.suite import load_suite, suite_hash
from loop import figures, isolate, preflight
from loop.artifacts import RunDir, StageResult
from loop.config import Config, save_config, to_dict
from loop.report import write_report
from loop.tracking import Tracker
from synth.generate import TEMPLATES as SYNTH_TEMPLATES
from synth.pools import fingerprint as pools_fingerprint
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
    ext = stage_inputs(cfg)

    adapter, train_fp, history = None, "base", []
    earlier = []                # the synthesize and retrieve stages of the rounds so far, alternating
    measured: list[dict] = []   # every student evaluated, in order: where, adapter, results
    pending = None              # round r's figures: logged once the adapter it trained is measured
    try:
        for r in range(cfg.rounds):
            log.info("===== round %d / %d =====", r, cfg.rounds - 1)
            walls: dict[str, float] = {}

            def done(res: StageResult, walls=walls) -> None:
                walls[res.name] = res.wall_s
                log.info("[round %d] %-13s %s in %.1f s  %s", r, res.name,
                         "resumed" if res.skipped else "done", res.wall_s, _brief(res.summary))

            # 1. EVAL the current student (base + adapter, never merged): per-item samples + the
            #    texts no training record may overlap (a run extended with more rounds finds this
            #    student already measured in final/)
            ev = rd.stage(r, "eval", [cfg.eval, cfg.student, train_fp, *ext["eval"]],
                          lambda out: eval_stage(cfg, student, adapter, out), on_done=done, reuse_from=("final",))
            samples, decontam = ev.dir / "samples.jsonl", ev.dir / "decontam_texts.jsonl"
            measured.append({"where": f"round_{r:03d}", "adapter": adapter, "dir": ev.dir})
            if pending:
                _track(rd, tracker, pending, outcome=ev.dir)
            pending = None
            # decisions on dev only: stop when the last `patience` students brought no paired dev gain
            if _plateaued(measured, cfg):
                log.info("dev score plateaued; stopping before round %d's teacher work", r)
                rd.update_state(stopped_reason="plateau (dev)")
                break

            # 2–4 share one teacher, loaded once for the round and let go before retrieval
            with TeacherHost(cfg) as teacher:
                # 2. TAG the dev items (teacher; cached by content hash across rounds)
                #    and of the records joining the pool: a pool sample, earlier rounds' verified synthesized ones
                synth_in = [e.dir / "records.jsonl" for e in earlier[0::2]] if cfg.retrieve.synth_weight > 0 else []
                tg = rd.stage(r, "tag", [cfg.tag, cfg.teacher, ev.fingerprint, [e.fingerprint for e in earlier[0::2]],
                                         cfg.retrieve.synth_weight > 0, *ext["tag"]],
                              lambda out: teacher.run(tag_stage, out, samples=samples,
                                                      cache_path=run_dir / "cache" / "tags.jsonl",
                                                      synthesized=synth_in), on_done=done)

                # 3. DIAGNOSE the failed dev items into ranked deficiencies
                dg = rd.stage(r, "diagnose", [cfg.diagnose, cfg.teacher, tg.fingerprint, *ext["diagnose"]],
                              lambda out: teacher.run(diagnose_stage, out, samples=samples,
                                                      tags=tg.dir / "tags.jsonl"), on_done=done)
                deficiencies = dg.dir / "deficiencies.json"

                # 4. SYNTHESIZE targeted instructions for the top deficiencies
                sy = rd.stage(r, "synthesize", [cfg.synthesize, cfg.teacher, cfg.seed, dg.fingerprint,
                                                *ext["synthesize"]],
                              lambda out: teacher.run(synthesize_stage, out, deficiencies=deficiencies,
                                                      avoid=decontam, round_idx=r, samples=samples, tags=tg.dir),
                              on_done=done)

            # 5. RETRIEVE matched records from the pools (neighbours of failures and deficiencies); earlier
            #    rounds' verified synthesized records join them, what earlier rounds retrieved does not
            rt = rd.stage(r, "retrieve", [cfg.retrieve, cfg.student, cfg.train.max_seq_len, dg.fingerprint,
                                          [s.fingerprint for s in earlier], *ext["retrieve"]],
                          lambda out: retrieve_stage(cfg, cache, samples, deficiencies, out,
                                                     synthesized=[e.dir / "records.jsonl" for e in earlier[0::2]],
                                                     retrieved=[e.dir / "records.jsonl" for e in earlier[1::2]],
                                                     tags=tg.dir),
                          on_done=done)
            earlier += [sy, rt]

            # 6. MIX: dedup + decontaminate the union into the exact training input
            mx = rd.stage(r, "mix", [cfg.mix, sy.fingerprint, rt.fingerprint, *ext["mix"]],
                          lambda out: mix_stage(cfg, sy.dir / "records.jsonl", rt.dir / "records.jsonl",
                                                decontam, out), on_done=done)

            # 7. TRAIN the next adapter (subprocess; a killed run resumes from its checkpoint)
            tr = rd.stage(r, "train", [cfg.train, cfg.student, mx.fingerprint, train_fp, *ext["train"]],
                          lambda out: isolate.train_subprocess(cfg.train, [mx.dir / "train_data.jsonl"], student,
                                                               out, adapter_in=adapter, history=list(history)),
                          keep_partial=True, on_done=done)

            # 8. CONTROL: the same start, hyperparameters and token count, on random pool records
            #    (untargeted: first the records synthesized without the diagnosis); evaluated on the
            #    same items. It never feeds the next round.
            control = None
            if cfg.control in ("random", "untargeted"):
                first = None
                if cfg.control == "untargeted":
                    with TeacherHost(cfg) as teacher:
                        cs = rd.stage(r, "control_synth", [cfg.synthesize, cfg.teacher, cfg.seed, cfg.eval.suite,
                                                           ev.fingerprint, *ext["synthesize"]],
                                      lambda out: teacher.run(control_synth_stage, out, avoid=decontam, round_idx=r),
                                      on_done=done)
                    first = cs
                cd = rd.stage(r, "control_data", [cfg.control, cfg.seed, cfg.mix, mx.fingerprint, cfg.retrieve.drop_rules,
                                                     cfg.retrieve.split_long, cfg.train.max_seq_len, *ext["retrieve"],
                                                     first.fingerprint if first else None],
                              lambda out: control_data_stage(cfg, cache, student, mx.dir / "train_data.jsonl",
                                                             decontam, r, out,
                                                             first=first.dir / "records.jsonl" if first else None),
                              on_done=done)
                ct = rd.stage(r, "control_train", [cfg.train, cfg.student, cd.fingerprint, train_fp, *ext["train"]],
                              lambda out: isolate.train_subprocess(cfg.train, [cd.dir / "train_data.jsonl"], student,
                                                                   out, adapter_in=adapter, history=list(history)),
                              keep_partial=True, on_done=done)
                control = rd.stage(r, "control_eval", [cfg.eval, cfg.student, ct.fingerprint, *ext["eval"]],
                                   lambda out: eval_stage(cfg, student, str(ct.dir / "adapter"), out), on_done=done)

            adapter, train_fp = str(tr.dir / "adapter"), tr.fingerprint
            history.append(tr.dir / "train_set.jsonl")
            pending = {"r": r, "start": ev.dir, "walls": walls, "control": control.dir if control else None,
                       "stages": dict(tag=tg, diagnose=dg, synthesize=sy, retrieve=rt, mix=mx, train=tr)}

        # the last adapter is measured too (copied when a dev plateau stopped the loop right after
        # measuring it); the student handed over is the best on dev among all measured
        fin = rd.stage("final", "eval", [cfg.eval, cfg.student, train_fp, *ext["eval"]],
                       lambda out: eval_stage(cfg, student, adapter, out), reuse_from=(measured[-1]["where"],))
        if pending:
            _track(rd, tracker, pending, outcome=fin.dir)
        if measured[-1]["adapter"] != adapter:
            measured.append({"where": "final", "adapter": adapter, "dir": fin.dir})
        final = _hand_over(measured)
        tracker.summary({f"final/{k}": v for k, v in final.items() if k != "adapter"})
        rd.update_state(status="finished", final=final)
        write_report(run_dir)
        return rd.state()
    finally:
        tracker.close()


# ------------------------------------------------------------------ stage glue
# Each stage function reads its inputs from files and writes its outputs under ``out``, so it can
# be rerun from the run directory alone. Teacher stages are top-level functions: ``isolate.call``
# pickles them by reference when the teacher needs its own process.

def stage_inputs(cfg: Config) -> dict[str, list]:
    """What each stage reads besides its config slice and upstream outputs, for its fingerprint:
    the code's version, the suite's files, the prompt templates, the pool source."""
    return {"eval": [VERSION, suite_hash(cfg.eval.suite)],
            "tag": [VERSION, templates_hash(("tag",), cfg.tag.prompts_dir),
                    pools_fingerprint(cfg.retrieve.pool, cfg.retrieve.pools) if cfg.tag.pool_sample else None],
            "diagnose": [VERSION, templates_hash(("diagnose", "ability"), cfg.diagnose.prompts_dir)],
            # pool seeds (synthesize.pool_seed_share): the pool, its conversion filters and the embedder
            "synthesize": [VERSION, templates_hash(SYNTH_TEMPLATES, cfg.synthesize.prompts_dir),
                           [cfg.retrieve.pool, cfg.retrieve.pools, cfg.retrieve.embedder,
                            pools_fingerprint(cfg.retrieve.pool, cfg.retrieve.pools)]
                           if cfg.synthesize.pool_seed_share > 0 else None],
            "retrieve": [VERSION, pools_fingerprint(cfg.retrieve.pool, cfg.retrieve.pools)],
            "mix": [VERSION], "train": [VERSION]}


def eval_stage(cfg: Config, student: str, adapter: str | None, out: Path, split: str | None = None) -> dict:
    """``split``: evaluate only that split's items (a data request needs dev items alone)."""
    res = isolate.call(run_eval, cfg.eval, student, adapter, out, split=split)
    return {"test_mean": mean_score(res), "wall_s": res.get("wall_s")}


def tag_stage(cfg: Config, out: Path, samples: Path, cache_path: Path, synthesized: list[Path] = ()) -> dict:
    """Tags of the dev items, of ``tag.pool_sample`` pool records and of the verified records
    ``synthesized`` by earlier rounds, which join the pool as ``synth`` (their own tags are the
    deficiency's; retrieval reads these instead) — one teacher load, cached by content across
    rounds — the fine-tag vocabulary over all of them, and the figures per source."""
    from synth.embed import cache_folder, embed_texts, record_text
    from synth.tagging import pool_sample_of, tag_stats, tag_texts, tag_vocabulary

    dev, _ = split_rows(read_jsonl(samples))
    texts = {sample_key(s): s["prompt"] for s in dev}
    sample = []
    if cfg.tag.pool_sample > 0:
        from synth.pools import load_union

        sample = pool_sample_of(load_union(cfg.retrieve.pool, cfg.retrieve.pools, Path(cfg.cache_dir)).records,
                                cfg.tag.pool_sample)
    from synth.pools import SYNTH_POOL, joining_synth

    seen = {r["id"] for r in sample}
    for rec in joining_synth(read_records(path) for path in synthesized):   # as they join the pool
        if rec["id"] not in seen:
            sample.append({**rec, "source": SYNTH_POOL})
            seen.add(rec["id"])
    pool_texts = {r["id"]: record_text(r) for r in sample if r["id"] not in texts}
    (tags, stats), cost = _with_teacher(cfg, lambda llm: tag_texts(llm, {**texts, **pool_texts}, cfg.tag, cache_path),
                                        mapped=True)
    stats["teacher"] = cost
    write_jsonl(out / "tags.jsonl", ({"key": k, **tags[k]} for k in texts if k in tags))
    write_jsonl(out / "pool_tags.jsonl", ({"id": r["id"], "source": r["source"], **tags[r["id"]]}
                                          for r in sample if r["id"] in pool_texts))
    # the fine-tag vocabulary: near-synonyms merged by embedding cosine, a frequency floor
    folder = cache_folder(cfg.cache_dir, cfg.tag.embedder)
    vocab, vstats = tag_vocabulary([t["fine"] for t in tags.values()],
                                   lambda ts: embed_texts(ts, cfg.tag.embedder, cache_path=folder),
                                   cfg.tag.merge_threshold, cfg.tag.min_count)
    write_json(out / "vocab.json", {**vstats, "vocab": vocab})
    by_source: dict[str, list[dict]] = {}
    for s in dev:
        by_source.setdefault(f"dev:{s['task']}", []).append(tags[sample_key(s)])
    for r in sample:
        if r["id"] in pool_texts:
            by_source.setdefault(r["source"], []).append(tags[r["id"]])
    n_synth = sum(r["source"] == SYNTH_POOL for r in sample if r["id"] in pool_texts)
    stats.update(pool_sampled=len(pool_texts) - n_synth, synth_tagged=n_synth, by_source=tag_stats(by_source, vocab),
                 vocabulary={k: v for k, v in vstats.items() if k != "merges"})
    write_json(out / "stats.json", stats)
    return stats


def diagnose_stage(cfg: Config, out: Path, samples: Path, tags: Path) -> dict:
    from synth.diagnose import diagnose

    dev, failures = split_rows(read_jsonl(samples))
    tag_of = {row["key"]: {"fine": row.get("fine", []), "macro": row.get("macro", [])} for row in read_jsonl(tags)}
    sizes = dict(Counter(s["task"] for s in dev))     # impact = share of a task's dev items lost
    if not failures:  # nothing to diagnose: no teacher needed
        return diagnose(None, [], tag_of, cfg.diagnose, out, task_sizes=sizes)
    stats, cost = _with_teacher(cfg, lambda llm: diagnose(llm, failures, tag_of, cfg.diagnose, out, task_sizes=sizes))
    return {**stats, "teacher": cost}


def synthesize_stage(cfg: Config, out: Path, deficiencies: Path, avoid: Path, round_idx: int,
                     samples: Path | None = None, tags: Path | None = None) -> dict:
    """``samples``: the round's eval rows (the failed dev items pool seeds are matched to);
    ``tags``: the tag stage's folder (the pool sample's tags and the vocabulary, for tag matching)."""
    from synth.generate import synthesize

    defs = read_json(deficiencies)["deficiencies"]
    path = out / "records.jsonl"
    if not defs:
        write_jsonl(path, [])
        return {"records": 0, "reason": "no deficiencies"}
    rows = read_jsonl(avoid)
    avoid_texts = [row["text"] for row in rows]
    targets = {row["key"]: row["text"] for row in rows if row.get("field") == "target"}  # IFEval: the checkers
    scorers = _task_scorers(cfg)
    seeds = _pool_seeds(cfg, defs[: cfg.synthesize.top_k], samples, tags)
    stats, cost = _with_teacher(cfg, lambda llm: synthesize(llm, defs, cfg.synthesize, round_idx, path,
                                                            seed=cfg.seed + round_idx, avoid_texts=avoid_texts,
                                                            task_scorers=scorers, eval_targets=targets,
                                                            pool_seeds=seeds))
    return {**stats, "teacher": cost}


def _task_scorers(cfg: Config) -> dict[str, str]:
    """Each suite task's scorer name (what decides its synthesis kind when the task name does not)."""
    return {t.name: t.metric or t.scoring_from or t.task or t.name for t in load_suite(cfg.eval.suite).tasks}


def _pool_seeds(cfg: Config, defs: list[dict], samples: Path | None, tags: Path | None) -> dict | None:
    """Evol-Instruct seeds per deficiency from the retrieval pool (``synth.seeds``): by fine tags
    (records' own, or the tag stage's pool sample, through its vocabulary), else by embedding
    similarity to the deficiency's failed dev items, in the pool index the retrieve stage reuses."""
    s = cfg.synthesize
    if s.pool_seed_share <= 0 or s.pool_seeds_per_deficiency <= 0 or not defs:
        return None
    from synth.embed import MAX_CHARS, embed_texts
    from synth.pools import load_union
    from synth.retrieve import pool_index
    from synth.seeds import index_similar, select_seeds
    from synth.tagging import canonical_tags

    cache = Path(cfg.cache_dir)
    records = load_union(cfg.retrieve.pool, cfg.retrieve.pools, cache, executor=cfg.executor).records
    has = tags is not None
    vocab = read_json(tags / "vocab.json")["vocab"] if has and (tags / "vocab.json").exists() else {}
    sampled = {row["id"]: row for row in read_jsonl(tags / "pool_tags.jsonl")} \
        if has and (tags / "pool_tags.jsonl").exists() else {}
    feats = [canonical_tags({"fine": ((rec.get("tags") or {}).get("fine") or sampled.get(rec["id"], {}).get("fine", []))},
                            vocab) for rec in records]
    def_feats = [canonical_tags({"fine": d.get("tags", [])}, vocab) for d in defs]
    prompts = {sample_key(row): str(row["prompt"])[-MAX_CHARS:] for row in split_rows(read_jsonl(samples))[1]} \
        if samples is not None else {}
    queries = [[prompts[k] for k in d.get("examples", []) if k in prompts] for d in defs]
    similar = None
    if records and any(queries):
        index, _ = pool_index(records, cfg.retrieve, cache, cfg.executor)
        similar = index_similar(index, lambda texts: embed_texts(texts, cfg.retrieve.embedder))
    return select_seeds(defs, records, feats, def_feats, queries, similar, s.pool_seeds_per_deficiency,
                        s.min_instruction_chars, s.pool_seed_max_chars)


def retrieve_stage(cfg: Config, cache: Path, samples: Path, deficiencies: Path, out: Path,
                   synthesized: list[Path] = (), retrieved: list[Path] = (), tags: Path | None = None) -> dict:
    """``synthesized``/``retrieved``: earlier rounds' record files (verified synthesized records join
    the pool; what they retrieved is not retrieved again); ``tags``: the round's tag stage folder
    (the target's tag histogram, the pool sample's tags and the vocabulary)."""
    from synth.pools import load_union
    from synth.retrieve import eval_targets, retrieve

    dev, failures = split_rows(read_jsonl(samples))
    defs = read_json(deficiencies)["deficiencies"]
    # kNN queries (each failure 1, a deficiency a share of its failures) and the DSIR target (the dev items)
    t = eval_targets(dev, failures, defs, cfg.retrieve)
    r = cfg.retrieve
    before = {rec["id"] for p in retrieved for rec in read_jsonl(p)} if r.skip_retrieved else set()
    union = load_union(r.pool, r.pools, cache, [read_records(p) for p in synthesized], r.synth_weight, before,
                       executor=cfg.executor)
    records, pool_tags, target_tags = union.records, None, None
    if tags is not None and (tags / "vocab.json").exists():
        records, pool_tags, target_tags = _tag_features(union.records, dev, defs, t.target_weights, tags)
    # tokens counted with the student's tokenizer; nothing longer than the trainer's max_seq_len
    stats = retrieve(records, t.queries, r, cache, out / "records.jsonl", weights=t.weights,
                     target=t.target, target_weights=t.target_weights,
                     student=resolve_model(cfg.student.model, cfg.cache_dir), max_seq_len=cfg.train.max_seq_len,
                     groups=union.group, group_weights=union.weights, pool_tags=pool_tags, target_tags=target_tags,
                     executor=cfg.executor)
    # per pool: weight, records in the union, duplicates across pools and rounds, what its filters dropped
    return {**stats, "pools": union.stats, "dedup_keys": union.dedup}


def _tag_features(records: list[dict], dev: list[dict], defs: list[dict], target_weights: list[float], tags: Path):
    """(records with the tag stage's tags on the untagged ones, their tag features, the target's tag
    histogram: the dev items and deficiencies at their DSIR target weights), through the vocabulary."""
    from synth.select import tag_histogram
    from synth.tagging import canonical_tags

    vocab = read_json(tags / "vocab.json")["vocab"]
    dev_tags = {row["key"]: row for row in read_jsonl(tags / "tags.jsonl")}
    sampled = {row["id"]: row for row in read_jsonl(tags / "pool_tags.jsonl")} if (tags / "pool_tags.jsonl").exists() else {}
    out = []
    for rec in records:
        got = sampled.get(rec["id"])
        # the teacher's tags fill an untagged record, and replace a synthesized record's copied ones
        if got is not None and (got.get("source") == "synth" or not (rec["tags"]["fine"] or rec["tags"]["macro"])):
            rec = {**rec, "tags": {"fine": list(got["fine"]), "macro": list(got["macro"])}}
        out.append(rec)
    target = [canonical_tags(dev_tags.get(sample_key(s), {}), vocab) for s in dev]
    target += [canonical_tags({"fine": d.get("tags", []), "macro": d.get("macro", [])}, vocab) for d in defs]
    return out, [canonical_tags(rec["tags"], vocab) for rec in out], tag_histogram(target, target_weights)


def mix_stage(cfg: Config, synthesized: Path, retrieved: Path, decontam: Path, out: Path) -> dict:
    from synth.mix import mix

    rows = read_jsonl(decontam)
    return mix(read_records(synthesized), read_records(retrieved), [row["text"] for row in rows],
               cfg.mix, out / "train_data.jsonl", eval_rows=rows, report_path=out / "decontam_report.jsonl")


def control_data_stage(cfg: Config, cache: Path, student: str, targeted: Path, decontam: Path, round_idx: int,
                       out: Path, first: Path | None = None) -> dict:
    """``first``: the untargeted arm's synthesized records, offered before the random pool records."""
    from synth.control import random_control
    from synth.pools import load_union
    from synth.retrieve import token_counter

    return random_control(load_union(cfg.retrieve.pool, cfg.retrieve.pools, cache).records, read_records(targeted),
                          [row["text"] for row in read_jsonl(decontam)], cfg.mix, token_counter(student),
                          seed=cfg.seed + round_idx, out_path=out / "train_data.jsonl",
                          max_seq_len=cfg.train.max_seq_len, drop_rules=cfg.retrieve.drop_rules,
                          split_long=cfg.retrieve.split_long, first=read_records(first) if first else ())


def control_synth_stage(cfg: Config, out: Path, avoid: Path, round_idx: int) -> dict:
    """The untargeted control's synthesis: the synthesize stage's budget, verifiers and steps on
    stand-in deficiencies that know the suite's tasks and nothing the diagnosis found."""
    from synth.control import undiagnosed
    from synth.kinds import task_kind

    scorers = _task_scorers(cfg)
    defs = undiagnosed(list(scorers), lambda name: task_kind(name, cfg.synthesize.task_kinds, scorers))
    write_json(out / "deficiencies.json", {"deficiencies": defs, "untargeted": True})
    return synthesize_stage(cfg, out, out / "deficiencies.json", avoid, round_idx)


class TeacherHost:
    """The round's teacher, loaded once for all its stages (tag, diagnose, synthesize) and let go
    before retrieval and training need the memory. A teacher on a GPU (or vLLM) lives in one worker
    process per round — its memory is freed when the worker ends, and vLLM boots once, not once per
    stage; a CPU teacher lives in the loop's process. Loading is lazy: a round whose teacher stages
    all resume loads nothing."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.worker: isolate.Worker | None = None

    def own_process(self) -> bool:
        t = self.cfg.teacher
        return t.backend == "vllm" or (t.backend == "hf" and t.device != "cpu")

    def run(self, fn, out: Path, **kw) -> dict:
        if self.own_process():
            if self.worker is None:
                self.worker = isolate.Worker()
            return self.worker.call(fn, self.cfg, out, **kw)
        return fn(self.cfg, out, **kw)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        release_teacher()

    def __enter__(self) -> "TeacherHost":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_LOADED: dict = {}   # the process's teacher: {"key": its config, "llm": the backend}


def release_teacher() -> None:
    """Close the teacher this process holds (if any)."""
    held = _LOADED.pop("llm", None)
    _LOADED.clear()
    if held is not None:
        held.close()


def _with_teacher(cfg: Config, fn, mapped: bool = False) -> tuple:
    """(``fn(llm)``, this call's teacher cost: token usage and seconds, loading included when this
    call loaded it) with the process's teacher, loaded on first use and kept for the next stage
    (``TeacherHost`` releases it); the stage puts the cost in its summary (DONE, W&B, report).
    ``mapped``: the teacher's calls are pool-wide maps on the executor: with ``executor.kind: ray``
    each worker loads its own copy (released when the call ends); locally a ``datasets`` map over
    the process's teacher."""
    from synth.executor import MappedLLM
    from synth.llm import load_llm

    t0 = time.time()
    if mapped and cfg.executor.kind == "ray":
        llm = MappedLLM(cfg.teacher, cfg.executor)
        try:
            result = fn(llm)
        finally:
            llm.close()
        return result, {**llm.usage, "seconds": round(time.time() - t0, 1), "executor": cfg.executor.kind,
                        "nodes": dict(llm.nodes)}
    key = repr(cfg.teacher)
    if _LOADED.get("key") != key:
        release_teacher()
        _LOADED.update(key=key, llm=load_llm(cfg.teacher))
    llm = _LOADED["llm"]
    before = dict(llm.usage)
    result = fn(MappedLLM(cfg.teacher, cfg.executor, llm) if mapped else llm)
    used = {k: v - before.get(k, 0) if isinstance(v, (int, float)) else v for k, v in llm.usage.items()}
    return result, {**used, "seconds": round(time.time() - t0, 1), **({"executor": "local"} if mapped else {})}


# ------------------------------------------------------------------ decisions and tracking
# W&B step r = round r: the data it built, its training, and the evaluation of the adapter it
# trained (measured at the start of round r+1, or in final/), with its control arm beside it.

def _score_metrics(results: dict, prefix: str = "") -> dict:
    m = {}
    for task, t in results["tasks"].items():
        for split in ("dev", "test"):
            if split in t:
                m[f"{prefix}{split}/{task}"] = t[split]["score"]
    m[f"{prefix}test/mean"] = mean_score(results)
    m[f"{prefix}dev/mean"] = mean_score(results, "dev")
    return m


def _track(rd: RunDir, tracker: Tracker, p: dict, outcome: Path) -> None:
    """Log and record round ``p['r']``: its stages' figures, the eval of the adapter it trained
    (``outcome``), the paired change against the student it started from and against control, its
    cost, the tables that compare rounds (deficiencies, failed dev items, data mix, tag scores) and
    its training set and adapter as artifacts."""
    r, st = p["r"], p["stages"]
    scores = read_json(outcome / "results.json")
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
        # the matching made visible: the selected subset's distance to the dev distribution vs random's
        "retrieve/kl_target_selected": rt.summary.get("kl_target_selected"),
        "retrieve/kl_target_random": rt.summary.get("kl_target_random"),
        "retrieve/kl_tags_selected": rt.summary.get("kl_tags_selected"),
        "retrieve/kl_tags_random": rt.summary.get("kl_tags_random"),
        "mix/records": mx.summary.get("kept", 0),
        "train/loss": tr.summary.get("train_loss"),
        "train/tokens": tr.summary.get("tokens_seen"),
        "train/tokens_per_s": tr.summary.get("tokens_per_s"),
        **{f"time/{k}": v for k, v in p["walls"].items()},
        # teacher cost per stage: tokens the backend processed (prompt + completion)
        **{f"teacher_tokens/{k}": n for k in ("tag", "diagnose", "synthesize")
           if (n := figures.teacher_tokens(st[k].summary)) is not None},
    })
    cur = read_jsonl(outcome / "samples.jsonl")
    vs_start = paired_diff(read_jsonl(p["start"] / "samples.jsonl"), cur, overall=True)
    metrics.update({f"delta/{task}": d["diff"] for task, d in vs_start.items()})
    entry = {"scores": _score_metrics(scores), "outcome": str(outcome.relative_to(rd.root)), "vs_start": vs_start,
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if p["control"] is not None:
        ctrl = read_json(p["control"] / "results.json")
        vs_control = paired_diff(read_jsonl(p["control"] / "samples.jsonl"), cur, overall=True)
        metrics.update(_score_metrics(ctrl, "control/"))
        metrics.update({f"targeted_minus_control/{task}": d["diff"] for task, d in vs_control.items()})
        entry.update(control_scores=_score_metrics(ctrl), vs_control=vs_control)
    cost = figures.cost(rd.root, r, outcome)
    metrics.update({f"cost/{k}": v for k, v in cost.items() if k not in ("round", "tokens_counted_by")})
    metrics = {k: v for k, v in metrics.items() if v is not None}
    tracker.log(metrics, step=r)
    if tracker.enabled:
        for name, (columns, rows) in figures.round_tables(rd.root, r, outcome).items():
            tracker.table(name, columns, rows, step=r)
        tracker.artifact("train_set", "dataset", tr.dir / "train_set.jsonl", [f"round-{r}"], {"round": r})
        tracker.artifact("adapter", "model", tr.dir / "adapter", [f"round-{r}"],
                         {"round": r, "test_mean": metrics["test/mean"], "dev_mean": metrics["dev/mean"]})
    rounds = rd.state().get("rounds", {})
    rounds[str(r)] = {**entry, "metrics": metrics}
    rd.update_state(rounds=rounds, current_round=r)


def _plateaued(measured: list[dict], cfg: Config) -> bool:
    """True when none of the last ``patience`` measured students gained on dev over the best student
    before them (chosen as ``_hand_over`` chooses: dev mean). A gain is the paired change on the dev
    items both scored, over all tasks: at least ``min_delta``, with its paired bootstrap 95% CI above
    zero — a change the measurement can tell from noise. Test never enters."""
    p = cfg.stop.patience
    if p <= 0 or len(measured) <= p:
        return False
    ref = _best_on_dev(measured[:-p])
    before = read_jsonl(ref["dir"] / "samples.jsonl")
    for m in measured[-p:]:
        d = paired_diff(before, read_jsonl(m["dir"] / "samples.jsonl"), split="dev", overall=True).get("_all")
        if d and d["diff"] >= cfg.stop.min_delta and d["ci_low"] > 0:
            return False
    return True


def _best_on_dev(measured: list[dict]) -> dict:
    """The student with the best dev mean (the earliest of equals)."""
    devs = [mean_score(read_json(m["dir"] / "results.json"), "dev") for m in measured]
    return measured[max(range(len(devs)), key=lambda i: (devs[i], -i))]


def _hand_over(measured: list[dict]) -> dict:
    """The best student on dev (the earliest of equals); test is reported, never used to choose."""
    best = _best_on_dev(measured)
    res, last = read_json(best["dir"] / "results.json"), read_json(measured[-1]["dir"] / "results.json")
    return {"adapter": best["adapter"], "chosen_by": "dev mean", "measured_at": best["where"],
            "dev_mean": mean_score(res, "dev"), "test_mean": mean_score(res),
            "last_adapter": measured[-1]["adapter"], "last_test_mean": mean_score(last)}


def _brief(summary: dict) -> str:
    keys = list(summary)[:6]
    return ", ".join(f"{k}={summary[k]}" for k in keys if not isinstance(summary[k], (dict, list)))
