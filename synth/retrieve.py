"""Retrieve pool records near the student's failures (the only faiss user).

Pool records are embedded by their first user turn (``synth.embed.record_text``) and put in
a FAISS inner-product index (cosine, as vectors are normalised), cached on disk next to
the embeddings and keyed by the pool's content, so an unchanged pool is indexed once.
Each query (a failed dev prompt, a deficiency description) takes its ``k_per_query``
nearest records at or above ``min_similarity``; a record reached by several queries keeps
its best weighted score (weights let deficient items count more). Records are then taken
greedily by score within ``max_records`` and ``token_budget`` and written as schema records
with ``meta.retrieval = {"score", "query_idx", "rank"}``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from evalsuite.records import content_hash, write_jsonl
from synth.overlap import words
from synth.embed import DEFAULT_EMBEDDER, cache_folder, embed_texts, record_text
from synth.pool import PoolConfig

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw")


@dataclass
class RetrieveConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)
    embedder: str = DEFAULT_EMBEDDER  # sentence-transformers model (packaged MiniLM by default)
    batch_size: int = 64              # embedding batch size
    k_per_query: int = 20             # nearest neighbours taken per query
    max_records: int = 500            # at most this many records selected (0 = no limit)
    token_budget: int = 250_000       # at most this many tokens selected (0 = no limit)
    min_similarity: float = 0.35      # cosine below this is not a match
    tokenizer: str = ""               # HF tokenizer (path, id, embedded:<name>) for counts; "" = chars/4
    index: Literal["flat", "hnsw"] = "flat"             # flat (exact; fine to ~1M records) | hnsw (approximate, large pools)
    distinct_prompts: bool = True     # take one record per first user turn (ShareGPT repeats popular prompts)


def _check(cfg: RetrieveConfig, queries: list[str], weights: list[float] | None) -> None:
    if cfg.index not in INDEX_TYPES:
        raise ValueError(f"retrieve.index: {cfg.index!r} is not one of {INDEX_TYPES}")
    if cfg.k_per_query < 1:
        raise ValueError(f"retrieve.k_per_query must be >= 1, got {cfg.k_per_query}")
    if weights is not None:
        if len(weights) != len(queries):
            raise ValueError(f"retrieve: {len(weights)} weights for {len(queries)} queries")
        if any(w < 0 for w in weights):
            raise ValueError("retrieve: weights must be >= 0")


def token_counter(tokenizer: str) -> Callable[[dict], int]:
    """Tokens of a record's messages: exact with a tokenizer, else chars/4 (English-ish text)."""
    if not tokenizer:
        return lambda rec: max(1, sum(len(m["content"]) for m in rec["messages"]) // 4)
    from transformers import AutoTokenizer

    from evalsuite.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
    return lambda rec: sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) + 4
                           for m in rec["messages"])  # +4: chat-template tokens around a turn


def pool_index(pool: list[dict], cfg: RetrieveConfig, cache_dir: str | os.PathLike):
    """(faiss index over the pool, whether it came from the cache)."""
    import faiss

    texts = [record_text(r) for r in pool]
    folder = cache_folder(cache_dir, cfg.embedder)
    path = folder / f"index-{cfg.index}-{content_hash(cfg.embedder, [r['id'] for r in pool], texts)}.faiss"
    if path.exists():
        index = faiss.read_index(str(path))
        if index.ntotal == len(pool):
            return index, True
        log.warning("cached index %s has %d vectors for %d records; rebuilding", path, index.ntotal, len(pool))
    vecs = embed_texts(texts, cfg.embedder, cfg.batch_size, cache_path=folder)
    t0 = time.time()
    dim = vecs.shape[1]
    if cfg.index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(vecs)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    log.info("indexed %d pool vectors (%s) in %.2f s -> %s", index.ntotal, cfg.index, time.time() - t0, path)
    return index, False


def search(index, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, pool indices) of each query's k nearest records; index -1 = none."""
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(query_vecs, dtype=np.float32), k)


def merge_candidates(sims: np.ndarray, idxs: np.ndarray, weights: np.ndarray,
                     min_similarity: float) -> dict[int, tuple[float, float, int]]:
    """pool index -> (weighted score, similarity, query index), the best over all queries."""
    best: dict[int, tuple[float, float, int]] = {}
    for q in range(sims.shape[0]):
        for sim, pid in zip(sims[q].tolist(), idxs[q].tolist()):
            if pid < 0 or sim < min_similarity:
                continue
            score = float(weights[q]) * sim
            if pid not in best or score > best[pid][0]:
                best[pid] = (score, float(sim), q)
    return best


def retrieve(pool: list[dict], queries: list[str], cfg: RetrieveConfig, cache_dir: str | os.PathLike,
             out_path: str | os.PathLike, weights: list[float] | None = None) -> dict:
    """Select pool records matched to ``queries``, write them to ``out_path``, return stats."""
    t_start = time.time()
    _check(cfg, queries, weights)
    stats = {"n_queries": len(queries), "n_pool": len(pool), "candidates": 0, "selected": 0,
             "tokens": 0, "mean_similarity": 0.0, "queries_matched": 0, "skipped_budget": 0,
             "skipped_same_prompt": 0}
    if not pool or not queries:
        write_jsonl(out_path, [])
        return {**stats, "wall_s": round(time.time() - t_start, 3)}
    t0 = time.time()
    index, cached = pool_index(pool, cfg, cache_dir)
    stats["index_cached"], stats["index_s"] = cached, round(time.time() - t0, 3)
    t0 = time.time()
    qvecs = embed_texts(queries, cfg.embedder, cfg.batch_size)  # queries change per round: no cache
    stats["embed_queries_s"] = round(time.time() - t0, 3)
    t0 = time.time()
    sims, idxs = search(index, qvecs, cfg.k_per_query)
    stats["search_s"] = round(time.time() - t0, 4)
    w = np.asarray(weights if weights is not None else [1.0] * len(queries), dtype=np.float32)
    best = merge_candidates(sims, idxs, w, cfg.min_similarity)
    stats["candidates"] = len(best)

    count = token_counter(cfg.tokenizer)
    budget = cfg.token_budget or float("inf")
    chosen, used, prompts = [], 0, set()
    for pid, (score, sim, q) in sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0])):
        if cfg.max_records and len(chosen) >= cfg.max_records:
            break
        if cfg.distinct_prompts:
            prompt = " ".join(words(record_text(pool[pid])))
            if prompt in prompts:
                stats["skipped_same_prompt"] += 1  # mix's dedup would drop it anyway: spare the budget
                continue
        n_tok = count(pool[pid])
        if used + n_tok > budget:
            stats["skipped_budget"] += 1  # a shorter record further down may still fit
            continue
        used += n_tok
        if cfg.distinct_prompts:
            prompts.add(prompt)
        rec = {**pool[pid], "meta": {**pool[pid].get("meta", {}),
                                     "retrieval": {"score": round(sim, 4), "query_idx": q, "rank": len(chosen)}}}
        chosen.append((rec, sim, q))
    write_jsonl(out_path, (r for r, _, _ in chosen))
    stats.update(selected=len(chosen), tokens=used,
                 mean_similarity=round(float(np.mean([s for _, s, _ in chosen])), 4) if chosen else 0.0,
                 queries_matched=len({q for _, _, q in chosen}),
                 wall_s=round(time.time() - t_start, 3))
    log.info("retrieved %d/%d candidates (%d tokens, mean sim %.3f) for %d queries in %.1f s",
             stats["selected"], stats["candidates"], used, stats["mean_similarity"], len(queries), stats["wall_s"])
    return stats
