"""Distribution-matched selection: DSIR on hashed word n-grams, the KL that shows the match,
a DEITA-style diversity filter and the tag preferences of informative selection.

DSIR (Xie et al. 2023, "Data Selection for Language Models via Importance Resampling"):
texts are bags of hashed unigrams and bigrams (of ``synth.overlap.words``, the one
normaliser); a target model and a pool model are smoothed bucket frequencies; a record's
importance weight is p_target(x) / p_pool(x) under those models, i.e.
``log w = sum over its features of (log p_target(f) - log p_pool(f))``; sampling without
replacement proportional to w is a top-k of ``log w + Gumbel noise``.

The match is reported as KL(target || selected) on the same hashed features, next to the KL
of random subsets of the pool with the same number of records.
"""
from __future__ import annotations

import zlib
from collections import Counter

import numpy as np
from scipy import sparse

from synth.overlap import words

TARGET_PRIOR = 1.0  # the target model backs off to the pool model with this many times the target's own count
KL_ALPHA = 0.01     # pseudo-count per bucket when measuring KL: small, so a subset's own counts dominate
_BIGRAM_MUL = np.uint64(0x9E3779B97F4A7C15)


class HashedNgrams:
    """Texts -> sparse (n, buckets) counts of hashed word unigrams and bigrams."""

    def __init__(self, buckets: int = 10_000):
        if buckets < 2:
            raise ValueError(f"ngram_buckets must be >= 2, got {buckets}")
        self.buckets = buckets
        self._word: dict[str, int] = {}   # crc32 per distinct word: stable across processes

    def features(self, text: str) -> np.ndarray:
        """Bucket ids of the text's unigrams then bigrams."""
        ws = words(text)
        h = np.fromiter((self._word.get(w) or self._word.setdefault(w, zlib.crc32(w.encode())) for w in ws),
                        dtype=np.uint64, count=len(ws))
        bi = h[:-1] * _BIGRAM_MUL + h[1:] + np.uint64(1)   # wraps mod 2**64 by design
        return (np.concatenate([h, bi]) % np.uint64(self.buckets)).astype(np.int64)

    def matrix(self, texts: list[str]) -> sparse.csr_matrix:
        rows, cols = [], []
        for i, t in enumerate(texts):
            f = self.features(t)
            cols.append(f)
            rows.append(np.full(len(f), i, dtype=np.int64))
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        m = sparse.csr_matrix((np.ones(len(r), np.float64), (r, c)), shape=(len(texts), self.buckets))
        m.sum_duplicates()
        return m


def smoothed(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Add-``alpha`` bucket probabilities."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    return (counts + alpha) / (counts.sum() + alpha * len(counts))


def target_counts(feats: sparse.csr_matrix, weights: np.ndarray) -> np.ndarray:
    """The target's bucket counts: each text contributes its weight's share of the mass (its own
    features normalised), so a long few-shot prompt does not outweigh a short failed item; the
    total is rescaled to the texts' feature count so smoothing acts in feature units."""
    sums = np.asarray(feats.sum(axis=1)).ravel()
    w = np.asarray(weights, dtype=np.float64) / np.maximum(sums, 1.0)
    mix = np.asarray(feats.multiply(w[:, None]).sum(axis=0)).ravel()
    total = mix.sum()
    return mix * (sums.sum() / total) if total > 0 else mix


def log_importance(pool_feats: sparse.csr_matrix, target: np.ndarray) -> np.ndarray:
    """DSIR log importance weight of every pool row: sum_f count(f) * (log p_t(f) - log p_pool(f)).

    The pool model is the pool's bucket frequencies (every feature of a pool row has a count).
    The target is small (tens of dev items), so its model is Dirichlet-smoothed toward the pool
    model, p_t = (c_t + mu p_pool) / (N_t + mu) with mu = TARGET_PRIOR x N_t: a feature the target
    never shows costs log(1/2) per occurrence, one it shows often gains."""
    c_p = np.asarray(pool_feats.sum(axis=0)).ravel()
    p_p = c_p / max(c_p.sum(), 1.0)
    c_t = np.asarray(target, dtype=np.float64).ravel()
    mu = TARGET_PRIOR * max(c_t.sum(), 1.0)
    with np.errstate(divide="ignore"):
        ratio = np.where(c_p > 0, np.log((c_t + mu * p_p) / (c_t.sum() + mu)) - np.log(np.maximum(p_p, 1e-300)), 0.0)
    return np.asarray(pool_feats @ ratio).ravel()


def gumbel_order(log_w: np.ndarray, seed: int) -> np.ndarray:
    """Indices in the order of a sample without replacement proportional to exp(log_w)
    (Gumbel top-k; Kool et al. 2019)."""
    g = np.random.default_rng(seed).gumbel(size=len(log_w))
    return np.argsort(-(log_w + g), kind="stable")


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats; both are probability vectors with q > 0 wherever p > 0."""
    m = p > 0
    return float(np.sum(p[m] * (np.log(p[m]) - np.log(q[m]))))


def kl_to(target: np.ndarray, feats: sparse.csr_matrix, rows) -> float:
    """KL(target || the feature distribution of ``rows`` of ``feats``), both smoothed with KL_ALPHA."""
    sel = np.asarray(feats[list(rows)].sum(axis=0)).ravel() if len(rows) else np.zeros(feats.shape[1])
    return kl(smoothed(target, KL_ALPHA), smoothed(sel, KL_ALPHA))


def kl_random(target: np.ndarray, feats: sparse.csr_matrix, candidates: list[int], size: int, seed: int,
              draws: int = 5) -> float:
    """Mean KL(target || random subset of ``size`` of ``candidates``) over ``draws`` seeded draws."""
    rng = np.random.default_rng(seed)
    size = min(size, len(candidates))
    vals = [kl_to(target, feats, rng.choice(candidates, size=size, replace=False).tolist()) for _ in range(draws)]
    return float(np.mean(vals))


class DiversityFilter:
    """Score-first diversity (DEITA's repr filter): candidates arrive best first, and one whose
    cosine to an already selected record exceeds ``threshold`` is skipped (0 = off). Vectors are
    L2-normalised embeddings."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.chosen: list[np.ndarray] = []

    def admits(self, vec: np.ndarray) -> bool:
        if self.threshold <= 0 or not self.chosen:
            return True
        return float(np.max(np.stack(self.chosen) @ vec)) <= self.threshold

    def add(self, vec: np.ndarray) -> None:
        if self.threshold > 0:
            self.chosen.append(vec)


def tag_preference(pool: list[dict], multi_weight: float, tail_weight: float) -> np.ndarray:
    """Log-weight bonus of informative records, from fine tags where the pool has them (0 elsewhere):
    ``multi_weight * log(distinct fine tags)`` (multi-ability instructions) plus ``tail_weight *``
    the mean rarity of its tags, log(N/freq)/log(N) in [0, 1] (long-tail abilities)."""
    tags = [sorted({str(t) for t in (r.get("tags") or {}).get("fine", [])}) for r in pool]
    freq = Counter(t for ts in tags for t in ts)
    n_tagged = sum(1 for ts in tags if ts)
    out = np.zeros(len(pool))
    if not freq or (multi_weight == 0 and tail_weight == 0):
        return out
    norm = np.log(max(n_tagged, 2))
    for i, ts in enumerate(tags):
        if ts:
            rarity = np.mean([np.log(n_tagged / freq[t]) / norm for t in ts])
            out[i] = multi_weight * np.log(len(ts)) + tail_weight * rarity
    return out
