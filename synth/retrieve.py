"""Retrieve pool records for the student's failures (the only faiss user).

Pool records are embedded by their first user turn (``synth.embed.record_text``) and put in
a FAISS inner-product index (cosine, as vectors are normalised), cached on disk next to the
embeddings and keyed by the pool's content, so an unchanged pool is indexed once.

Selection fills the record and token budgets in two parts:

1. **kNN with per-query quotas** (``1 - dsir_share`` of the budgets). Each query (a failed dev
   prompt, weight 1; a deficiency phrase, weight ``deficiency_share`` x the failures it groups)
   has its ``k_per_query`` nearest records at or above ``min_similarity``, best first. The query
   furthest below its share (records taken / weight) takes its next record, so every query gets
   records in proportion to its weight and a similarity is never multiplied by a count.
2. **DSIR** (the rest; what it cannot fill goes back to the quotas): importance resampling
   toward the target distribution (the dev items, failures weighted up; ``synth.select``),
   among the records likelier under the target than under the pool. Importance is measured
   against the whole pool; by default (``dsir_scope: near``) the records drawn are those within
   ``min_similarity`` of some query (its ``region_k`` nearest), because hashed n-grams alone
   match a prompt template ("step by step") as readily as a topic: kNN decides what is
   relevant, DSIR the proportions, which the neighbours of a few queries alone do not match.

Every record taken passes the same gates: the content rules (``synth.heuristics``), one record
per first user turn, the diversity filter, the student's ``max_seq_len`` (a multi-turn record
may keep its longest prefix of whole exchanges that fits), the token budget and, when
``ifd_max`` > 0, the student's IFD (``synth.ifd``). The summary
reports KL(target || selected) next to KL(target || random subset of the same size).
"""
from __future__ import annotations

import heapq
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from evalsuite.records import content_hash, write_jsonl
from evalsuite.samples import sample_key
from synth import select
from synth.embed import DEFAULT_EMBEDDER, cache_folder, embed_texts, record_text
from synth.heuristics import DropRule, RuleSet, default_rules
from synth.overlap import words
from synth.pool import PoolConfig

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw")
DSIR_MAX_MISSES = 200  # DSIR stops after this many records in a row too long for the tokens left


@dataclass
class RetrieveConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)
    embedder: str = DEFAULT_EMBEDDER  # sentence-transformers model (packaged MiniLM by default)
    batch_size: int = 64              # embedding batch size
    k_per_query: int = 20             # nearest neighbours considered per query
    max_records: int = 500            # at most this many records selected (0 = no limit)
    token_budget: int = 250_000       # at most this many tokens selected (0 = no limit)
    min_similarity: float = 0.35      # cosine below this is not a match
    tokenizer: str = ""               # HF tokenizer for counts when no student is passed; "" = chars/4
    index: Literal["flat", "hnsw"] = "flat"             # flat (exact; fine to ~1M records) | hnsw (approximate, large pools)
    distinct_prompts: bool = True     # take one record per first user turn (ShareGPT repeats popular prompts)
    deficiency_share: float = 0.5     # a deficiency query weighs this x its failure count (failures are queries too)
    passed_weight: float = 0.25       # weight of a passed dev item in the DSIR target (a failed one weighs 1)
    dsir_share: float = 0.5           # share of the budgets filled by DSIR (0 = kNN only, 1 = DSIR only)
    dsir_scope: Literal["near", "pool"] = "near"  # DSIR draws near some query (region_k, min_similarity) | anywhere
    region_k: int = 256               # nearest records per query that make up the "near" scope
    ngram_buckets: int = 10_000       # hashed word unigram+bigram buckets (DSIR features, reported KL)
    seed: int = 0                     # DSIR's Gumbel noise and the random subsets of the KL baseline
    diversity_threshold: float = 0.9  # skip a record with cosine above this to a selected one (0 = off)
    split_long: bool = True           # over max_seq_len: keep the longest fitting prefix of whole exchanges
    drop_rules: list[DropRule] = field(default_factory=default_rules)  # named regexes keeping records out
    ifd_max: float = 0.0              # drop records with IFD >= this (synth/ifd.py); 0 = off, Superfiltering: 1
    multi_tag_weight: float = 0.5     # DSIR log-weight bonus x log(fine tags) (pool records carrying tags only)
    long_tail_weight: float = 1.0     # DSIR log-weight bonus for rare fine tags (pool records carrying tags only)

    def __post_init__(self) -> None:
        for name in ("deficiency_share", "dsir_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.passed_weight < 0:
            raise ValueError(f"passed_weight must be >= 0, got {self.passed_weight}")
        if self.ifd_max < 0:
            raise ValueError(f"ifd_max must be >= 0 (0 = off), got {self.ifd_max}")
        if self.region_k < 1:
            raise ValueError(f"region_k must be >= 1, got {self.region_k}")
        if self.diversity_threshold > 1:
            raise ValueError(f"diversity_threshold must be <= 1 (a cosine; 0 = off), got {self.diversity_threshold}")


@dataclass
class Targets:
    """What a round asks of the pool: kNN queries with weights, and the DSIR target texts."""
    queries: list[str]
    weights: list[float]
    target: list[str]
    target_weights: list[float]


def eval_targets(dev: list[dict], failures: list[dict], deficiencies: list[dict], cfg: RetrieveConfig) -> Targets:
    """Queries and target from the dev items (``evalsuite.samples.split_rows``) and the ranked
    deficiencies. Each failure is a query of weight 1. A deficiency groups ``count`` failures that
    are queries already, so its phrase adds ``deficiency_share`` x count, not the count again.
    With no failure, every dev item is a query. The DSIR target is every dev item (failed 1,
    passed ``passed_weight``) plus the deficiency phrases at their query weights."""
    items = failures or dev
    def_w = [cfg.deficiency_share * max(1, int(d.get("count", 1))) for d in deficiencies]
    failed = {sample_key(s) for s in failures}
    return Targets(
        queries=[s["prompt"] for s in items] + [d["ability"] for d in deficiencies],
        weights=[1.0] * len(items) + def_w,
        target=[s["prompt"] for s in dev] + [d["ability"] for d in deficiencies],
        target_weights=[1.0 if sample_key(s) in failed or not failed else cfg.passed_weight for s in dev] + def_w)


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
    """Tokens of a record as the trainer sees it: the tokenizer's chat template rendered and
    tokenized when it has one (else +4 template tokens a turn); without a tokenizer, chars/4."""
    if not tokenizer:
        return lambda rec: max(1, sum(len(m["content"]) for m in rec["messages"]) // 4)
    from transformers import AutoTokenizer

    from evalsuite.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))

    def approx(rec: dict) -> int:
        return sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) + 4 for m in rec["messages"])

    if not getattr(tok, "chat_template", None):
        return approx

    def count(rec: dict) -> int:
        msgs = [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]
        try:
            text = tok.apply_chat_template(msgs, tokenize=False)
        except Exception:  # a template that rejects this shape (jinja raise_exception): estimate
            return approx(rec)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    return count


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


def quota_order(lists: list[list[int]], weights, take: Callable[[int, int], int | None],
                used: list[float] | None = None, seed: int = 0) -> list[float]:
    """Weighted fair allocation over per-query candidate lists (best first): the query with the
    fewest records taken per unit of weight offers its next candidate; ``take(pid, q)`` returns
    True when it took the record, None when not (the query then offers its next), or -1 when the
    budgets are spent. Zero-weight queries take nothing. Ties go to the heavier query, then in a
    seeded random order, so that when the budget is smaller than the number of queries the first
    picks do not all go to the first task's items. Returns the records each query took (``used``:
    to continue a pass)."""
    used = list(used) if used is not None else [0.0] * len(lists)
    rank = np.random.default_rng(seed).permutation(len(lists)).tolist()
    heap = [(used[q] / weights[q], -float(weights[q]), rank[q], q) for q in range(len(lists))
            if weights[q] > 0 and lists[q]]
    heapq.heapify(heap)
    pos = [0] * len(lists)
    while heap:
        _, negw, _, q = heapq.heappop(heap)
        while pos[q] < len(lists[q]):
            pid = lists[q][pos[q]]
            pos[q] += 1
            charged = take(pid, q)
            if charged == -1:
                return used     # the budgets are spent
            if charged is not None:
                used[q] += 1
                break
        if pos[q] < len(lists[q]):
            heapq.heappush(heap, (used[q] / -negw, negw, rank[q], q))
    return used


def fit_record(rec: dict, count: Callable[[dict], int], max_seq_len: int,
               split_long: bool = True) -> tuple[list[dict], int] | None:
    """(messages, tokens) of ``rec`` or, when it is over ``max_seq_len`` tokens (0 = no limit), of its
    longest prefix of whole exchanges that fits; None when nothing fits (the trainer would skip it).
    The one length gate: retrieval and the control arm both select through it."""
    msgs = rec["messages"]
    n = count(rec)
    if not max_seq_len or n <= max_seq_len:
        return msgs, n
    if split_long:
        head = 1 if msgs[0]["role"] == "system" else 0
        ends = [i + 1 for i in range(head, len(msgs)) if msgs[i]["role"] == "assistant"][:-1]
        for end in reversed(ends):
            n = count({"messages": msgs[:end]})
            if n <= max_seq_len:
                return msgs[:end], n
    return None


class _Selection:
    """The records taken so far and the gates every candidate passes, with their counts."""

    def __init__(self, pool, cfg, count, max_seq_len, vec, ifd=None):
        self.pool, self.cfg, self.count, self.max_seq_len, self.vec, self.ifd = pool, cfg, count, max_seq_len, vec, ifd
        self.diversity = select.DiversityFilter(cfg.diversity_threshold)
        self.taken: dict[int, dict] = {}       # pool index -> output record (insertion = rank order)
        self.rejected: set[int] = set()        # for good: same prompt, too long, too close to a taken one
        self.prompts: set[str] = set()
        self.tokens = 0
        self.skips = {"same_prompt": 0, "diversity": 0, "too_long": 0, "budget": 0, "ifd": 0}
        self.prefixed = 0
        self._fit: dict[int, tuple[list[dict], int] | None] = {}

    def _fitting(self, pid: int) -> tuple[list[dict], int] | None:
        if pid not in self._fit:
            self._fit[pid] = fit_record(self.pool[pid], self.count, self.max_seq_len, self.cfg.split_long)
        return self._fit[pid]

    def take(self, pid: int, budget_tokens: float, meta: dict) -> int | None:
        """Take ``pool[pid]`` if it passes every gate within ``budget_tokens``; its tokens, else None."""
        if pid in self.taken or pid in self.rejected:
            return None
        rec = self.pool[pid]
        prompt = " ".join(words(record_text(rec))) if self.cfg.distinct_prompts else None
        if prompt is not None and prompt in self.prompts:
            self.skips["same_prompt"] += 1     # mix's dedup would drop it anyway: spare the budget
            self.rejected.add(pid)
            return None
        if not self.diversity.admits(self.vec(pid)):
            self.skips["diversity"] += 1
            self.rejected.add(pid)
            return None
        fit = self._fitting(pid)
        if fit is None:
            self.skips["too_long"] += 1        # the trainer would skip it: never select it
            self.rejected.add(pid)
            return None
        msgs, n_tok = fit
        if self.tokens + n_tok > budget_tokens:
            self.skips["budget"] += 1          # a shorter record further down may still fit
            return None
        if self.ifd is not None:               # last: two forward passes of the student
            ifd = self.ifd.score(rec)
            meta = {**meta, "ifd": round(ifd, 4)}
            if ifd >= self.cfg.ifd_max:
                self.skips["ifd"] += 1         # the instruction does not help the model produce the answer
                self.rejected.add(pid)
                return None
        self.tokens += n_tok
        if prompt is not None:
            self.prompts.add(prompt)
        self.diversity.add(self.vec(pid))
        info = {**meta, "rank": len(self.taken), "tokens": n_tok}
        if len(msgs) < len(rec["messages"]):
            info["kept_messages"] = len(msgs)
            self.prefixed += 1
        self.taken[pid] = {**rec, "messages": list(msgs), "meta": {**rec.get("meta", {}), "retrieval": info}}
        return n_tok


def retrieve(pool: list[dict], queries: list[str], cfg: RetrieveConfig, cache_dir: str | os.PathLike,
             out_path: str | os.PathLike, weights: list[float] | None = None, *,
             target: list[str] | None = None, target_weights: list[float] | None = None,
             student: str | None = None, max_seq_len: int = 0) -> dict:
    """Select pool records for ``queries`` (kNN quotas by ``weights``) and the ``target`` texts
    (DSIR; default: the queries), write them to ``out_path`` and return stats. Tokens are counted
    with ``student``'s tokenizer (else ``cfg.tokenizer``); no record over ``max_seq_len`` tokens
    (0 = no limit) is selected."""
    t_start = time.time()
    _check(cfg, queries, weights)
    if target is None:
        target, target_weights = queries, weights
    if target_weights is not None and len(target_weights) != len(target):
        raise ValueError(f"retrieve: {len(target_weights)} target weights for {len(target)} target texts")
    stats: dict = {"selected": 0, "tokens": 0, "kl_target_selected": None, "kl_target_random": None,
                   "n_queries": len(queries), "n_pool": len(pool), "candidates": 0, "mean_similarity": 0.0,
                   "queries_matched": 0, "skipped_budget": 0, "skipped_same_prompt": 0}
    if not pool or not queries:
        write_jsonl(out_path, [])
        return {**stats, "wall_s": round(time.time() - t_start, 3)}
    t0 = time.time()
    index, cached = pool_index(pool, cfg, cache_dir)
    stats["index_cached"], stats["index_s"] = cached, round(time.time() - t0, 3)

    def vec(pid: int) -> np.ndarray:   # a pool record's embedding, read back from the index
        return index.reconstruct(int(pid))
    t0 = time.time()
    qvecs = embed_texts(queries, cfg.embedder, cfg.batch_size)  # queries change per round: no cache
    stats["embed_queries_s"] = round(time.time() - t0, 3)

    keep, dropped = RuleSet(cfg.drop_rules).apply(pool)
    stats["dropped_by_rule"] = dropped
    t0 = time.time()
    sims, idxs = search(index, qvecs, cfg.k_per_query)
    stats["search_s"] = round(time.time() - t0, 4)
    w = np.asarray(weights if weights is not None else [1.0] * len(queries), dtype=np.float64)
    lists = [[p for s, p in zip(sims[q].tolist(), idxs[q].tolist()) if p >= 0 and s >= cfg.min_similarity and keep[p]]
             for q in range(len(queries))]
    stats["candidates"] = len({p for lst in lists for p in lst})

    ifd = None
    if cfg.ifd_max > 0:
        if not (student or cfg.tokenizer):
            raise ValueError("retrieve.ifd_max needs the student (or retrieve.tokenizer naming a causal LM) to score IFD")
        from synth.ifd import IFDScorer

        ifd = IFDScorer(student or cfg.tokenizer, max_answer_tokens=max_seq_len or 512)
    sel = _Selection(pool, cfg, token_counter(student or cfg.tokenizer), max_seq_len, vec, ifd)
    max_rec = cfg.max_records or None
    tok_budget = float(cfg.token_budget) if cfg.token_budget else float("inf")
    share = 1.0 - cfg.dsir_share

    def take_knn(rec_limit: int | None, tok_limit: float) -> Callable[[int, int], int | None]:
        def take(pid: int, q: int) -> int | None:
            if rec_limit is not None and len(sel.taken) >= rec_limit:
                return -1
            n = sel.take(pid, tok_limit, {"via": "knn", "score": round(float(qvecs[q] @ vec(pid)), 4), "query_idx": q})
            return None if n is None else True
        return take

    # 1. kNN with per-query quotas, within (1 - dsir_share) of the budgets
    used = None
    if share > 0:
        used = quota_order(lists, w, take_knn(None if max_rec is None else round(max_rec * share), tok_budget * share),
                           seed=cfg.seed)

    # 2. DSIR for the rest of the budgets, among records with importance > 1 (near some query, or anywhere)
    t0 = time.time()
    grams = select.HashedNgrams(cfg.ngram_buckets)
    feats = grams.matrix([record_text(r) for r in pool])
    tw = np.asarray(target_weights if target_weights is not None else [1.0] * len(target), dtype=np.float64)
    tgt = select.target_counts(grams.matrix(list(target)), tw)
    log_w = select.log_importance(feats, tgt) + select.tag_preference(pool, cfg.multi_tag_weight, cfg.long_tail_weight)
    stats["features_s"] = round(time.time() - t0, 3)
    scope = np.ones(len(pool), dtype=bool)
    if cfg.dsir_scope == "near":
        rs, ri = search(index, qvecs, max(cfg.region_k, cfg.k_per_query))
        scope[:] = False
        scope[ri[(ri >= 0) & (rs >= cfg.min_similarity)]] = True
    stats["dsir_scope_records"] = int(scope.sum())
    if cfg.dsir_share > 0:
        misses = 0   # consecutive records that did not fit the remaining tokens
        for pid in select.gumbel_order(log_w, cfg.seed).tolist():
            if (max_rec is not None and len(sel.taken) >= max_rec) or sel.tokens >= tok_budget:
                break
            if misses >= DSIR_MAX_MISSES:
                break  # the token budget is as full as the pool's next records allow
            if not keep[pid] or not scope[pid] or log_w[pid] <= 0:
                continue   # only records likelier under the target than under the pool (importance > 1)
            v = vec(pid)
            q = int(np.argmax(qvecs @ v))
            before = sel.skips["budget"]
            sel.take(pid, tok_budget, {"via": "dsir", "score": round(float(qvecs[q] @ v), 4), "query_idx": q,
                                       "log_importance": round(float(log_w[pid]), 3)})
            misses = misses + 1 if sel.skips["budget"] > before else 0
    # 3. what DSIR could not fill (few records likelier under the target) goes back to the kNN quotas
    if used is not None and cfg.dsir_share > 0 and (max_rec is None or len(sel.taken) < max_rec):
        quota_order(lists, w, take_knn(max_rec, tok_budget), used, seed=cfg.seed)

    chosen = list(sel.taken.values())
    write_jsonl(out_path, chosen)
    rows = list(sel.taken)
    part = {via: [pid for pid, r in sel.taken.items() if r["meta"]["retrieval"]["via"] == via] for via in ("knn", "dsir")}
    eligible = [i for i, k in enumerate(keep) if k]
    scores = [r["meta"]["retrieval"]["score"] for r in chosen]
    stats.update(
        selected=len(chosen), tokens=sel.tokens,
        kl_target_selected=round(select.kl_to(tgt, feats, rows), 4) if rows else None,
        kl_target_random=round(select.kl_random(tgt, feats, eligible, len(rows), cfg.seed), 4) if rows else None,
        by_part={via: len(ids) for via, ids in part.items()},
        kl_by_part={via: round(select.kl_to(tgt, feats, ids), 4) if ids else None for via, ids in part.items()},
        mean_similarity=round(float(np.mean(scores)), 4) if chosen else 0.0,
        queries_matched=len({sel.taken[pid]["meta"]["retrieval"]["query_idx"] for pid in part["knn"]}),
        skipped_budget=sel.skips["budget"], skipped_same_prompt=sel.skips["same_prompt"],
        skipped_diversity=sel.skips["diversity"], skipped_too_long=sel.skips["too_long"], skipped_ifd=sel.skips["ifd"],
        kept_prefix=sel.prefixed, max_seq_len=max_seq_len or None,
        tokenizer=student or cfg.tokenizer or "chars/4",
        wall_s=round(time.time() - t_start, 3))
    log.info("retrieved %d records (%d kNN, %d DSIR; %d tokens) for %d queries in %.1f s; "
             "KL(target||selected) %s vs random %s", stats["selected"], len(part["knn"]), len(part["dsir"]), sel.tokens,
             len(queries), stats["wall_s"], stats["kl_target_selected"], stats["kl_target_random"])
    return stats
