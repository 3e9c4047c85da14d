"""Deterministic dev/test split: a hash of (task, doc id), stable across runs and machines."""
from __future__ import annotations

import hashlib

SPLITS = ("dev", "test")


def split_fraction(task: str, doc_id) -> float:
    """A uniform number in [0, 1) fixed by the task name and the doc id."""
    digest = hashlib.sha256(f"{task}\x00{doc_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def assign_split(task: str, doc_id, dev_ratio: float) -> str:
    """'dev' (drives diagnosis) for a ``dev_ratio`` share of items, else 'test' (the reported score)."""
    if not 0.0 <= dev_ratio <= 1.0:
        raise ValueError(f"dev_ratio must be in [0, 1], got {dev_ratio}")
    return "dev" if split_fraction(task, doc_id) < dev_ratio else "test"
