"""Duplicate removal, keeping the first of each group (callers put preferred records first).

Three passes, each counted:

* **exact** — same normalised text (``synth.overlap.words``) of every message, roles included;
* **near** — word-shingle Jaccard of the first user turn (the instruction) at or above
  ``near_threshold`` against any kept record, found through ``synth.overlap.NgramIndex``
  (no all-pairs loop). A turn shorter than ``shingle_n`` words is one shingle, so it only
  matches the same short turn;
* **semantic** (off unless ``semantic_threshold`` > 0) — embedding cosine of first user
  turns at or above the threshold against any kept record.
"""
from __future__ import annotations

import os

import numpy as np

from evalsuite.records import content_hash
from synth.embed import DEFAULT_EMBEDDER, embed_texts, record_text
from synth.overlap import NgramIndex, shingles, words


def exact_key(rec: dict) -> str:
    return content_hash([(m["role"], " ".join(words(m["content"]))) for m in rec["messages"]])


def _near_dups(records: list[dict], threshold: float, n: int) -> list[int | None]:
    """For each record, the index of an earlier kept record it nearly duplicates, else None."""
    index, kept_at = NgramIndex(), []     # index entry -> record position
    out: list[int | None] = []
    for i, rec in enumerate(records):
        sh = shingles(words(record_text(rec)), n)
        j = index.jaccard_match(sh, threshold)
        out.append(None if j is None else kept_at[j])
        if j is None:
            index.add(sh)
            kept_at.append(i)
    return out


def _semantic_dups(records: list[dict], threshold: float, embedder: str,
                   cache_dir: str | os.PathLike | None) -> list[int | None]:
    from synth.embed import cache_folder

    vecs = embed_texts([record_text(r) for r in records], embedder,
                       cache_path=cache_folder(cache_dir, embedder) if cache_dir else None)
    kept_rows: list[int] = []
    kept = np.empty_like(vecs)
    out: list[int | None] = []
    for i, v in enumerate(vecs):
        if kept_rows:
            sims = kept[:len(kept_rows)] @ v
            j = int(np.argmax(sims))
            if sims[j] >= threshold:
                out.append(kept_rows[j])
                continue
        kept[len(kept_rows)] = v
        kept_rows.append(i)
        out.append(None)
    return out


def dedup(records: list[dict], near_threshold: float = 0.8, shingle_n: int = 5,
          semantic_threshold: float = 0.0, embedder: str = DEFAULT_EMBEDDER,
          cache_dir: str | os.PathLike | None = None, exact: bool = True) -> tuple[list[dict], dict]:
    """(records without duplicates, stats counting drops by pass). Order decides who is kept."""
    if not 0 <= near_threshold <= 1 or not 0 <= semantic_threshold <= 1:
        raise ValueError("dedup: near_threshold and semantic_threshold must be in [0, 1] (0 = off)")
    stats: dict = {"in": len(records), "exact_duplicate": 0, "near_duplicate": 0, "semantic_duplicate": 0}
    examples: list[dict] = []
    cur = list(records)

    def drop(reason: str, dup_of: list[int | None]) -> list[dict]:
        kept = []
        for rec, j in zip(cur, dup_of):
            if j is None:
                kept.append(rec)
                continue
            stats[reason] += 1
            if len(examples) < 10:
                examples.append({"reason": reason, "id": rec["id"], "kept_id": cur[j]["id"]})
        return kept

    if exact:
        first: dict[str, int] = {}
        dup_of = []
        for i, rec in enumerate(cur):
            k = exact_key(rec)
            dup_of.append(first.get(k))
            first.setdefault(k, i)
        cur = drop("exact_duplicate", dup_of)
    if near_threshold > 0 and cur:
        cur = drop("near_duplicate", _near_dups(cur, near_threshold, shingle_n))
    if semantic_threshold > 0 and cur:
        cur = drop("semantic_duplicate", _semantic_dups(cur, semantic_threshold, embedder, cache_dir))
    stats.update(kept=len(cur), examples=examples)
    return cur, stats
