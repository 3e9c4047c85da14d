import math

import pytest

from evalsuite.split import assign_split
from evalsuite.stats import bootstrap_ci, paired_diff


def test_split_is_deterministic_and_follows_the_ratio():
    ids = [f"doc-{i}" for i in range(2000)]
    a = [assign_split("t", i, 0.3) for i in ids]
    assert a == [assign_split("t", i, 0.3) for i in ids]
    assert 0.25 < a.count("dev") / len(a) < 0.35
    # another task name reshuffles the assignment
    assert a != [assign_split("other", i, 0.3) for i in ids]
    assert {assign_split("t", i, 0.0) for i in ids[:50]} == {"test"}
    assert {assign_split("t", i, 1.0) for i in ids[:50]} == {"dev"}
    with pytest.raises(ValueError):
        assign_split("t", 1, 1.5)


def test_bootstrap_ci_contains_the_mean_and_shrinks_with_n():
    small = [1, 0] * 10
    big = [1, 0] * 500
    m, lo, hi = bootstrap_ci(small, n=500, seed=1)
    assert m == 0.5 and lo < 0.5 < hi
    _, lo2, hi2 = bootstrap_ci(big, n=500, seed=1)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci([1, 1, 1], n=100) == (1.0, 1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci([], n=10))
    assert bootstrap_ci(small, n=300, seed=3) == bootstrap_ci(small, n=300, seed=3)


def test_paired_diff_uses_shared_items_of_the_split():
    prev = [{"task": "a", "doc_id": str(i), "split": "test", "correct": i < 5} for i in range(20)]
    cur = [{"task": "a", "doc_id": str(i), "split": "test", "correct": i < 15} for i in range(20)]
    cur.append({"task": "a", "doc_id": "new", "split": "test", "correct": True})  # unpaired: ignored
    cur.append({"task": "a", "doc_id": "0", "split": "dev", "correct": False})    # other split: ignored
    d = paired_diff(prev, cur, split="test", n=500)
    assert d["a"]["n"] == 20 and d["a"]["diff"] == pytest.approx(0.5)
    assert 0 < d["a"]["ci_low"] <= 0.5 <= d["a"]["ci_high"]
    same = paired_diff(prev, prev)
    assert same["a"]["diff"] == 0 and same["a"]["ci_low"] == same["a"]["ci_high"] == 0


def test_mcnemar_exact_and_the_minimum_detectable_effect():
    from evalsuite.stats import mcnemar_exact, min_detectable_effect

    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(1, 9) == pytest.approx(0.021484375)        # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    # 10 points on a paired binary task at 30% discordance needs ~235 items
    assert min_detectable_effect(235, 0.3) == pytest.approx(0.10, abs=0.002)
    assert min_detectable_effect(60) > min_detectable_effect(240)


def test_paired_diff_reports_mcnemar_counts_and_an_overall_row():
    from evalsuite.stats import paired_diff

    prev = [{"task": t, "doc_id": i, "split": "test", "correct": i % 2 == 0} for t in ("a", "b") for i in range(10)]
    cur = [{**s, "correct": True} for s in prev]
    d = paired_diff(prev, cur, overall=True)
    assert d["a"]["b"] == 0 and d["a"]["c"] == 5 and d["a"]["diff"] == pytest.approx(0.5)
    assert d["a"]["p_mcnemar"] == pytest.approx(0.0625)
    assert d["_all"]["n"] == 20 and d["_all"]["c"] == 10 and d["_all"]["p_mcnemar"] < 0.01
    assert "_all" not in paired_diff(prev, cur)
