"""One normaliser and one n-gram index: decontamination, the near-copy check during synthesis and
near-duplicate removal agree on the same text, non-ASCII included."""
from __future__ import annotations

from evalsuite.records import make_record
from synth.decontam import decontaminate
from synth.dedup import dedup
from synth.propose import NearCopyFilter
from synth.overlap import NgramIndex, shingles, words

# a benchmark item in French: accents and a full-width comma must not split words
ITEM = "Le café coûte 3 euros，combien coûtent cinq cafés et deux croissants à la boulangerie du village"


def rec(text: str, rid: str) -> dict:
    return make_record([{"role": "user", "content": text}, {"role": "assistant", "content": "Réponse."}], "t", id=rid)


def test_words_are_unicode_and_normalised():
    assert words("Café，CRÈME ｆｕｌｌ-width_x") == ["café", "crème", "full", "width", "x"]
    assert words(ITEM)[:3] == ["le", "café", "coûte"]


def test_the_three_checks_agree_on_a_non_ascii_copy():
    copy = ITEM.upper().replace("，", ", ")  # same words, other case and punctuation
    # decontamination: it shares a 13-gram with the item
    kept, st = decontaminate([rec(copy, "c")], [ITEM])
    assert kept == [] and st["contaminated"] == 1
    # synthesis: the near-copy filter sees the same copy
    assert NearCopyFilter([ITEM], threshold=0.6).hits(copy)
    # mix: dedup finds it a near duplicate of the item as a record
    kept, st = dedup([rec(ITEM, "a"), rec(copy, "b"), rec(copy + " MERCI", "c")], near_threshold=0.8)
    assert [r["id"] for r in kept] == ["a"] and st["exact_duplicate"] == 1 and st["near_duplicate"] == 1
    # before, the near-copy filter read only ASCII letters: 'café' became 'caf' and 'à' vanished
    assert "caf" not in words(ITEM)


def test_index_first_hit_and_jaccard():
    idx = NgramIndex()
    a = idx.add(shingles(words("one two three four"), 3))
    b = idx.add([("alpha", "beta")])
    assert (a, b) == (0, 1)
    assert idx.first_hit(words("x alpha beta y")) == (1, ("alpha", "beta"))
    assert idx.first_hit(words("nothing here")) is None
    assert idx.jaccard_match(shingles(words("one two three four"), 3), 0.99) == 0
    assert idx.jaccard_match(shingles(words("one two three five"), 3), 0.5) is None  # 1 of 3 shared
    assert idx.jaccard_match(set(), 0.1) is None
