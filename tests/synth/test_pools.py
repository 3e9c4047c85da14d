"""Several pools at once: formats (detected or insisted on), the union deduplicated across pools and
rounds, earlier rounds' verified synthesized records joining, budgets split by pool weight."""
from __future__ import annotations

import json

import pytest

from evalsuite.records import RecordError, make_record, read_records, write_jsonl
from evalsuite.typedconfig import ConfigError, load
from loop.config import Config
from synth.pool import PoolConfig, load_pool
from synth.pools import SYNTH_POOL, PoolSource, load_union, pool_configs
from synth.retrieve import RetrieveConfig, retrieve


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_formats_are_detected_per_file_or_insisted_on(tmp_path):
    alp = _write(tmp_path / "alpaca.jsonl", [{"instruction": "Add 2 and 3.", "input": "", "output": "5"}])
    sgpt = _write(tmp_path / "sg.jsonl", [{"conversations": [{"from": "human", "value": "hi"},
                                                             {"from": "gpt", "value": "hello"}]}])
    msgs = _write(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "u"},
                                                       {"role": "assistant", "content": "a"}]}])
    for path, fmt in ((alp, "alpaca"), (sgpt, "sharegpt"), (msgs, "messages")):
        auto = load_pool(PoolConfig(source=str(path)), tmp_path / "c")
        assert auto == load_pool(PoolConfig(source=str(path), format=fmt), tmp_path / "c")
        assert [m["role"] for m in auto[0]["messages"]] == ["user", "assistant"]
    with pytest.raises(RecordError, match=r"sg\.jsonl:1: format 'alpaca' needs 'instruction'\+'output'.*'conversations'"):
        load_pool(PoolConfig(source=str(sgpt), format="alpaca"), tmp_path / "c")


def _pool_file(path, name, n, start=0):
    write_jsonl(path, [make_record([{"role": "user", "content": f"Question {i} about {name}?"},
                                    {"role": "assistant", "content": f"Answer {i}."}], f"x:{name}")
                       for i in range(start, start + n)])
    return path


def test_union_dedups_across_pools_and_rounds_and_joins_verified_synth(tmp_path):
    a = _pool_file(tmp_path / "a.jsonl", "apples", 4)
    b = tmp_path / "b.jsonl"
    # b repeats two of a's records (normalised text: case and punctuation aside) and adds three
    write_jsonl(b, read_records(a)[:2] + read_records(_pool_file(tmp_path / "b0.jsonl", "pears", 3)))
    rec = read_records(b)[0]
    rec["messages"][0]["content"] = rec["messages"][0]["content"].upper()
    write_jsonl(b, [rec] + read_records(b)[1:])
    syn = lambda i, ok: make_record([{"role": "user", "content": f"Synth {i}"},  # noqa: E731
                                     {"role": "assistant", "content": "s"}], "synth", id=f"synth-r0-{i}",
                                    meta={"verified": ok})
    rounds = [[syn(0, True), syn(1, False), syn(2, True)], [syn(0, True) | {"id": "synth-r1-0"}, syn(3, True)]]
    pools = [PoolSource(source=str(a), weight=3), PoolSource(source=str(b), weight=1, name="second")]
    u = load_union(PoolConfig(), pools, tmp_path / "c", rounds, synth_weight=0.5,
                   retrieved_before={"synth-r0-2"})
    assert u.group.count("a") == 4 and u.group.count("second") == 3 and u.group.count(SYNTH_POOL) == 2
    assert u.stats["second"]["dropped_duplicate"] == 2 and "conversion" in u.stats["second"]
    # round 1 synthesized round 0's record again (one copy); the unverified one stays out; one retrieved before
    assert u.stats[SYNTH_POOL] == {"weight": 0.5, "records": 2, "dropped_duplicate": 1, "dropped_retrieved_before": 1}
    assert u.weights == {"a": 3, "second": 1, SYNTH_POOL: 0.5}
    assert len({r["id"] for r in u.records}) == len(u.records) == 9
    # no synthesized records in round 0, or synth_weight 0: the configured pools alone
    assert SYNTH_POOL not in load_union(PoolConfig(), pools, tmp_path / "c", rounds, synth_weight=0).weights
    # the single pool keeps working, weight 1
    single = load_union(PoolConfig(source=str(a)), [], tmp_path / "c")
    assert single.weights == {"a": 1.0} and len(single.records) == 4
    with pytest.raises(ValueError, match="pool name 'a' is used twice"):
        pool_configs(PoolConfig(), [PoolSource(source=str(a)), PoolSource(source=str(a))])


def test_pools_config_list_and_its_errors(tmp_path):
    cfg = load(Config, None, ["retrieve.pools=[{source: a.jsonl, weight: 2}, {source: 'hf:org/ds', format: sharegpt}]"])
    assert [(p.source, p.weight, p.format) for p in cfg.retrieve.pools] == [("a.jsonl", 2.0, "auto"),
                                                                          ("hf:org/ds", 1.0, "sharegpt")]
    with pytest.raises(ConfigError, match=r"retrieve.pools\[0\].format: must be one of"):
        load(Config, None, ["retrieve.pools=[{source: a.jsonl, format: csv}]"])
    with pytest.raises(ConfigError, match=r"retrieve.pools\[0\].weight must be >= 0"):
        load(Config, None, ["retrieve.pools=[{source: a.jsonl, weight: -1}]"])
    with pytest.raises(ConfigError, match=r"retrieve.pools\[0\].source: every entry"):
        load(Config, None, ["retrieve.pools=[{weight: 1}]"])


def _topic_pool(topic: str, qs: list[str], name: str) -> list[dict]:
    return [make_record([{"role": "user", "content": q}, {"role": "assistant", "content": "x" * 40}],
                        f"pool:{name}", id=f"pool:{name}:{topic}{i}") for i, q in enumerate(qs)]


MATH = ["How do I add the fractions 1/2 and 1/3?", "Solve the equation 3x + 5 = 20 for x.",
        "What is 15 percent of 80?", "Compute the derivative of x^2 + 3x.", "Divide 144 by 12 step by step.",
        "What is the square root of 169?"]
MATH2 = ["Multiply 23 by 17 and show the work.", "Simplify the fraction 18/24.", "Solve 2x - 7 = 9.",
         "What is 12 percent of 250?", "Find the area of a circle with radius 3.", "Add 3/4 and 1/6."]


def test_budget_split_follows_pool_weights_and_spills(tmp_path):
    pool = _topic_pool("m", MATH, "one") + _topic_pool("n", MATH2, "two")
    groups = ["one"] * len(MATH) + ["two"] * len(MATH2)
    queries = ["solve 4x + 2 = 18", "what is 20 percent of 60", "add 1/4 and 1/5"]
    cfg = RetrieveConfig(k_per_query=12, min_similarity=0.0, max_records=8, token_budget=0, dsir_share=0,
                         diversity_threshold=0)
    out = tmp_path / "r.jsonl"
    stats = retrieve(pool, queries, cfg, tmp_path / "c", out, groups=groups, group_weights={"one": 3, "two": 1})
    assert stats["by_pool"]["one"] == {"weight": 3, "pool_records": 6, "selected": 6, "tokens": stats["by_pool"]["one"]["tokens"]}
    assert stats["by_pool"]["two"]["selected"] == 2 and stats["selected"] == 8 and stats["spilled"] == 0
    # a pool that cannot fill its share: the rest spills to the other (or stays empty without pool_spill)
    stats = retrieve(pool, queries, cfg, tmp_path / "c", out, groups=groups, group_weights={"one": 1, "two": 3})
    assert stats["by_pool"]["two"]["selected"] == 6 and stats["by_pool"]["one"]["selected"] == 2
    small = RetrieveConfig(**{**cfg.__dict__, "max_records": 10})
    stats = retrieve(pool, queries, small, tmp_path / "c", out, groups=groups, group_weights={"one": 1, "two": 1})
    assert stats["by_pool"]["one"]["selected"] == 5 and stats["by_pool"]["two"]["selected"] == 5
    stats = retrieve(pool, queries, small, tmp_path / "c", out, groups=groups, group_weights={"one": 1, "two": 4})
    assert (stats["by_pool"]["two"]["selected"], stats["by_pool"]["one"]["selected"], stats["spilled"]) == (6, 4, 2)
    nospill = RetrieveConfig(**{**small.__dict__, "pool_spill": False})
    stats = retrieve(pool, queries, nospill, tmp_path / "c", out, groups=groups, group_weights={"one": 1, "two": 4})
    assert (stats["by_pool"]["two"]["selected"], stats["by_pool"]["one"]["selected"]) == (6, 2)
    assert stats["skipped_pool_share"] > 0
    # a zero-weight pool gives nothing unless spilling
    stats = retrieve(pool, queries, nospill, tmp_path / "c", out, groups=groups, group_weights={"one": 1, "two": 0})
    assert stats["by_pool"]["two"]["selected"] == 0 and stats["by_pool"]["one"]["selected"] == 6
