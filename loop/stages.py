"""Teacher-stage bodies: load the teacher, run one synth step, write the stage's files.

Top-level functions (not closures) so ``loop.isolate`` can run them in a subprocess
when the teacher sits on a GPU.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from evalsuite.records import read_jsonl, write_json, write_jsonl
from loop.config import Config


def _key(sample: dict) -> str:
    return f"{sample['task']}/{sample['doc_id']}"


def _with_teacher(cfg: Config, fn):
    from synth.llm import load_llm

    llm = load_llm(cfg.teacher)
    try:
        return fn(llm)
    finally:
        llm.close()


def tag(cfg: Config, out: Path, dev: list[dict], cache_path: Path) -> dict:
    from synth.tagging import tag_texts

    texts = {_key(s): s["prompt"] for s in dev}
    tags, stats = _with_teacher(cfg, lambda llm: tag_texts(llm, texts, cfg.tag, cache_path))
    write_jsonl(out / "tags.jsonl", ({"key": k, **tags[k]} for k in texts if k in tags))
    write_json(out / "stats.json", stats)
    return stats


def diagnose(cfg: Config, out: Path, dev: list[dict], tags_path: Path) -> dict:
    from synth.diagnose import diagnose as run_diagnosis

    tags = {row["key"]: {"fine": row.get("fine", []), "macro": row.get("macro", [])}
            for row in read_jsonl(tags_path)}
    failures = [s for s in dev if not s["correct"]]
    sizes = dict(Counter(s["task"] for s in dev))     # impact = share of a task's dev items lost
    if not failures:  # nothing to diagnose: no teacher needed
        return run_diagnosis(None, [], tags, cfg.diagnose, out, task_sizes=sizes)
    return _with_teacher(cfg, lambda llm: run_diagnosis(llm, failures, tags, cfg.diagnose, out, task_sizes=sizes))


def synthesize(cfg: Config, out: Path, deficiencies: list[dict], round_idx: int, avoid_texts: list[str]) -> dict:
    from synth.generate import synthesize as run_synthesis

    path = out / "records.jsonl"
    if not deficiencies:
        write_jsonl(path, [])
        return {"records": 0, "reason": "no deficiencies"}
    return _with_teacher(cfg, lambda llm: run_synthesis(llm, deficiencies, cfg.synthesize, round_idx, path,
                                                        seed=cfg.seed + round_idx, avoid_texts=avoid_texts))
