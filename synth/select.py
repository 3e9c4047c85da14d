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

import json
import logging
import os
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import sparse

from synth.overlap import words

log = logging.getLogger(__name__)

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


FEATURE_VERSION = 1   # bump when HashedNgrams.features or the normaliser changes: cached rows go stale


def cached_matrix(grams: HashedNgrams, texts: list[str], cache_dir) -> tuple[sparse.csr_matrix, dict]:
    """``grams.matrix(texts)`` with the rows of texts seen before read from a store under
    ``cache_dir/dsir/`` (keyed by text content, like the embeddings: a pool's features are
    computed once, across rounds, pools and runs); only new texts are hashed, then stored."""
    if cache_dir is None:
        return grams.matrix(texts), {"cached": 0, "computed": len(texts)}
    from evalsuite.records import content_hash

    path = Path(cache_dir) / "dsir" / f"ngrams-b{grams.buckets}-v{FEATURE_VERSION}.npz"
    keys = [content_hash(t) for t in texts]
    index: dict[str, int] = {}
    store = None
    if path.exists():
        try:   # one file holds the matrix and its row keys: written by one atomic rename
            with np.load(path, allow_pickle=False) as z:
                store = sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
                index = {str(k): i for i, k in enumerate(z["keys"])}
            if store.shape != (len(index), grams.buckets):
                store, index = None, {}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:   # torn or foreign: recompute
            log.warning("dsir feature cache %s unreadable (%s): recomputing", path, e)
            store, index = None, {}
    new = list(dict.fromkeys(k for k in keys if k not in index))
    if new:
        text_of = dict(zip(keys, texts))
        add = grams.matrix([text_of[k] for k in new])
        store = add if store is None else sparse.vstack([store, add], format="csr")
        index.update({k: len(index) + j for j, k in enumerate(new)})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, data=store.data, indices=store.indices, indptr=store.indptr,
                 shape=np.asarray(store.shape), keys=np.asarray(list(index)))
        os.replace(tmp, path)
    rows = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    out = store[rows] if len(rows) else sparse.csr_matrix((0, grams.buckets))
    return out, {"cached": len(set(keys)) - len(new), "computed": len(new)}


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


def record_tag_features(pool: list[dict]) -> list[list[str]]:
    """The records' own tags as features (``macro:<category>``, ``fine:<tag>``), as
    ``synth.tagging.canonical_tags`` writes them without a vocabulary."""
    out = []
    for r in pool:
        t = r.get("tags") or {}
        out.append([f"macro:{m}" for m in t.get("macro", []) if m] + [f"fine:{f}" for f in t.get("fine", []) if f])
    return out


def fine_macros(tag_lists: list[list[str]], other: str = "Other") -> dict[str, str]:
    """Each fine tag's macro category: the majority macro among the tagged texts carrying it
    (ties by name; "Other" casts no vote, so a tag only "Other" texts carry has none)."""
    votes: dict[str, Counter] = {}
    for tags in tag_lists:
        macros = [t[6:] for t in tags if t.startswith("macro:") and t[6:] != other]
        for t in tags:
            if t.startswith("fine:"):
                votes.setdefault(t, Counter()).update(macros)
    return {f: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for f, c in votes.items() if c}


def informative_bonus(tag_lists: list[list[str]], multi_weight: float, tail_weight: float) -> np.ndarray:
    """Log-weight bonus of informative records from their tag features (0 for an untagged one):
    ``multi_weight * log(macro categories its fine tags span)`` — an instruction needing abilities
    of several categories (>= 2; one category gives 0), each fine tag mapped to its majority macro
    (``fine_macros``) — plus ``tail_weight *`` the mean rarity of its fine tags, log(N/freq)/log(N)
    in [0, 1] over the N tagged records (long-tail abilities)."""
    fine = [sorted({t for t in ts if t.startswith("fine:")}) for ts in tag_lists]
    freq = Counter(t for ts in fine for t in ts)
    n_tagged = sum(1 for ts in fine if ts)
    out = np.zeros(len(tag_lists))
    if not freq or (multi_weight == 0 and tail_weight == 0):
        return out
    macro_of = fine_macros(tag_lists)
    norm = np.log(max(n_tagged, 2))
    for i, ts in enumerate(fine):
        if ts:
            span = len({macro_of[t] for t in ts if t in macro_of})
            rarity = np.mean([np.log(n_tagged / freq[t]) / norm for t in ts])
            out[i] = multi_weight * np.log(max(span, 1)) + tail_weight * rarity
    return out


# ------------------------------------------------------------------ tag histograms
def tag_histogram(tag_lists: list[list[str]], weights=None) -> Counter:
    """Weighted tag counts; each text spreads its weight over its tags (a text with many tags does
    not count more than one with few)."""
    hist: Counter = Counter()
    for i, tags in enumerate(tag_lists):
        if tags:
            w = 1.0 if weights is None else float(weights[i])
            for t in tags:
                hist[t] += w / len(tags)
    return hist


def tag_importance(pool_tags: list[list[str]], target: Counter) -> np.ndarray:
    """DSIR on tags: per pool record, the mean over its tags of log p_target(t) / p_pool(t) (0 for an
    untagged record). The pool model is the tagged pool records' histogram; the target is
    Dirichlet-smoothed toward it (as ``log_importance``), so a tag the target never shows costs
    log(1/2) and one the target favours gains."""
    pool = tag_histogram(pool_tags)
    n_p = sum(pool.values())
    out = np.zeros(len(pool_tags))
    if not n_p or not target:
        return out
    n_t = sum(target.values())
    mu = TARGET_PRIOR * n_t
    for i, tags in enumerate(pool_tags):
        if tags:
            vals = [np.log((target.get(t, 0.0) + mu * pool[t] / n_p) / (n_t + mu)) - np.log(pool[t] / n_p) for t in tags]
            out[i] = float(np.mean(vals))
    return out


def tag_kl(target: Counter, tag_lists: list[list[str]], vocab: list[str]) -> float | None:
    """KL(target tag histogram || the histogram of ``tag_lists``) over ``vocab``, smoothed with KL_ALPHA."""
    sel = tag_histogram(tag_lists)
    if not sum(sel.values()) or not vocab:
        return None
    t = np.array([target.get(v, 0.0) for v in vocab])
    s = np.array([sel.get(v, 0.0) for v in vocab])
    return kl(smoothed(t, KL_ALPHA), smoothed(s, KL_ALPHA))
