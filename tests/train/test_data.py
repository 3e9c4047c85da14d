"""Reading record files and choosing a round's records (policy, replay)."""
from __future__ import annotations

import json

import pytest

from train.data import DataError, read_records, select_records


def test_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = {"id": "a", "messages": [{"role": "user", "content": "hi"}]}
    p.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_records(p)
    p.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "messages": [{"role": "bot", "content": "x"}]}))
    with pytest.raises(DataError, match=r"bad.jsonl:2: record 'b': messages\[0\]"):
        read_records(p)
    p.write_text(json.dumps({"messages": []}))
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*'id'"):
        read_records(p)


def test_continue_mixes_the_configured_replay_share(records_file):
    new, old = records_file("new", 30), records_file("old", 100)
    recs, counts = select_records([new], [old], "continue", 0.25, seed=0)
    ids = [r["id"] for r in recs]
    assert counts["n_new"] == 30 and counts["n_from_history"] == 10  # 10 / 40 = 0.25 of the set
    assert sum(i.startswith("old-") for i in ids) == 10 and len(set(ids)) == 40
    again, _ = select_records([new], [old], "continue", 0.25, seed=0)
    assert [r["id"] for r in again] == ids
    other, _ = select_records([new], [old], "continue", 0.25, seed=1)
    assert [r["id"] for r in other] != ids
    none, c0 = select_records([new], [old], "continue", 0.0, seed=0)
    assert c0["n_from_history"] == 0 and len(none) == 30


def test_restart_takes_all_history_once(records_file, tmp_path):
    new, old = records_file("new", 5), records_file("old", 8)
    # a later round's train set repeats replayed records: duplicates by id are dropped and counted
    recs, counts = select_records([new], [old, old], "restart", 0.25, seed=0)
    assert len(recs) == 13 and counts["n_from_history"] == 8 and counts["duplicate_ids_dropped"] == 8


def test_bad_policy_and_replay_are_errors(records_file):
    new = records_file("new", 2)
    with pytest.raises(ValueError, match="policy"):
        select_records([new], [], "resume", 0.1, 0)
    with pytest.raises(ValueError, match="replay"):
        select_records([new], [], "continue", 1.0, 0)
