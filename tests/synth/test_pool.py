"""Pool loading: formats, ShareGPT conversion rules, truncated-file stop, cache, errors."""
from __future__ import annotations

import json
import logging

import pytest

from evalsuite.records import RecordError, validate_record
from synth import pool as poolmod
from synth.pool import PoolConfig, load_pool, pool_stats


def sharegpt_item(i: int, turns) -> dict:
    return {"id": f"conv{i}", "conversations": [{"from": f, "value": v} for f, v in turns]}


GOOD = [("human", "What is 2+2?"), ("gpt", "4.")]


def write_truncated_sharegpt(path, n_whole: int) -> None:
    """A JSON array of n_whole good items, then a half-written one (like the packaged file)."""
    items = [sharegpt_item(i, [("human", f"question {i} about topic {i}"), ("gpt", f"answer {i}")])
             for i in range(n_whole)]
    text = json.dumps(items, indent=2)[:-2]  # drop the closing "\n]"
    text += ',\n  {"id": "cut", "conversations": [{"from": "human", "value": "this record is cut off mid-str'
    path.write_text(text)


def test_truncated_sharegpt_json_stops_at_last_whole_record(tmp_path, caplog):
    src = tmp_path / "sg.json"
    write_truncated_sharegpt(src, 7)
    with caplog.at_level(logging.WARNING):
        recs = load_pool(PoolConfig(source=str(src)), tmp_path / "cache")
    assert [r["meta"]["orig_id"] for r in recs] == [f"conv{i}" for i in range(7)]
    assert "truncated" in caplog.text and "7 whole records" in caplog.text
    st = pool_stats(PoolConfig(source=str(src)), tmp_path / "cache")
    assert st["truncated_file"] == 1 and st["rows_read"] == 7 and st["kept"] == 7


def test_invalid_json_in_the_middle_is_an_error_not_a_truncation(tmp_path):
    src = tmp_path / "bad.json"
    src.write_text('[{"id": "a", "conversations": []}, {"id": ]')
    with pytest.raises(RecordError, match=r"bad\.json.*after item 1"):
        load_pool(PoolConfig(source=str(src)), tmp_path / "cache")


def test_sharegpt_conversion_rules_and_drop_counts(tmp_path):
    items = [
        sharegpt_item(0, GOOD),
        sharegpt_item(1, [("system", "Be terse."), ("human", "Hi"), ("gpt", "Hello"),
                          ("human", "More?"), ("gpt", "No.")]),
        sharegpt_item(2, [("gpt", "continuing from before"), ("human", "ok"), ("gpt", "fine")]),
        sharegpt_item(3, [("human", "a"), ("human", "b"), ("gpt", "c")]),
        sharegpt_item(4, [("human", "only a question")]),
        sharegpt_item(5, [("human", "Q"), ("gpt", "   "), ("human", "Q2"), ("gpt", "A2")]),  # empty turn dropped -> 2 users
        sharegpt_item(6, [("human", "Q"), ("gpt", "A"), ("human", "unanswered")]),  # trailing user trimmed
        sharegpt_item(7, [("human", "Q"), ("narrator", "??"), ("gpt", "A")]),
        sharegpt_item(8, GOOD),  # same content as conv0
        sharegpt_item(9, [("human", "x" * 50), ("gpt", "y" * 60)]),
    ]
    src = tmp_path / "sg.json"
    src.write_text(json.dumps(items))
    cfg = PoolConfig(source=str(src), max_chars=100)
    recs = load_pool(cfg, tmp_path / "cache")
    by = {r["meta"]["orig_id"]: r for r in recs}
    assert sorted(by) == ["conv0", "conv1", "conv6"]
    assert [m["role"] for m in by["conv1"]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert by["conv6"]["messages"][-1] == {"role": "assistant", "content": "A"}
    for r in recs:
        validate_record(r, where=r["id"])
        assert r["source"] == "pool:sg" and r["id"].startswith("pool:sg:")
    st = pool_stats(cfg, tmp_path / "cache")
    assert st["drop_starts_with_assistant"] == 1
    assert st["drop_not_alternating"] == 2
    assert st["drop_no_assistant"] == 1
    assert st["drop_unknown_role"] == 1
    assert st["drop_duplicate"] == 1
    assert st["drop_too_long"] == 1
    assert "truncated_file" not in st


def test_formats_jsonl_alpaca_prompt_response_messages_and_parquet(tmp_path):
    import datasets

    rows = [
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": "Name a colour", "input": "", "output": "red"},
    ]
    alp = tmp_path / "alpaca.jsonl"
    alp.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recs = load_pool(PoolConfig(source=str(alp)), tmp_path / "c")
    assert recs[0]["messages"] == [{"role": "user", "content": "Translate\n\nbonjour"},
                                   {"role": "assistant", "content": "hello"}]
    assert recs[1]["messages"][0]["content"] == "Name a colour"
    assert recs[0]["source"] == "pool:alpaca"

    pr = tmp_path / "pr.parquet"
    datasets.Dataset.from_list([{"prompt": "p1", "response": "r1"}, {"prompt": "p2", "response": "r2"}]).to_parquet(str(pr))
    recs = load_pool(PoolConfig(source=str(pr)), tmp_path / "c")
    assert [r["messages"][1]["content"] for r in recs] == ["r1", "r2"]

    # schema records (e.g. earlier rounds' synthesized data) keep ids-as-orig, tags and meta
    sch = tmp_path / "synth.jsonl"
    sch.write_text(json.dumps({"id": "s1", "source": "synth", "tags": {"fine": ["x"], "macro": ["Math"]},
                               "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
                               "meta": {"round": 1}}) + "\n")
    (rec,) = load_pool(PoolConfig(source=str(sch), name="prev"), tmp_path / "c")
    assert rec["id"] == "pool:prev:s1" and rec["tags"]["macro"] == ["Math"] and rec["meta"]["round"] == 1

    # JSON lines in a .json file
    jl = tmp_path / "lines.json"
    jl.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    assert load_pool(PoolConfig(source=str(jl)), tmp_path / "c")[0]["messages"][1]["content"] == "b"


def test_broken_jsonl_line_and_unknown_format_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"bad\.jsonl:2"):
        load_pool(PoolConfig(source=str(bad)), tmp_path / "c")
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" + json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(RecordError, match=r"odd\.jsonl:2: unknown row format.*'answer', 'question'"):
        load_pool(PoolConfig(source=str(odd)), tmp_path / "c")
    turns = tmp_path / "turns.jsonl"
    turns.write_text(json.dumps({"conversations": [{"from": "human"}]}) + "\n")
    with pytest.raises(RecordError, match=r"turns\.jsonl:1: conversations\[0\]"):
        load_pool(PoolConfig(source=str(turns)), tmp_path / "c")
    with pytest.raises(ValueError, match="expected 'sharegpt'"):
        load_pool(PoolConfig(source=str(tmp_path / "x.csv")), tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        load_pool(PoolConfig(source=str(tmp_path / "missing.jsonl")), tmp_path / "c")


def test_cache_is_reused_and_invalidated_by_config_and_source_change(tmp_path, monkeypatch):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n" for i in range(5)))
    cfg = PoolConfig(source=str(src))
    first = load_pool(cfg, tmp_path / "c")
    calls = []
    real = poolmod.convert_rows
    monkeypatch.setattr(poolmod, "convert_rows", lambda *a: calls.append(1) or real(*a))
    assert load_pool(cfg, tmp_path / "c") == first and calls == []   # from cache
    assert len(load_pool(PoolConfig(source=str(src), max_records=2), tmp_path / "c")) == 2
    assert len(calls) == 1                                            # new config -> reconverted
    src.write_text(src.read_text() + json.dumps({"prompt": "p5", "response": "r5"}) + "\n")
    assert len(load_pool(cfg, tmp_path / "c")) == 6 and len(calls) == 2  # changed file -> reconverted


def test_ids_are_stable_across_loads(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "response": "r"}) + "\n" for i in range(3)))
    a = [r["id"] for r in load_pool(PoolConfig(source=str(src)), tmp_path / "c1")]
    b = [r["id"] for r in load_pool(PoolConfig(source=str(src)), tmp_path / "c2")]
    assert a == b and len(set(a)) == 3


@pytest.mark.slow
def test_packaged_sharegpt_pool_streams_to_the_truncation(tmp_path):
    recs = load_pool(PoolConfig(max_records=0), tmp_path / "c")
    st = pool_stats(PoolConfig(max_records=0), tmp_path / "c")
    assert st["truncated_file"] == 1 and st["rows_read"] > 17000
    assert len(recs) > 8000 and len({r["id"] for r in recs}) == len(recs)


def test_hf_source_goes_through_datasets(tmp_path):
    # a local folder is a valid datasets "id"; offline, this is the same code path as a hub id
    folder = tmp_path / "myds"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": f"u{i}"},
                                         {"role": "assistant", "content": f"a{i}"}]}) + "\n" for i in range(4)))
    cfg = PoolConfig(source=f"hf:{folder}:train")
    recs = load_pool(cfg, tmp_path / "c")
    assert [r["messages"][0]["content"] for r in recs] == ["u0", "u1", "u2", "u3"]
    assert recs[0]["source"] == "pool:" + poolmod.pool_name(cfg)
    assert load_pool(cfg, tmp_path / "c") == recs


def test_turn_limits_ascii_filter_and_max_records(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi"}]},
            {"messages": [{"role": "user", "content": "Привет, как дела?"}, {"role": "assistant", "content": "Хорошо"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
            {"messages": [{"role": "user", "content": "e"}, {"role": "assistant", "content": "f"}]}]
    src = tmp_path / "m.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PoolConfig(source=str(src), min_ascii_ratio=0.9, max_turns=2)
    recs = load_pool(cfg, tmp_path / "c")
    assert [r["messages"][0]["content"] for r in recs] == ["Hello there", "e"]
    st = pool_stats(cfg, tmp_path / "c")
    assert st["drop_non_ascii"] == 1 and st["drop_too_many_turns"] == 1
    assert len(load_pool(PoolConfig(source=str(src), max_records=2), tmp_path / "c")) == 2
    assert len(load_pool(PoolConfig(source=str(src), min_turns=4), tmp_path / "c")) == 1
