"""Text overlap, one way for every stage: one word normaliser and one n-gram index.

Decontamination (any shared n-gram with an eval item), the near-copy check during synthesis and
near-duplicate removal in mix all compare texts as ``words`` (Unicode NFKC, lower case, runs of
letters/digits; punctuation and spacing ignored), so they agree on non-ASCII text too.

``NgramIndex`` is an inverted index from word n-grams to the entries holding them; it answers
"the first entry sharing any key with this text" (decontamination) and "the earliest entry
whose n-gram set has Jaccard >= t with this one" (near copies, near duplicates) without an
all-pairs loop.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Iterable

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

Gram = tuple[str, ...]


def words(text: str) -> list[str]:
    """Normalised words: NFKC, lower case, letter/digit runs (punctuation and spaces dropped)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def ngrams(ws: list[str], n: int) -> list[Gram]:
    """Every contiguous run of ``n`` words (none when the text is shorter)."""
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def shingles(ws: list[str], n: int) -> set[Gram]:
    """The text's n-grams as a set; a text shorter than ``n`` words is one shingle of all of it,
    so it only matches the same short text."""
    if len(ws) < n:
        return {tuple(ws)} if ws else set()
    return set(ngrams(ws, n))


class NgramIndex:
    """Entries are sets of word n-grams (of any lengths); ids are assigned in order of ``add``."""

    def __init__(self) -> None:
        self.postings: dict[Gram, list[int]] = {}
        self.sizes: list[int] = []
        self.lengths: dict[int, None] = {}   # key lengths present, in first-seen order

    def __len__(self) -> int:
        return len(self.sizes)

    def add(self, grams: Iterable[Gram]) -> int:
        entry = len(self.sizes)
        grams = set(grams)
        for g in grams:
            self.postings.setdefault(g, []).append(entry)
            self.lengths.setdefault(len(g))
        self.sizes.append(len(grams))
        return entry

    def first_hit(self, ws: list[str]) -> tuple[int, Gram] | None:
        """(entry, key) of the first key found in the words ``ws`` (keys of every stored length)."""
        for length in self.lengths:
            for g in ngrams(ws, length):
                hit = self.postings.get(g)
                if hit:
                    return hit[0], g
        return None

    def jaccard_match(self, grams: set[Gram], threshold: float) -> int | None:
        """The earliest entry whose set has Jaccard >= ``threshold`` with ``grams``, else None."""
        if not grams:
            return None
        shared: Counter = Counter()
        for g in grams:
            shared.update(self.postings.get(g, ()))
        hits = [j for j, c in shared.items() if c / (len(grams) + self.sizes[j] - c) >= threshold]
        return min(hits) if hits else None
