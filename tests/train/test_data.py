"""Reading record files and choosing a round's records (policy, replay)."""
from __future__ import annotations

import json

import pytest

from evalsuite.records import RecordError
from train.data import read_records, select_records


def test_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = {"id": "a", "source": "t", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    p.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: invalid JSON"):
        read_records(p)
    p.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "messages": [{"role": "bot", "content": "x"}]}))
    with pytest.raises(RecordError, match=r"bad.jsonl:2: record 'b': messages\[0\]"):
        read_records(p)
    p.write_text(json.dumps({"messages": []}))
    with pytest.raises(RecordError, match=r"bad.jsonl:1: .*'id'"):
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


def test_a_record_without_an_answer_or_source_is_refused_with_its_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps({"id": "q", "source": "t", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(RecordError, match=r"r.jsonl:1: record 'q': no assistant turn"):
        read_records(p)
    p.write_text(json.dumps({"id": "q", "messages": [{"role": "assistant", "content": "hi"}]}) + "\n")
    with pytest.raises(RecordError, match=r"r.jsonl:1: record 'q': needs a non-empty string 'source'"):
        read_records(p)
    with pytest.raises(RecordError, match="no such file"):
        read_records(tmp_path / "missing.jsonl")


def test_bad_replay_is_refused_when_the_config_is_made():
    from train.lora import TrainConfig

    with pytest.raises(ValueError, match="replay"):
        TrainConfig(replay=1.0)


def test_unreadable_lines_are_record_errors_naming_the_line(tmp_path):
    p = tmp_path / "r.jsonl"
    good = json.dumps({"id": "a", "source": "t", "messages": [{"role": "assistant", "content": "x"}]})
    for bad, what in ((b"\xff\xfe{}", "not UTF-8"), (b"[" * 100000, "unreadable JSON|invalid JSON"),
                      (('{"id": ' + "1" * 5000 + "}").encode(), "unreadable JSON")):
        p.write_bytes(good.encode() + b"\n" + bad + b"\n")
        with pytest.raises(RecordError, match=rf"r.jsonl:2: ({what})"):
            read_records(p)
