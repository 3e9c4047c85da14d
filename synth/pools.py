"""Several pools as one: the configured pools with their weights, plus earlier rounds' verified
synthesized records, deduplicated across all of them (and across rounds).

``retrieve.pools`` is a list of ``{source, weight, format, name, max_records}`` (each source as in
``synth.pool``: ``sharegpt``, ``hf:<id>[:split]``, a .jsonl/.json/.parquet file; the row format
detected per row unless ``format`` names one); the conversion filters come from ``retrieve.pool``,
which alone is the pool (weight 1) when the list is empty. From round 1 on, the verified records
that earlier rounds synthesized join as the pool ``synth`` with weight ``retrieve.synth_weight``.

The union keeps the first copy of every record by its normalised text (``synth.dedup.exact_key``):
configured pools in order, then the synthesized records oldest round first, so a record two rounds
synthesized, or one a pool already holds, is one pool record. With ``retrieve.skip_retrieved``,
records an earlier round of the run retrieved (by id) leave the union: a later round does not
train on them again through retrieval. Selection splits its record and token budgets across the
pools by weight (``synth.retrieve``); the summary reports the counts per pool.
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Literal

from synth.dedup import exact_key
from synth.pool import PoolConfig, load_pool, pool_name, pool_stats, source_fingerprint

SYNTH_POOL = "synth"


@dataclass
class PoolSource:
    source: str = ""              # "sharegpt" | "hf:<id>[:split]" | path to .jsonl/.json/.parquet
    weight: float = 1.0           # share of the budgets: weight / sum of the pools' weights
    format: Literal["auto", "sharegpt", "alpaca", "messages"] = "auto"  # auto: detected per row
    name: str = ""                # pool name (records' source "pool:<name>"); default: from source
    max_records: int = 0          # at most this many records of this pool (0 = retrieve.pool.max_records)

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("source: every entry of retrieve.pools needs a source")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight} for {self.source!r}")


def pool_configs(pool: PoolConfig, pools: list[PoolSource]) -> list[tuple[str, PoolConfig, float]]:
    """(config key, PoolConfig, weight) per configured pool: ``pools`` with ``pool``'s filters, or
    ``pool`` alone with weight 1."""
    if not pools:
        return [("retrieve.pool.source", pool, 1.0)]
    out = []
    for i, p in enumerate(pools):
        cfg = dataclasses.replace(pool, source=p.source, format=p.format, name=p.name,
                                  max_records=p.max_records or pool.max_records)
        out.append((f"retrieve.pools[{i}].source", cfg, p.weight))
    names = Counter(pool_name(c) for _, c, _ in out)
    dup = [n for n, k in names.items() if k > 1 or n == SYNTH_POOL]
    if dup:
        raise ValueError(f"retrieve.pools: pool name {dup[0]!r} is used twice or reserved; give the entries "
                         "distinct 'name's")
    return out


def fingerprint(pool: PoolConfig, pools: list[PoolSource]) -> list:
    """What identifies the configured pools' content, for the retrieve stage's fingerprint."""
    if not pools:
        return source_fingerprint(pool)
    return [[source_fingerprint(c), w] for _, c, w in pool_configs(pool, pools)]


@dataclass
class PoolUnion:
    records: list[dict]
    group: list[str]                       # pool name per record
    weights: dict[str, float]              # pool name -> weight (pools holding records)
    stats: dict = field(default_factory=dict)
    dedup: dict = field(default_factory=dict)  # where the dedup keys were computed (executor, items per node)


DEDUP_KEY_VERSION = 1   # bump when exact_key or the text normaliser changes: cached keys go stale


def _exact_keys():
    """A batch function for ``synth.executor.map_batches``: records -> their dedup keys."""
    return lambda recs: [exact_key(r) for r in recs]


def joining_synth(synthesized: Iterable[list[dict]]) -> list[dict]:
    """The synthesized records (one list per earlier round) that join the pool as ``synth``: the verified ones."""
    return [r for rnd in synthesized for r in rnd if (r.get("meta") or {}).get("verified") is True]


def load_union(pool: PoolConfig, pools: list[PoolSource], cache_dir: str | os.PathLike,
               synthesized: Iterable[list[dict]] = (), synth_weight: float = 0.0,
               retrieved_before: Iterable[str] = (), executor=None) -> PoolUnion:
    """The configured pools, then the verified ``synthesized`` records (one list per earlier round,
    oldest first) when ``synth_weight`` > 0, deduplicated by normalised text; records whose id is in
    ``retrieved_before`` are left out. ``executor`` (``synth.executor``) computes the keys."""
    from synth.executor import map_batches

    skip = set(retrieved_before)
    parts: list[tuple[str, float, list[dict], dict]] = []
    for _, cfg, w in pool_configs(pool, pools):
        parts.append((pool_name(cfg), w, load_pool(cfg, cache_dir), {"conversion": pool_stats(cfg, cache_dir)}))
    synthesized = list(synthesized)
    if synth_weight > 0 and synthesized:     # from round 1 on
        parts.append((SYNTH_POOL, synth_weight, joining_synth(synthesized), {}))
    candidates = [r for _, _, recs, _ in parts for r in recs if r["id"] not in skip]
    # locally a datasets map cached under cache_dir/maps by the candidates' content: a later round
    # over the same union reads the keys back
    keyed = map_batches(candidates, _exact_keys, executor, cache_dir=cache_dir,
                        key=f"synth.pools.exact_key/v{DEDUP_KEY_VERSION}", desc="dedup keys")
    key_of = {id(r): k for r, k in zip(candidates, keyed.results)}
    seen: set[str] = set()
    records, group, stats = [], [], {}
    for name, w, recs, extra in parts:
        c = Counter()
        for r in recs:
            if r["id"] in skip:
                c["retrieved_before"] += 1
                continue
            key = key_of[id(r)]
            if key in seen:
                c["duplicate"] += 1      # in an earlier pool or an earlier round already
                continue
            seen.add(key)
            records.append(r)
            group.append(name)
            c["records"] += 1
        stats[name] = {"weight": w, "records": c["records"], "dropped_duplicate": c["duplicate"],
                       "dropped_retrieved_before": c["retrieved_before"], **extra}
    weights = {n: s["weight"] for n, s in stats.items() if s["records"] and s["weight"] > 0}
    dedup = {"executor": executor.kind if executor is not None else "local", "nodes": dict(keyed.nodes),
             "seconds": keyed.seconds, "cached": keyed.cached}
    return PoolUnion(records, group, weights, stats, dedup)
