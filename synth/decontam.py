"""Decontamination: no training record may share an n-gram with any eval item.

Texts are compared as normalised words (``synth.overlap.words``: Unicode NFKC, lower case,
runs of letters/digits; punctuation and spacing ignored), the same words every overlap check
uses. Eval texts are the question and target of every item of every task in the suite
(``eval/decontam_texts.jsonl``, written by the harness). The rule, by the length of an eval text
in words:

* ``>= n`` words (default 13, as in GPT-3's decontamination): every word n-gram of it is a
  key; a record containing any of them is contaminated;
* ``min_words <= w < n`` words: the whole text is a key; a record containing it as a
  contiguous word sequence is contaminated;
* ``< min_words`` words (default 6: answers such as "B", "42", "Paris", "the cell
  membrane"): ignored, as such text occurs everywhere without being a leak. Counted.

A key found in ``boilerplate_items`` or more eval texts (default 3) is template wording shared
by many items — an IFEval constraint sentence ("Your entire response should be in English, and
in all lowercase letters"), a word-problem template's fixed clause — not any one item's content:
it is ignored and counted (``boilerplate_keys``), so a synthesized instruction that reuses a
benchmark's constraint wording is not taken for a copy, while one that repeats an item's own
text still is. 0 turns this off.

A record's text is each of its messages separately (n-grams do not span two messages).
"""
from __future__ import annotations

from collections import Counter

from synth.overlap import NgramIndex, ngrams, words


class EvalIndex:
    """The keys of all eval texts (n-grams of long texts, whole short texts) -> eval text index."""

    def __init__(self, eval_texts: list[str], n: int = 13, min_words: int = 6, boilerplate_items: int = 3):
        if n < 1 or min_words < 1:
            raise ValueError(f"decontam: n and min_words must be >= 1, got n={n}, min_words={min_words}")
        self.n, self.min_words = n, min_words
        self.index = NgramIndex()
        self.eval_idx: list[int] = []      # index entry -> eval text
        self.boilerplate_examples: list[str] = []
        self.stats = Counter(eval_texts=len(eval_texts))
        for idx, text in enumerate(eval_texts):
            ws = words(text)
            if len(ws) >= n:
                keys, kind = ngrams(ws, n), "eval_ngram_texts"
            elif len(ws) >= min_words:
                keys, kind = [tuple(ws)], "eval_short_containment"
            else:
                self.stats["eval_short_ignored"] += 1
                continue
            self.index.add(keys)
            self.eval_idx.append(idx)
            self.stats[kind] += 1
        if boilerplate_items > 0:   # shared template wording is no evidence of a copy
            # sorted: postings follow set iteration order, which string hashing varies per process
            shared = sorted(g for g, entries in self.index.postings.items() if len(set(entries)) >= boilerplate_items)
            for g in shared:
                del self.index.postings[g]
            self.stats["boilerplate_keys"] = len(shared)
            self.boilerplate_examples = [" ".join(g) for g in shared[:3]]
        self.stats["keys"] = len(self.index.postings)

    def match(self, text: str) -> tuple[int, str] | None:
        """(eval index, matched words) of the first key found in ``text``, else None."""
        hit = self.index.first_hit(words(text))
        return (self.eval_idx[hit[0]], " ".join(hit[1])) if hit else None


def decontaminate(records: list[dict], eval_texts: list[str], n: int = 13, min_words: int = 6,
                  boilerplate_items: int = 3) -> tuple[list[dict], dict]:
    """(records with no overlap with any eval text, stats). See the module doc for the rule."""
    index = EvalIndex(eval_texts, n=n, min_words=min_words, boilerplate_items=boilerplate_items)
    kept, examples, hit_evals = [], [], Counter()
    for rec in records:
        hit = None
        for m in rec["messages"]:
            hit = index.match(m["content"])
            if hit:
                break
        if hit is None:
            kept.append(rec)
            continue
        hit_evals[hit[0]] += 1
        if len(examples) < 5:
            examples.append({"id": rec["id"], "eval_idx": hit[0], "match": hit[1]})
    stats = {"in": len(records), "kept": len(kept), "contaminated": len(records) - len(kept),
             "eval_items_hit": len(hit_evals), "n": n, "min_words": min_words,
             **dict(index.stats), "examples": examples,
             "boilerplate_examples": index.boilerplate_examples,
             "eval_hits": sorted(hit_evals.items(), key=lambda kv: (-kv[1], kv[0]))}  # [eval index, records]
    return kept, stats
