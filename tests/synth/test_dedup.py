"""Dedup (exact, near, semantic) and mix (decontam + dedup of synth ∪ retrieved -> training file)."""
from __future__ import annotations

import pytest

from evalsuite.records import RecordError, make_record, read_records
from synth.dedup import dedup
from synth.mix import MixConfig, mix
from synth.overlap import shingles, words

LONG_Q = ("Write a short story about a lighthouse keeper who discovers a message in a bottle "
          "that was sent from the future by her own granddaughter")


def rec(user: str, answer: str = "An answer.", rid: str | None = None, source: str = "t") -> dict:
    return make_record([{"role": "user", "content": user}, {"role": "assistant", "content": answer}], source, id=rid)


def test_exact_duplicates_ignore_case_spacing_and_punctuation():
    a = rec("What is  2+2?", "Four.", rid="a")
    b = rec("what is 2 + 2", "four", rid="b")
    c = rec("What is 2+2?", "Five.", rid="c")   # different answer: not an exact duplicate
    kept, st = dedup([a, b, c], near_threshold=0)
    assert [r["id"] for r in kept] == ["a", "c"] and st["exact_duplicate"] == 1
    assert st["examples"][0] == {"reason": "exact_duplicate", "id": "b", "kept_id": "a"}


def test_near_duplicates_by_shingle_jaccard_keep_the_first():
    a = rec(LONG_Q, rid="a")
    b = rec(LONG_Q.replace("short story", "brief story"), "A different answer entirely.", rid="b")
    c = rec("Write a short story about a dragon who is afraid of heights and learns to fly", rid="c")
    kept, st = dedup([a, b, c], near_threshold=0.5)
    assert [r["id"] for r in kept] == ["a", "c"] and st["near_duplicate"] == 1
    kept, st = dedup([a, b, c], near_threshold=0.95)
    assert len(kept) == 3 and st["near_duplicate"] == 0


def test_short_turns_are_one_shingle():
    assert len(shingles(words("hi there"), 5)) == 1
    kept, st = dedup([rec("hi there", "x", rid="1"), rec("Hi, there!", "y", rid="2"), rec("hi you", "z", rid="3")])
    assert [r["id"] for r in kept] == ["1", "3"] and st["near_duplicate"] == 1


def test_semantic_pass_with_the_real_embedder(tmp_path):
    a = rec("How can I make my Python code run faster?", rid="a")
    b = rec("What are ways to speed up Python programs?", rid="b")
    c = rec("Suggest a name for a golden retriever puppy.", rid="c")
    kept, st = dedup([a, b, c], near_threshold=0)
    assert len(kept) == 3
    kept, st = dedup([a, b, c], near_threshold=0, semantic_threshold=0.6, cache_dir=tmp_path)
    assert [r["id"] for r in kept] == ["a", "c"] and st["semantic_duplicate"] == 1
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        dedup([a], near_threshold=1.5)


def test_mix_counts_every_drop_by_reason_and_origin(tmp_path):
    eval_prompt = ("Tom has three boxes with twelve red apples in each box and gives away "
                   "half of all the apples to his neighbours. How many apples does he keep?")
    synth = [rec(LONG_Q, "story", rid="s1"),
             rec("Explain the difference between a list and a tuple in Python.", "lists are mutable", rid="s2"),
             rec(eval_prompt, "18", rid="s3-leak")]
    retrieved = [rec(LONG_Q.replace("short", "brief"), "other story", rid="r1-near"),   # near-dup of s1
                 rec("Explain the difference between a list and a tuple in Python", "Lists are mutable!", rid="r2-exact"),
                 rec("Give me three tips for better sleep.", "...", rid="r3"),
                 rec("Quiz: " + eval_prompt.lower(), "18", rid="r4-leak")]
    out = tmp_path / "train.jsonl"
    st = mix(synth, retrieved, [eval_prompt, "18"], MixConfig(near_dup_threshold=0.5), out)
    assert [r["id"] for r in read_records(out)] == ["s1", "s2", "r3"]
    assert st["in"] == {"synth": 3, "retrieved": 4}
    assert st["dropped"]["contaminated"] == {"synth": 1, "retrieved": 1}
    assert st["dropped"]["exact_duplicate"] == 1 and st["dropped"]["near_duplicate"] == 1
    assert st["dropped"]["duplicate_by_origin"] == {"synth": 0, "retrieved": 2}
    assert st["kept_by_origin"] == {"synth": 2, "retrieved": 1} and st["kept"] == 3
    assert st["decontam"]["eval_short_ignored"] == 1 and st["approx_tokens"] > 0


def test_mix_rejects_bad_records_and_id_clashes(tmp_path):
    with pytest.raises(RecordError, match="mix: retrieved record 0"):
        mix([], [{"id": "x", "messages": [], "source": "t"}], [], MixConfig(), tmp_path / "o.jsonl")
    with pytest.raises(RecordError, match="id 'same'"):
        mix([rec("a", rid="same")], [rec("b", rid="same")], [], MixConfig(), tmp_path / "o.jsonl")
    st = mix([rec("a", rid="same")], [rec("a", rid="same")], [], MixConfig(), tmp_path / "o.jsonl")
    assert st["kept"] == 1
