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


def test_untargeted_control_takes_its_synthesized_records_first_through_the_same_gates(tmp_path):
    """``control: untargeted``: the records synthesized without the diagnosis come first, in order, each
    through the gates a pool record passes; random pool records fill the rest of the token count."""
    pool = [_rec(f"plain question {i}", words(20)) for i in range(40)]
    synth = [_rec("synth one", words(30)), _rec(f"{LEAK} synth", words(10)), _rec("synth long", words(400)),
             _rec("synth two", words(30))]
    targeted = [_rec("t1", words(100)), _rec("t2", words(100))]
    out = tmp_path / "control.jsonl"
    s = random_control(pool, targeted, [LEAK], MixConfig(), count, seed=3, out_path=out, max_seq_len=150,
                       drop_rules=default_rules(), first=synth)
    chosen = read_records(out)
    assert [r["id"] for r in chosen[:2]] == [synth[0]["id"], synth[3]["id"]]   # the contaminated and long ones gated
    assert s["first_offered"] == 4 and s["first_taken"] == 2
    assert s["dropped_contaminated"] == 1 and s["dropped_too_long"] == 1
    assert all(r["id"].startswith(tuple(p["id"] for p in pool)) for r in chosen[2:])
    assert s["tokens"] >= s["target_tokens"] and s["tokens"] - s["target_tokens"] < count(pool[0])
    assert s["pool_records_drawn"] == len(chosen) - 2                          # synthesized ones are not pool draws
    # a random control draws the same pool order: the untargeted one is that order after its own records
    plain = random_control(pool, targeted, [LEAK], MixConfig(), count, seed=3, out_path=tmp_path / "r.jsonl",
                           max_seq_len=150, drop_rules=default_rules())
    assert [r["id"] for r in chosen[2:]] == [r["id"] for r in read_records(tmp_path / "r.jsonl")][:len(chosen) - 2]
    assert plain["first_taken"] == 0


def test_undiagnosed_deficiencies_know_only_the_tasks():
    from synth.control import UNDIAGNOSED_ABILITY, undiagnosed

    kinds = {"math_offline": "math", "ifeval_offline": "instruction", "humaneval_offline": "code", "mine": "other"}
    defs = undiagnosed(list(kinds), kinds.get)
    assert [d["tasks"] for d in defs] == [[t] for t in kinds]
    assert [d["ability"] for d in defs] == [UNDIAGNOSED_ABILITY[k] for k in kinds.values()]
    assert len({d["id"] for d in defs}) == 4 and {d["impact"] for d in defs} == {0.25}
    for d in defs:   # nothing the diagnosis would have found
        assert not (d["error"] or d["shortcut"] or d["examples"] or d["tags"] or d.get("evidence"))
