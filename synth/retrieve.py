"""Retrieve pool records for the student's failures.

Pool records are embedded by their first user turn (``synth.embed.record_text``) into the
embedder's persisted FAISS inner-product index (``synth.vindex``: cosine, as vectors are
normalised; keyed by text content, so a new round or an added pool embeds and adds only its new
records; flat up to ``index_flat_max`` vectors, IVF beyond).

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
may keep its longest prefix of whole exchanges that fits), the token budget and, last, IFD
(``synth.ifd``; by default the student scores it and a record with IFD >= ``ifd_max`` = 1 is
dropped, as Superfiltering does): on a miss the record and the next ``ifd_batch - 1`` candidates
of the pass are scored in one batched call, and scores are cached per scorer under the cache
dir. The summary reports KL(target || selected) next to KL(target || random subset of the same
size), and the IFD gate's figures (scored, cached, seconds, the records it dropped).
"""
from __future__ import annotations

import heapq
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from evalsuite.records import content_hash, write_jsonl
from evalsuite.samples import sample_key
from synth import select
from synth import vindex
from synth.embed import DEFAULT_EMBEDDER, cache_folder, embed_texts, record_text, text_key
from synth.heuristics import DropRule, RuleSet, default_rules
from synth.overlap import words
from synth.pool import PoolConfig
from synth.pools import PoolSource
from synth.vindex import PoolIndex

log = logging.getLogger(__name__)

INDEX_TYPES = vindex.KINDS
DSIR_MAX_MISSES = 200  # DSIR stops after this many records in a row too long for the tokens left


@dataclass
class RetrieveConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)  # the pool, or the filters of every `pools` entry
    pools: list[PoolSource] = field(default_factory=list)  # several pools [{source, weight, format?}]; [] = `pool`
    synth_weight: float = 0.25        # earlier rounds' verified synthesized records join as pool "synth" (0 = off)
    skip_retrieved: bool = True       # a record an earlier round retrieved is not retrieved again
    pool_spill: bool = True           # budget a pool cannot fill by its weight goes to the others
    embedder: str = DEFAULT_EMBEDDER  # sentence-transformers model (packaged MiniLM by default)
    batch_size: int = 64              # embedding batch size
    k_per_query: int = 20             # nearest neighbours considered per query
    max_records: int = 500            # at most this many records selected (0 = no limit)
    token_budget: int = 250_000       # at most this many tokens selected (0 = no limit)
    min_similarity: float = 0.35      # cosine below this is not a match
    tokenizer: str = ""               # HF tokenizer for counts when no student is passed; "" = chars/4
    index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"  # auto: flat (exact) up to index_flat_max vectors, IVF beyond
    index_flat_max: int = vindex.FLAT_MAX  # auto switches to IVF above this many vectors
    index_nprobe: int = 32            # IVF cells scanned per query (more: closer to exact, slower)
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
    ifd_max: float = 1.0              # drop records with IFD >= this (synth/ifd.py; Superfiltering: 1); 0 = off
    ifd_model: str = ""               # the IFD scorer (a causal LM); "" = the student
    ifd_batch: int = 4                # records scored per call (the next candidates in the pass's order): more over-scores
    ifd_max_tokens: int = 384         # prompt and answer tokens scored (each): bounds a CPU forward pass
    ifd_engine: Literal["ct2", "hf"] = "ct2"  # CTranslate2 (evalsuite.engine) | transformers fp32 (the reference)
    ifd_quantization: str = "int8"    # ct2 only: int8 keeps every keep/drop decision of fp32 (benchmarks/ifd_cost.py)
    multi_tag_weight: float = 0.5     # log-weight bonus x log(macro categories its fine tags span) (tagged records)
    long_tail_weight: float = 1.0     # log-weight bonus for rare fine tags (tagged records)
    knn_tag_weight: float = 0.1       # kNN order: cosine + this x the bonus above (0 = by cosine alone)
    tag_match_weight: float = 1.0     # DSIR log-weight x log p_target(tags)/p_pool(tags) (tagged records; 0 = off)

    def __post_init__(self) -> None:
        for name in ("deficiency_share", "dsir_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.passed_weight < 0:
            raise ValueError(f"passed_weight must be >= 0, got {self.passed_weight}")
        if self.synth_weight < 0:
            raise ValueError(f"synth_weight must be >= 0 (0 = off), got {self.synth_weight}")
        if self.ifd_max < 0:
            raise ValueError(f"ifd_max must be >= 0 (0 = off), got {self.ifd_max}")
        if self.ifd_batch < 1 or self.ifd_max_tokens < 1:
            raise ValueError(f"ifd_batch and ifd_max_tokens must be >= 1, got {self.ifd_batch}, {self.ifd_max_tokens}")
        if self.ifd_engine == "ct2":
            from evalsuite.engine import check_quantization

            check_quantization(self.ifd_quantization, key="ifd_quantization")
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


def pool_index(pool: list[dict], cfg: RetrieveConfig, cache_dir: str | os.PathLike,
               executor=None) -> tuple[PoolIndex, dict]:
    """The pool's view of the embedder's persisted index (``synth.vindex``), with only the records
    it lacks embedded (``executor``: where; ``synth.executor``) and added; and what that cost."""
    texts = [record_text(r) for r in pool]
    folder = cache_folder(cache_dir, cfg.embedder)
    report: dict = {}
    view, stats = vindex.pool_index(
        texts, [text_key(t, cfg.embedder) for t in texts],
        lambda new: embed_texts(new, cfg.embedder, cfg.batch_size, cache_path=folder, executor=executor, report=report),
        folder, cfg.index, cfg.index_flat_max, cfg.index_nprobe)
    if report:
        stats["embed_pool"] = report
    return view, stats


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
        self.skips = {"same_prompt": 0, "diversity": 0, "too_long": 0, "budget": 0, "ifd": 0, "pool_share": 0}
        self.group: list[str] | None = None    # pool name per record (several pools)
        self.caps: dict[str, tuple[float, float]] | None = None   # pool -> (records, tokens) it may take
        self.group_records: Counter = Counter()
        self.group_tokens: Counter = Counter()
        self.prefixed = 0
        self._fit: dict[int, tuple[list[dict], int] | None] = {}
        self.ifd_ahead: list[int] = []         # the pass's candidates in the order it will likely offer them
        self.ifd_dropped: list[dict] = []      # records the IFD gate dropped: id, IFD

    def _ifd(self, pid: int) -> float:
        """IFD of ``pool[pid]``; on a miss, it and the next ``ifd_batch - 1`` unscored candidates of the
        pass (``ifd_ahead``) are scored in one batched call, so the gate costs a few padded forward
        passes per pass rather than two per record."""
        scorer, rec = self.ifd, self.pool[pid]
        key = scorer.key(rec)
        if scorer.cached(key) is None:
            batch, keys = [rec], {key}
            for q in self.ifd_ahead:
                if len(batch) >= self.cfg.ifd_batch:
                    break
                if q in self.taken or q in self.rejected or self._fitting(q) is None:
                    continue
                k = scorer.key(self.pool[q])
                if k not in scorer.scores and k not in keys:
                    batch.append(self.pool[q])
                    keys.add(k)
            scorer.score_many(batch)
        return scorer.scores[key]

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
        g = self.group[pid] if self.group is not None else ""
        if self.caps is not None:
            max_rec, max_tok = self.caps.get(g, (0, 0))
            if self.group_records[g] >= max_rec or self.group_tokens[g] + n_tok > max_tok:
                self.skips["pool_share"] += 1  # its pool's share is spent (the spill pass may still take it)
                return None
        if self.ifd is not None:               # last: forward passes of the scorer (batched, cached)
            ifd = self._ifd(pid)
            meta = {**meta, "ifd": round(ifd, 4)}
            if ifd >= self.cfg.ifd_max:
                self.skips["ifd"] += 1         # the instruction does not help the model produce the answer
                self.ifd_dropped.append({"id": rec["id"], "ifd": round(ifd, 4) if ifd != float("inf") else "inf"})
                self.rejected.add(pid)
                return None
        self.tokens += n_tok
        self.group_records[g] += 1
        self.group_tokens[g] += n_tok
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
             student: str | None = None, max_seq_len: int = 0,
             groups: list[str] | None = None, group_weights: dict[str, float] | None = None,
             pool_tags: list[list[str]] | None = None, target_tags: Counter | None = None,
             executor=None) -> dict:
    """Select pool records for ``queries`` (kNN quotas by ``weights``) and the ``target`` texts
    (DSIR; default: the queries), write them to ``out_path`` and return stats. Tokens are counted
    with ``student``'s tokenizer (else ``cfg.tokenizer``); no record over ``max_seq_len`` tokens
    (0 = no limit) is selected. ``groups`` names each record's pool (``synth.pools``): the budgets
    are split by ``group_weights`` (what a pool cannot fill spills to the others with
    ``cfg.pool_spill``) and the summary counts records and tokens per pool. ``pool_tags`` (tag
    features per record, ``synth.tagging.canonical_tags``; [] = untagged) and ``target_tags`` (the
    target's tag histogram, ``select.tag_histogram``) add DSIR's tag term and the tag KL pair.
    ``executor`` (``synth.executor.ExecutorConfig``) says where new pool records are embedded."""
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
    index, index_stats = pool_index(pool, cfg, cache_dir, executor)
    stats.update(index_stats)
    vec = index.vec   # a pool record's embedding, read back from the index
    t0 = time.time()
    qvecs = embed_texts(queries, cfg.embedder, cfg.batch_size)  # queries change per round: no cache
    stats["embed_queries_s"] = round(time.time() - t0, 3)

    keep, dropped = RuleSet(cfg.drop_rules).apply(pool)
    stats["dropped_by_rule"] = dropped
    t0 = time.time()
    sims, idxs = index.search(qvecs, cfg.k_per_query)
    stats["search_s"] = round(time.time() - t0, 4)
    w = np.asarray(weights if weights is not None else [1.0] * len(queries), dtype=np.float64)
    # informative selection: multi-ability (fine tags across macro categories) and long-tail tags,
    # from the tag features (pool_tags) or the records' own tags; it orders kNN lists and weighs DSIR
    if pool_tags is not None and len(pool_tags) != len(pool):
        raise ValueError(f"retrieve: {len(pool_tags)} tag lists for {len(pool)} records")
    bonus = select.informative_bonus(pool_tags if pool_tags is not None else select.record_tag_features(pool),
                                     cfg.multi_tag_weight, cfg.long_tail_weight)
    lists = []
    for q in range(len(queries)):
        hits = [(s + cfg.knn_tag_weight * bonus[p], p) for s, p in zip(sims[q].tolist(), idxs[q].tolist())
                if p >= 0 and s >= cfg.min_similarity and keep[p]]
        lists.append([p for _, p in sorted(hits, key=lambda sp: -sp[0])])   # stable: ties keep cosine order
    stats["informative_records"] = int((bonus > 0).sum())
    stats["candidates"] = len({p for lst in lists for p in lst})

    ifd = None
    scorer_model = cfg.ifd_model or student or cfg.tokenizer
    if cfg.ifd_max > 0 and scorer_model:
        from synth.ifd import IFDScorer

        ifd = IFDScorer(scorer_model, max_prompt_tokens=cfg.ifd_max_tokens, max_answer_tokens=cfg.ifd_max_tokens,
                        cache_dir=cache_dir, engine=cfg.ifd_engine, quantization=cfg.ifd_quantization)
    elif cfg.ifd_max > 0:   # a library call with no model to score with (the loop always passes the student)
        log.warning("retrieve: IFD gate off: no scorer (pass the student, or set retrieve.ifd_model)")
    sel = _Selection(pool, cfg, token_counter(student or cfg.tokenizer), max_seq_len, vec, ifd)
    max_rec = cfg.max_records or None
    tok_budget = float(cfg.token_budget) if cfg.token_budget else float("inf")
    if groups is not None:
        if len(groups) != len(pool):
            raise ValueError(f"retrieve: {len(groups)} pool names for {len(pool)} records")
        sel.group = list(groups)
        gw = {g: w for g, w in (group_weights or {}).items() if w > 0 and g in set(groups)}
        if group_weights is not None and (len(gw) > 1 or set(groups) - set(gw)):  # one pool alone: no split
            total = sum(gw.values())
            sel.caps = {g: (round(max_rec * w / total) if max_rec is not None else float("inf"), tok_budget * w / total)
                        for g, w in gw.items()}
    share = 1.0 - cfg.dsir_share

    def take_knn(rec_limit: int | None, tok_limit: float) -> Callable[[int, int], int | None]:
        def take(pid: int, q: int) -> int | None:
            if rec_limit is not None and len(sel.taken) >= rec_limit:
                return -1
            n = sel.take(pid, tok_limit, {"via": "knn", "score": round(float(qvecs[q] @ vec(pid)), 4), "query_idx": q})
            return None if n is None else True
        return take

    # the kNN passes offer roughly the lists' first records, then their second ones, ...
    knn_ahead = list(dict.fromkeys(p for col in range(cfg.k_per_query) for lst in lists if col < len(lst)
                                   for p in (lst[col],)))
    sel.ifd_ahead = knn_ahead
    # 1. kNN with per-query quotas, within (1 - dsir_share) of the budgets
    used = None
    if share > 0:
        used = quota_order(lists, w, take_knn(None if max_rec is None else round(max_rec * share), tok_budget * share),
                           seed=cfg.seed)

    # 2. DSIR for the rest of the budgets, among records with importance > 1 (near some query, or anywhere)
    t0 = time.time()
    grams = select.HashedNgrams(cfg.ngram_buckets)
    feats, stats["dsir_features"] = select.cached_matrix(grams, [record_text(r) for r in pool], cache_dir)
    tw = np.asarray(target_weights if target_weights is not None else [1.0] * len(target), dtype=np.float64)
    tgt = select.target_counts(grams.matrix(list(target)), tw)
    log_w = select.log_importance(feats, tgt) + bonus
    if pool_tags is not None and target_tags and cfg.tag_match_weight:
        log_w += cfg.tag_match_weight * select.tag_importance(pool_tags, target_tags)
    stats["features_s"] = round(time.time() - t0, 3)
    scope = np.ones(len(pool), dtype=bool)
    if cfg.dsir_scope == "near":
        rs, ri = index.search(qvecs, max(cfg.region_k, cfg.k_per_query))
        scope[:] = False
        scope[ri[(ri >= 0) & (rs >= cfg.min_similarity)]] = True
    stats["dsir_scope_records"] = int(scope.sum())
    if cfg.dsir_share > 0:
        misses = 0   # consecutive records that did not fit the remaining tokens
        dsir_order = [p for p in select.gumbel_order(log_w, cfg.seed).tolist() if keep[p] and scope[p] and log_w[p] > 0]
        sel.ifd_ahead = dsir_order
        for pid in dsir_order:
            if (max_rec is not None and len(sel.taken) >= max_rec) or sel.tokens >= tok_budget:
                break
            if misses >= DSIR_MAX_MISSES:
                break  # the token budget is as full as the pool's next records allow
            v = vec(pid)   # dsir_order holds only records likelier under the target than the pool (importance > 1)
            q = int(np.argmax(qvecs @ v))
            before = sel.skips["budget"]
            sel.take(pid, tok_budget, {"via": "dsir", "score": round(float(qvecs[q] @ v), 4), "query_idx": q,
                                       "log_importance": round(float(log_w[pid]), 3)})
            misses = misses + 1 if sel.skips["budget"] > before else 0
    sel.ifd_ahead = knn_ahead
    # 3. what DSIR could not fill (few records likelier under the target) goes back to the kNN quotas
    if used is not None and cfg.dsir_share > 0 and (max_rec is None or len(sel.taken) < max_rec):
        used = quota_order(lists, w, take_knn(max_rec, tok_budget), used, seed=cfg.seed)
    # 4. several pools: what a pool could not fill by its weight goes to the others (kNN quotas, uncapped)
    spilled = 0
    if sel.caps is not None and cfg.pool_spill and (max_rec is None or len(sel.taken) < max_rec) \
            and sel.tokens < tok_budget:
        before, sel.caps = len(sel.taken), None
        quota_order(lists, w, take_knn(max_rec, tok_budget), used, seed=cfg.seed)
        spilled = len(sel.taken) - before

    chosen = list(sel.taken.values())
    write_jsonl(out_path, chosen)
    rows = list(sel.taken)
    part = {via: [pid for pid, r in sel.taken.items() if r["meta"]["retrieval"]["via"] == via] for via in ("knn", "dsir")}
    eligible = [i for i, k in enumerate(keep) if k]
    scores = [r["meta"]["retrieval"]["score"] for r in chosen]
    if pool_tags is not None and target_tags:
        stats.update(_tag_match(pool_tags, target_tags, rows, [i for i in eligible if pool_tags[i]], cfg.seed))
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
        by_pool=_by_pool(sel, groups, group_weights), spilled=spilled, skipped_pool_share=sel.skips["pool_share"],
        tokenizer=student or cfg.tokenizer or "chars/4",
        ifd=({**ifd.stats, "scorer": ifd.name, "engine": ifd.backend, "max": cfg.ifd_max,
              "dropped": sel.ifd_dropped} if ifd is not None else {"scorer": None, "max": cfg.ifd_max}),
        wall_s=round(time.time() - t_start, 3))
    if ifd is not None:
        ifd.close()
    log.info("retrieved %d records (%d kNN, %d DSIR; %d tokens) for %d queries in %.1f s; "
             "KL(target||selected) %s vs random %s", stats["selected"], len(part["knn"]), len(part["dsir"]), sel.tokens,
             len(queries), stats["wall_s"], stats["kl_target_selected"], stats["kl_target_random"])
    return stats


def _by_pool(sel: _Selection, groups: list[str] | None, weights: dict[str, float] | None) -> dict:
    """Per pool: its weight, records in the union, and the records and tokens selected."""
    names = Counter(groups if groups is not None else (r.get("source", "") for r in sel.pool))
    taken = Counter(groups[p] if groups is not None else sel.pool[p].get("source", "") for p in sel.taken)
    tokens = Counter()
    for p, rec in sel.taken.items():
        tokens[groups[p] if groups is not None else sel.pool[p].get("source", "")] += rec["meta"]["retrieval"]["tokens"]
    return {g: {"weight": (weights or {}).get(g), "pool_records": n, "selected": taken[g], "tokens": tokens[g]}
            for g, n in names.items()}


def _tag_match(pool_tags: list[list[str]], target: Counter, rows: list[int], tagged: list[int], seed: int) -> dict:
    """KL(target tag histogram || the selected tagged records') next to random tagged subsets of the
    same size (mean of 5 seeded draws), and how many of each were tagged."""
    vocab = sorted(set(target) | {t for i in tagged for t in pool_tags[i]})
    sel = [pool_tags[i] for i in rows if pool_tags[i]]
    rng = np.random.default_rng(seed)
    rand = [select.tag_kl(target, [pool_tags[i] for i in rng.choice(tagged, size=len(sel), replace=False)], vocab)
            for _ in range(5)] if sel and len(tagged) >= len(sel) else []
    kl_sel = select.tag_kl(target, sel, vocab) if sel else None
    return {"tagged_pool_records": len(tagged), "tagged_selected": len(sel),
            "kl_tags_selected": round(kl_sel, 4) if kl_sel is not None else None,
            "kl_tags_random": round(float(np.mean(rand)), 4) if rand else None}
