"""Scores with bootstrap confidence intervals, paired differences (bootstrap CI, exact McNemar),
and the minimum detectable effect at a test size."""
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


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` items right before and wrong after, ``c`` the reverse
    (a binomial test of b against b + c at 1/2)."""
    from math import comb

    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


# z(0.975) + z(0.80): a two-sided 5% test with 80% power
_Z_SUM = 1.959964 + 0.841621


def min_detectable_effect(n: int, discordant: float | None = None) -> float:
    """Smallest paired change in accuracy a two-sided 5% test detects with 80% power on ``n`` items
    (normal approximation to McNemar): (z_.975 + z_.80) * sqrt(p_d / n), where p_d is the share of
    items whose correctness differs between the two models — the observed share when given, else a
    planning value of 0.3."""
    if n <= 0:
        return float("nan")
    p_d = 0.3 if discordant is None or discordant <= 0 else discordant
    return min(1.0, _Z_SUM * (p_d / n) ** 0.5)   # no accuracy change exceeds 1


def paired_diff(prev_samples: Iterable[dict], cur_samples: Iterable[dict], split: str | None = "test",
                n: int = 1000, seed: int = 0, alpha: float = 0.05, overall: bool = False) -> dict[str, dict]:
    """Per task: mean of (cur - prev) correctness over the items both rounds scored, with a
    paired bootstrap CI (items resampled together, so the item difficulty cancels), the exact
    McNemar p-value for binary items (``b`` = right before and wrong after, ``c`` = the reverse)
    and the minimum detectable effect at this size (``mde``). ``overall=True`` adds ``"_all"``:
    the same over every shared item of every task.

    Samples are ``samples.jsonl`` rows (``task``, ``doc_id``, ``split``, ``correct``). Items
    present in only one round are ignored; ``n`` in the result counts the shared ones.
    """
    prev, cur = _index(prev_samples, split), _index(cur_samples, split)
    by_task: dict[str, list[tuple[float, float]]] = {}
    for key in sorted(prev.keys() & cur.keys()):
        by_task.setdefault(key[0], []).append((prev[key], cur[key]))
    if overall and by_task:
        by_task["_all"] = [pair for task in sorted(by_task) for pair in by_task[task]]
    out = {}
    for task, pairs in sorted(by_task.items()):
        diffs = [c - p for p, c in pairs]
        mean, low, high = bootstrap_ci(diffs, n=n, seed=seed, alpha=alpha)
        b = sum(1 for p, c in pairs if p >= 1 and c <= 0)
        c_ = sum(1 for p, c in pairs if p <= 0 and c >= 1)
        binary = all(v in (0.0, 1.0) for pair in pairs for v in pair)
        out[task] = {"diff": mean, "ci_low": low, "ci_high": high, "n": len(diffs),
                     "b": b, "c": c_, "p_mcnemar": mcnemar_exact(b, c_) if binary else None,
                     "mde": min_detectable_effect(len(diffs), (b + c_) / len(diffs) if diffs else None)}
    return out
