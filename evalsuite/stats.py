"""Scores with bootstrap confidence intervals, and paired round-over-round differences."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], n: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap CI of the mean of ``values``.

    Empty input gives NaNs (a split with no items has no score, not a zero score).
    """
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size == 1 or n <= 0:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(low), float(high)


def score_summary(values: Sequence[float], n: int = 1000, seed: int = 0) -> dict:
    mean, low, high = bootstrap_ci(values, n=n, seed=seed)
    return {"score": mean, "ci_low": low, "ci_high": high, "n": len(values)}


def _index(samples: Iterable[dict], split: str | None) -> dict[tuple[str, str], float]:
    out = {}
    for s in samples:
        if split is None or s.get("split") == split:
            out[(s["task"], str(s["doc_id"]))] = float(s["correct"])
    return out


def paired_diff(prev_samples: Iterable[dict], cur_samples: Iterable[dict], split: str | None = "test",
                n: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, dict]:
    """Per task: mean of (cur - prev) correctness over the items both rounds scored, with a
    paired bootstrap CI (items resampled together, so the item difficulty cancels).

    Samples are ``samples.jsonl`` rows (``task``, ``doc_id``, ``split``, ``correct``). Items
    present in only one round are ignored; ``n`` in the result counts the shared ones.
    """
    prev, cur = _index(prev_samples, split), _index(cur_samples, split)
    by_task: dict[str, list[float]] = {}
    for key in sorted(prev.keys() & cur.keys()):
        by_task.setdefault(key[0], []).append(cur[key] - prev[key])
    out = {}
    for task, diffs in sorted(by_task.items()):
        mean, low, high = bootstrap_ci(diffs, n=n, seed=seed, alpha=alpha)
        out[task] = {"diff": mean, "ci_low": low, "ci_high": high, "n": len(diffs)}
    return out
