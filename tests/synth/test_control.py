"""The control arm passes the gates a retrieved record passes, so equal tokens mean equal training."""
from __future__ import annotations

from evalsuite.records import make_record, read_records
from synth.control import random_control
from synth.heuristics import default_rules
from synth.mix import MixConfig


def _rec(user: str, answer: str, turns: int = 1) -> dict:
    msgs = []
    for t in range(turns):
        msgs += [{"role": "user", "content": f"{user} part {t}"}, {"role": "assistant", "content": answer}]
    return make_record(msgs, source="pool:test")


def words(n: int, w: str = "word") -> str:
    return " ".join([w] * n)


def count(rec: dict) -> int:   # a whitespace counter stands in for the student's tokenizer
    return sum(len(m["content"].split()) for m in rec["messages"])


LEAK = "a farmer has twelve cows and buys seven more cows at the market on sunday morning"


def test_control_skips_what_retrieval_would_skip_and_matches_trainable_tokens(tmp_path):
    pool = ([_rec(f"plain question {i}", words(20)) for i in range(40)]
            + [_rec(f"too long {i}", words(300)) for i in range(40)]                       # over max_seq_len
            + [_rec(f"fetch it {i}", "requests.get('http://x')  " + words(10)) for i in range(40)]   # a content rule
            + [_rec(f"{LEAK} {i}", words(10)) for i in range(40)]                             # contaminated
            + [_rec(f"long chat {i}", words(60), turns=3) for i in range(10)])               # a prefix fits
    targeted = [_rec("t1", words(40)), _rec("t2", words(50)), _rec("too long target", words(500))]
    out = tmp_path / "control.jsonl"
    s = random_control(pool, targeted, [LEAK], MixConfig(), count, seed=3, out_path=out, max_seq_len=150,
                       drop_rules=default_rules())
    chosen = read_records(out)
    assert s["target_tokens"] == count(targeted[0]) + count(targeted[1])     # the 500-word one is never trained
    assert s["targeted_records_over_max_seq_len"] == 1
    assert s["tokens"] >= s["target_tokens"] and s["tokens"] == sum(count(r) for r in chosen)
    assert all(count(r) <= 150 for r in chosen)
    texts = [m["content"] for r in chosen for m in r["messages"]]
    assert not any("requests.get" in t or "farmer" in t or "too long" in t for t in texts)
    assert s["dropped_too_long"] + s["dropped_contaminated"] + sum(s["dropped_by_rule"].values()) > 0


def test_control_keeps_a_fitting_prefix_of_a_long_chat(tmp_path):
    pool = [_rec(f"long chat {i}", words(60), turns=3) for i in range(5)]     # 3 × ~63 words
    targeted = [_rec("t", words(120)), _rec("u", words(120))]
    s = random_control(pool, targeted, [], MixConfig(), count, seed=0, out_path=tmp_path / "c.jsonl",
                       max_seq_len=140)
    chosen = read_records(tmp_path / "c.jsonl")
    assert s["kept_prefix"] == len(chosen) > 0
    assert all(len(r["messages"]) == 4 and count(r) <= 140 for r in chosen)
    assert s["tokens"] >= s["target_tokens"] > 240
