"""Decontamination: n-gram overlap, short-text containment, ignored tiny targets, normalisation."""
from __future__ import annotations

import pytest

from evalsuite.records import make_record
from synth.decontam import EvalIndex, decontaminate
from synth.overlap import words

EVAL_PROMPT = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
               "clips in May. How many clips did Natalia sell altogether in April and May?")


def rec(user: str, answer: str = "Sure, here it is.", rid: str | None = None) -> dict:
    return make_record([{"role": "user", "content": user}, {"role": "assistant", "content": answer}], "t", id=rid)


def test_words_normalise_case_punctuation_and_unicode():
    assert words("Héllo,  WORLD!! ｆｕｌｌ-width_x") == ["héllo", "world", "full", "width", "x"]


def test_long_eval_text_matches_any_13_gram_even_reformatted():
    piece = " ".join(EVAL_PROMPT.split()[3:17])  # 14 words from the middle
    assert len(words(piece)) >= 13
    leaked = rec(f"Here's a puzzle: {piece.upper()}!!! Can you solve it?", rid="leak")
    clean = rec("Natalia sold clips to her friends. How many clips did she sell?", rid="clean")
    in_answer = rec("Give me a word problem", answer=EVAL_PROMPT.replace(",", " ,"), rid="ans")
    kept, stats = decontaminate([leaked, clean, in_answer], [EVAL_PROMPT, "72"])
    assert [r["id"] for r in kept] == ["clean"]
    assert stats["contaminated"] == 2 and stats["eval_items_hit"] == 1
    assert stats["eval_short_ignored"] == 1 and stats["eval_ngram_texts"] == 1
    assert {e["id"] for e in stats["examples"]} == {"leak", "ans"}
    assert stats["eval_hits"] == [(0, 2)]       # [eval text index, records it caught]


def test_twelve_shared_words_are_not_contamination_at_n13_but_are_at_n10():
    twelve = " ".join(EVAL_PROMPT.split()[:12])
    r = rec(f"{twelve} something else entirely different", rid="r")
    assert decontaminate([r], [EVAL_PROMPT])[1]["contaminated"] == 0
    assert decontaminate([r], [EVAL_PROMPT], n=10)[1]["contaminated"] == 1


def test_short_eval_texts_use_whole_text_containment_and_tiny_ones_are_ignored():
    evals = ["What is the capital city of Australia?",  # 7 words: containment
             "Paris",                                     # 1 word: ignored
             "the cell membrane"]                         # 3 words: ignored
    a = rec("Quick quiz. what is the CAPITAL city of australia? Answer briefly.", rid="a")
    b = rec("What is the capital city of Austria?", rid="b")
    c = rec("I visited Paris and studied the cell membrane.", rid="c")
    kept, stats = decontaminate([a, b, c], evals)
    assert [r["id"] for r in kept] == ["b", "c"]
    assert stats["eval_short_containment"] == 1 and stats["eval_short_ignored"] == 2
    kept, _ = decontaminate([a, b, c], evals, min_words=1)
    assert [r["id"] for r in kept] == ["b"]


def test_ngrams_do_not_span_two_messages():
    ws = EVAL_PROMPT.split()
    r = make_record([{"role": "user", "content": " ".join(ws[:8])},
                     {"role": "assistant", "content": " ".join(ws[8:16])}], "t")
    assert decontaminate([r], [EVAL_PROMPT])[1]["contaminated"] == 0


def test_index_counts_and_bad_params():
    idx = EvalIndex([EVAL_PROMPT, EVAL_PROMPT], n=13)
    assert idx.stats["keys"] == len(words(EVAL_PROMPT)) - 13 + 1
    assert idx.match("nothing here") is None
    with pytest.raises(ValueError, match="n and min_words"):
        EvalIndex([], n=0)


def test_shared_constraint_wording_is_boilerplate_but_an_items_own_text_is_not():
    """A synthesized instruction reusing IFEval's constraint sentence is not a copy of an item."""
    constraint = ("Your entire response should be in English, and in all lowercase letters. "
                  "No capital letters are allowed.")
    items = [f"Write a short essay about {topic} for a school newsletter. {constraint}"
             for topic in ("the history of tea", "volcanoes in Iceland", "how bees dance", "night trains")]
    reuse = rec(f"Describe your favourite breakfast in three sentences. {constraint}", rid="reuse")
    copy = rec("Write a short essay about volcanoes in Iceland for a school newsletter. Your entire answer", rid="copy")
    kept, st = decontaminate([reuse, copy], items)
    assert [r["id"] for r in kept] == ["reuse"] and st["boilerplate_keys"] > 0
    assert "lowercase letters" in " ".join(st["boilerplate_examples"])
    kept, st = decontaminate([reuse, copy], items, boilerplate_items=0)   # off: the shared wording counts
    assert kept == []


def test_boilerplate_examples_do_not_depend_on_the_process_hash_seed():
    """The examples go into mix's DONE summary, which a resumed run must reproduce exactly."""
    import subprocess
    import sys

    code = ("from synth.decontam import EvalIndex\n"
            "t = 'your entire response should be in english and in all lowercase letters no capitals allowed'\n"
            "print(EvalIndex([f'{t} about topic {i} please' for i in range(5)], n=5).boilerplate_examples)")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout
            for seed in (0, 1, 2, 3)}
    assert len(outs) == 1 and "english" in outs.pop()


def test_report_names_every_dropped_record_and_the_items_it_matched(tmp_path):
    """With the harness rows, every dropped record is reported with its source, the matched words
    and the eval item(s) (task, doc_id, split) holding them; counts per task; mix writes the file."""
    from evalsuite.records import read_jsonl
    from synth.mix import MixConfig, mix

    few = "Emma saves 12 dollars every week for 8 weeks then spends 41 dollars on a gift for her mother."
    rows = [{"key": "math/m-1", "field": "question", "text": EVAL_PROMPT, "split": "test"},
            {"key": "math/m-1", "field": "target", "text": "72", "split": "test"},
            {"key": "math/fewshot:shot-5", "field": "question", "text": few, "split": "fewshot"},
            {"key": "code/HumanEval/3", "field": "question", "text": few + " Then write code.", "split": "test"}]
    texts = [r["text"] for r in rows]
    recs = [rec(EVAL_PROMPT, rid="a"), rec("fine", answer=few, rid="b"), rec("clean question", rid="c")]
    report: list = []
    kept, stats = decontaminate(recs, texts, eval_rows=rows, report=report)
    assert [r["id"] for r in kept] == ["c"] and [r["id"] for r in report] == ["a", "b"]
    assert report[0]["eval"] == [{"task": "math", "doc_id": "m-1", "split": "test", "field": "question"}]
    b = report[1]
    assert b["message"] == 1 and b["role"] == "assistant" and b["source"] == "t" and len(b["match"].split()) == 13
    assert {(e["task"], e["doc_id"], e["split"]) for e in b["eval"]} == {("math", "shot-5", "fewshot"),
                                                                       ("code", "HumanEval/3", "test")}
    assert stats["by_task"] == {"code": {"records": 1, "items": 1}, "math": {"records": 2, "items": 2}}
    s = mix([recs[1]], [recs[0], recs[2]], texts, MixConfig(), tmp_path / "train.jsonl", eval_rows=rows,
            report_path=tmp_path / "decontam_report.jsonl")
    got = read_jsonl(tmp_path / "decontam_report.jsonl")
    assert {(r["id"], r["origin"]) for r in got} == {("a", "retrieved"), ("b", "synth")}
    assert s["decontam"]["by_task"]["math"]["records"] == 2
