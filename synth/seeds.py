"""Evol-Instruct seeds from the pool: pool instructions that match a deficiency.

Evol-Instruct grows new data from existing instructions. For each served deficiency the
synthesize stage takes seeds from the retrieval pool (the configured pools, as the retrieve
stage converts them; ``synth.pools``): first the records whose fine tags match the deficiency's
(a record's own tags, or the teacher's tags of the ``tag.pool_sample`` records, read through the
tag vocabulary; Jaccard of the fine-tag features), then, for the rest, the records whose
instruction is nearest by embedding cosine to the deficiency's failed dev items (their mean
vector, searched in the pool's persisted index, ``synth.vindex``, which the retrieve stage reuses).
Only single instructions of ``min_chars``..``max_chars`` characters are seeds; ``synth.generate``
evolves each before anything is trained on it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


# (query texts, k) -> [(pool position, cosine)] best first: the embedding route
Similar = Callable[[list[str], int], list[tuple[int, float]]]


def seed_text(rec: dict, min_chars: int, max_chars: int) -> str | None:
    """A record's first user turn when it can seed: one instruction of a usable length."""
    users = [m for m in rec.get("messages", []) if m.get("role") == "user"]
    if not users:
        return None
    text = users[0]["content"].strip()
    return text if min_chars <= len(text) <= max_chars else None


def select_seeds(defs: Sequence[dict], records: Sequence[dict], features: Sequence[Sequence[str]] | None,
                 def_features: Sequence[Sequence[str]] | None, queries: Sequence[list[str]], similar: Similar | None,
                 n: int, min_chars: int = 15, max_chars: int = 600) -> dict[str, list[dict]]:
    """Up to ``n`` seeds per deficiency, best first: ``{"id", "instruction", "match": "tags"|"embedding",
    "score"}``. ``features``/``def_features``: the records' and deficiencies' fine-tag features (None:
    no tags known); ``queries[i]``: the failed dev item texts of ``defs[i]`` (the embedding route)."""
    texts = [seed_text(r, min_chars, max_chars) for r in records]
    out: dict[str, list[dict]] = {}
    for i, d in enumerate(defs):
        chosen: list[dict] = []
        taken: set[int] = set()
        want = set(def_features[i]) if def_features else set()
        if want and features is not None:
            scored = []
            for pid, feat in enumerate(features):
                if texts[pid] is None or not feat:
                    continue
                f = set(feat)
                j = len(want & f) / len(want | f)
                if j > 0:
                    scored.append((-j, pid))
            for negj, pid in sorted(scored)[:n]:
                chosen.append({"id": records[pid]["id"], "instruction": texts[pid], "match": "tags",
                               "score": round(-negj, 4)})
                taken.add(pid)
        if len(chosen) < n and similar is not None and queries[i]:
            for pid, sim in similar(list(queries[i]), 4 * n + len(taken)):
                if len(chosen) >= n:
                    break
                if pid in taken or texts[pid] is None:
                    continue
                chosen.append({"id": records[pid]["id"], "instruction": texts[pid], "match": "embedding",
                               "score": round(float(sim), 4)})
                taken.add(pid)
        out[d["id"]] = chosen
    return out


def index_similar(index, embed: Callable[[list[str]], np.ndarray]) -> Similar:
    """The embedding route over a pool index (``synth.vindex.PoolIndex``): the mean of the query
    texts' unit vectors, renormalised, searched by inner product (cosine)."""
    def similar(texts: list[str], k: int) -> list[tuple[int, float]]:
        q = embed(texts).mean(axis=0)
        q = q / max(float(np.linalg.norm(q)), 1e-9)
        sims, pids = index.search(q[None, :].astype(np.float32), min(k, index.ntotal))
        return [(int(p), float(s)) for s, p in zip(sims[0], pids[0]) if p >= 0]
    return similar
