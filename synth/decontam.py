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

    def match_all(self, text: str) -> tuple[list[int], str] | None:
        """(every eval index holding the first key found in ``text``, matched words), else None."""
        hit = self.index.first_hit(words(text))
        if not hit:
            return None
        return sorted({self.eval_idx[e] for e in self.index.postings[hit[1]]}), " ".join(hit[1])


def item_of(row: dict) -> dict:
    """(task, doc_id, split, field) of a harness decontamination row (``evalsuite.harness.decontam_rows``:
    key ``task/doc_id`` for the scored split, ``task/split:doc_id`` for another)."""
    task, _, doc_id = str(row.get("key", "")).partition("/")
    split = row.get("split") or "test"
    if doc_id.startswith(f"{split}:"):
        doc_id = doc_id[len(split) + 1:]
    return {"task": task, "doc_id": doc_id, "split": split, "field": row.get("field")}


def decontaminate(records: list[dict], eval_texts: list[str], n: int = 13, min_words: int = 6,
                  boilerplate_items: int = 3, eval_rows: list[dict] | None = None,
                  report: list[dict] | None = None) -> tuple[list[dict], dict]:
    """(records with no overlap with any eval text, stats). See the module doc for the rule.
    ``eval_rows``: the harness rows the texts come from (same order), naming each eval item; then
    ``stats["by_task"]`` counts the dropped records and the items they hit per task, and
    ``report`` (a list) gets one row per dropped record: its id and source, the message that
    matched, the matched words and every eval item (task, doc_id, split, field) holding them."""
    if eval_rows is not None and len(eval_rows) != len(eval_texts):
        raise ValueError(f"decontam: {len(eval_rows)} eval rows for {len(eval_texts)} eval texts")
    index = EvalIndex(eval_texts, n=n, min_words=min_words, boilerplate_items=boilerplate_items)
    kept, examples, hit_evals = [], [], Counter()
    by_task: dict[str, dict] = {}
    for rec in records:
        hit, where = None, None
        for i, m in enumerate(rec["messages"]):
            hit = index.match_all(m["content"])
            if hit:
                where = i
                break
        if hit is None:
            kept.append(rec)
            continue
        evals, matched = hit
        hit_evals[evals[0]] += 1
        if len(examples) < 5:
            examples.append({"id": rec["id"], "eval_idx": evals[0], "match": matched})
        if eval_rows is not None:
            items = [item_of(eval_rows[e]) for e in evals]
            for task in dict.fromkeys(it["task"] for it in items):
                t = by_task.setdefault(task, {"records": 0, "items": set()})
                t["records"] += 1
                t["items"].update((it["doc_id"], it["split"]) for it in items if it["task"] == task)
            if report is not None:
                report.append({"id": rec["id"], "source": rec.get("source"), "message": where,
                               "role": rec["messages"][where]["role"], "match": matched, "eval": items})
    stats = {"in": len(records), "kept": len(kept), "contaminated": len(records) - len(kept),
             "eval_items_hit": len(hit_evals), "n": n, "min_words": min_words,
             **dict(index.stats), "examples": examples,
             "boilerplate_examples": index.boilerplate_examples,
             "eval_hits": sorted(hit_evals.items(), key=lambda kv: (-kv[1], kv[0]))}  # [eval index, records]
    if eval_rows is not None:
        stats["by_task"] = {t: {"records": v["records"], "items": len(v["items"])} for t, v in sorted(by_task.items())}
    return kept, stats
