"""Which records a round trains on: read record files, apply the round policy and replay.

Record files are read and validated by the project's one record module
(``evalsuite.records``: light, no lm-eval or torch); a bad line raises ``RecordError`` naming
file:line. Records that are valid but cannot be trained on (too long for ``max_seq_len``) are
skipped later, in ``format.py``, with a count.
"""
from __future__ import annotations

import random
from pathlib import Path

from evalsuite.records import read_records


def _dedup(records: list[dict], seen: set[str]) -> tuple[list[dict], int]:
    """Keep the first record of each id (earlier rounds' train sets repeat replayed records)."""
    out, dups = [], 0
    for r in records:
        if r["id"] in seen:
            dups += 1
            continue
        seen.add(r["id"])
        out.append(r)
    return out, dups


def select_records(data: list[Path], history: list[Path], policy: str, replay: float,
                   seed: int) -> tuple[list[dict], dict]:
    """This round's training records (unordered) and counts of where they came from.

    ``continue``: this round's records plus replay: a random sample of earlier rounds'
    records making up ``replay`` of the result (share of the final set, capped by what
    history holds). ``restart``: this round's records plus all of history. (``policy`` and
    ``replay`` are checked when the TrainConfig is made.)
    """
    seen: set[str] = set()
    new, dup_new = _dedup([r for p in data for r in read_records(p)], seen)
    old, dup_old = _dedup([r for p in history for r in read_records(p)], seen)
    if policy == "restart":
        chosen = old
    else:
        want = round(replay / (1.0 - replay) * len(new))
        chosen = random.Random(seed).sample(old, min(want, len(old)))
    counts = {"n_new": len(new), "n_history_available": len(old), "n_from_history": len(chosen),
              "duplicate_ids_dropped": dup_new + dup_old}
    return new + chosen, counts
