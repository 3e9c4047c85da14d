"""Mix: the union of synthesized and retrieved records, decontaminated and deduplicated,
written as the exact training-input file.

Synthesized records come first, so when a synthesized and a retrieved record duplicate each
other the targeted (synthesized) one is kept. Decontamination runs before dedup, so a
contaminated record never wins a duplicate group and takes a clean twin down with it.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass

from evalsuite.records import RecordError, validate_record, write_jsonl
from synth.decontam import decontaminate
from synth.dedup import dedup
from synth.embed import DEFAULT_EMBEDDER


@dataclass
class MixConfig:
    exact_dedup: bool = True          # drop records whose normalised messages are identical
    near_dup_threshold: float = 0.8   # word-shingle Jaccard of first user turns (0 = off)
    shingle_n: int = 5                # words per shingle
    semantic_threshold: float = 0.0   # embedding cosine of first user turns (0 = off; ~0.95 when on)
    embedder: str = DEFAULT_EMBEDDER  # used only by the semantic pass
    decontam_n: int = 13              # word n-gram shared with an eval item = contaminated
    decontam_min_words: int = 6       # eval texts shorter than this are ignored (see synth/decontam.py)
    decontam_boilerplate_items: int = 3  # an n-gram in this many eval texts is template wording, not a leak (0 = off)


def mix(synth_records: list[dict], retrieved_records: list[dict], eval_texts: list[str],
        cfg: MixConfig, out_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None, eval_rows: list[dict] | None = None,
        report_path: str | os.PathLike | None = None) -> dict:
    """Write the training file to ``out_path``; return counts of every drop by reason and source.
    ``eval_rows`` (the harness rows of ``eval_texts``) name the eval items; with ``report_path``
    every record decontamination dropped is written there with the item(s) and words it matched."""
    t0 = time.time()
    union = []
    for origin, recs in (("synth", synth_records), ("retrieved", retrieved_records)):
        for i, rec in enumerate(recs):
            validate_record(rec, where=f"mix: {origin} record {i} ({rec.get('id', '?') if isinstance(rec, dict) else '?'})")
            union.append(rec)
    origin_of = {id(r): "synth" for r in synth_records} | {id(r): "retrieved" for r in retrieved_records}
    ids = Counter(r["id"] for r in union)
    clash = [k for k, v in ids.items() if v > 1]
    if clash:
        # the same id on two records hides which was kept; exact dupes are fine, clashes are not
        same = {k for k in clash if len({str(r["messages"]) for r in union if r["id"] == k}) == 1}
        if set(clash) - same:
            raise RecordError(f"mix: record id {sorted(set(clash) - same)[0]!r} is used by different records")

    report: list[dict] = []
    clean, dstats = decontaminate(union, eval_texts, n=cfg.decontam_n, min_words=cfg.decontam_min_words,
                                  boilerplate_items=cfg.decontam_boilerplate_items, eval_rows=eval_rows,
                                  report=report)
    if report_path is not None:
        origin_by_id = {}
        for r in union:
            origin_by_id.setdefault(r["id"], origin_of[id(r)])
        for row in report:
            row["origin"] = origin_by_id[row["id"]]
        write_jsonl(report_path, report)
    kept, ustats = dedup(clean, near_threshold=cfg.near_dup_threshold, shingle_n=cfg.shingle_n,
                         semantic_threshold=cfg.semantic_threshold, embedder=cfg.embedder,
                         cache_dir=cache_dir, exact=cfg.exact_dedup)
    write_jsonl(out_path, kept)

    def by_origin(recs):
        c = Counter(origin_of[id(r)] for r in recs)
        return {"synth": c["synth"], "retrieved": c["retrieved"]}

    clean_ids, kept_ids = {id(r) for r in clean}, {id(r) for r in kept}
    return {
        "in": by_origin(union),
        "dropped": {
            "contaminated": by_origin([r for r in union if id(r) not in clean_ids]),
            **{reason: n for reason, n in ustats.items() if reason.endswith("_duplicate")},
            "duplicate_by_origin": by_origin([r for r in clean if id(r) not in kept_ids]),
        },
        "kept": len(kept),
        "kept_by_origin": by_origin(kept),
        "approx_tokens": sum(len(m["content"]) for r in kept for m in r["messages"]) // 4,
        "decontam": {k: v for k, v in dstats.items() if k not in ("in", "kept", "contaminated")},
        "dedup_examples": ustats["examples"],
        "wall_s": round(time.time() - t0, 3),
    }
