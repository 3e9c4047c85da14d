"""Stage 2, tag: fine ability/knowledge tags and one macro category per text, by the teacher.

Three pieces, as in distilabel's self_instruct: ``format_input`` (template variables),
the ``tag.j2`` template, and ``parse_tags`` (tolerant: ``Tags:``/``Category:`` lines or
JSON). Tags are normalised to a readable surface form (case, whitespace, plurals) and matched
by their Snowball stems (``tag_key``: 'calculating' and 'calculations' are one tag); the macro answer is
snapped to the nearest of the 25 ``MACRO_CATEGORIES`` ("Other" if none is close). Results
are cached in a JSONL file keyed by the content hash of the text, so a re-run (a later
round, another run on the same pool) tags only new texts.

The texts are the dev items and, with ``pool_sample`` > 0, a sample of the pool's records
(``pool_sample_of``: the same records every round, by a hash of their ids). Over everything
tagged, ``tag_vocabulary`` builds the fine-tag vocabulary as InsTag does: near-synonyms merged
by embedding cosine (a tag joins the most frequent earlier tag it is at least
``merge_threshold`` close to) and a frequency floor (a merged tag seen fewer than
``min_count`` times is dropped). Retrieval reads tags through it (``canonical_tags``).
``tag_stats`` gives the figures per source for the stage's summary.
"""
from __future__ import annotations

import difflib
import functools
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from evalsuite.records import content_hash, iter_jsonl, write_jsonl
from synth import parse
from synth.llm.base import LLM, Sampling
from synth.prompts import render_chat, with_prefill

log = logging.getLogger(__name__)

MACRO_CATEGORIES = [
    "Math Reasoning", "Logical Reasoning", "Commonsense Reasoning", "Coding", "Instruction Following",
    "Knowledge QA", "Natural Language Processing", "Reading Comprehension", "Creative Writing",
    "Science", "History and Social Studies", "Language Translation", "Summarization",
    "Information Extraction", "Data Analysis", "Task Planning", "Dialogue and Chit-chat",
    "Advice and Recommendations", "Ethics and Safety", "Business and Finance", "Health and Medicine",
    "Law", "Education and Tutoring", "Text Editing and Rewriting", "Role Play",
]
OTHER = "Other"


@dataclass
class TagConfig:
    categories: list[str] = field(default_factory=lambda: list(MACRO_CATEGORIES))
    max_fine: int = 4              # fine tags kept per text
    max_chars: int = 1200          # text shown to the teacher (head kept)
    max_new_tokens: int = 48       # two short lines
    temperature: float = 0.0       # greedy: tags are a labelling, and greedy makes the cache exact
    batch_prompts: int = 64        # prompts per generate call (cache is flushed in between)
    min_similarity: float = 0.5    # macro answer -> category snapping threshold
    prompts_dir: str | None = None
    pool_sample: int = 0           # also tag this many pool records (same ones every round; cached); 0 = off
    merge_threshold: float = 0.85  # fine tags with embedding cosine >= this are one tag (0 = no merging)
    min_count: int = 2             # a merged fine tag seen fewer times than this is dropped (1 = keep all)
    embedder: str = "all-MiniLM-L6-v2"  # embeds the fine tags for merging


# ------------------------------------------------------------------ normalisation
_KEEP_S = ("ss", "us", "is", "ics", "ous", "sis")


def stem_word(w: str) -> str:
    """Singular of a plural word, crudely (enough to merge 'equations' and 'equation')."""
    if len(w) <= 3 or w.endswith(_KEEP_S):
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "sses")):
        return w[:-2]
    if w.endswith("s"):
        return w[:-1]
    return w


def normalize_tag(tag: str) -> str:
    """The readable surface form of a tag: lower case, punctuation out, plurals singular."""
    t = re.sub(r"[^\w\s+#/-]", " ", str(tag).lower())
    words = [stem_word(w) for w in t.split()]
    return " ".join(words).strip(" -/")


@functools.cache
def _snowball():
    from nltk.stem.snowball import SnowballStemmer

    return SnowballStemmer("english")


def tag_key(tag: str) -> str:
    """The matching key of a tag: its surface form's words through nltk's Snowball (English)
    stemmer, so 'calculating', 'calculation' and 'calculations' are one tag (offline: the stemmer
    is rules, no corpus)."""
    stem = _snowball().stem
    return " ".join(stem(w) for w in normalize_tag(tag).split())


# words a small teacher uses for a category instead of its name (checked before string similarity)
CATEGORY_KEYWORDS = {
    "Math Reasoning": ["math", "mathematic", "arithmetic", "algebra", "geometry", "calculation", "number",
                       "fraction", "percentage", "equation", "statistic"],
    "Coding": ["python", "programming", "code", "coding", "function", "algorithm", "software", "list comprehension",
               "debugging", "javascript", "sql"],
    "Creative Writing": ["writing", "story", "poem", "poetry", "fiction", "essay", "creative"],
    "Natural Language Processing": ["grammar", "punctuation", "language", "linguistic", "sentiment"],
    "Instruction Following": ["format", "formatting", "constraint", "instruction"],
    "Health and Medicine": ["medical", "medicine", "health", "first aid", "nutrition"],
    "Science": ["science", "biology", "chemistry", "physic", "astronomy", "gardening", "ecology"],
    "History and Social Studies": ["history", "historical", "politic", "geography", "social"],
    "Business and Finance": ["business", "finance", "financial", "marketing", "economic"],
    "Summarization": ["summary", "summarization", "summarize"],
    "Language Translation": ["translation", "translate"],
    "Logical Reasoning": ["logic", "logical", "puzzle", "deduction"],
    "Knowledge QA": ["knowledge", "fact", "trivia"],
}


def snap_category(answer: str | None, categories: list[str], min_similarity: float = 0.5) -> str:
    """The known category meant by ``answer``: exact name, keyword, word overlap, or close spelling; else 'Other'."""
    if not answer:
        return OTHER
    a = " ".join(answer.strip().strip(".").lower().split())
    by_lower = {c.lower(): c for c in categories}
    if a in by_lower:
        return by_lower[a]
    words = {stem_word(w) for w in re.findall(r"\w+", a)}
    for cat, keys in CATEGORY_KEYWORDS.items():
        if cat in categories and any((k in a) if " " in k else (k in words) for k in keys):
            return cat
    best, best_score = OTHER, 0.0
    for cat in categories:
        c = cat.lower()
        cw = {stem_word(w) for w in re.findall(r"\w+", c)} - {"and"}
        overlap = len(words & cw) / len(words | cw) if words & cw else 0.0
        score = max(0.4 + 0.6 * overlap if overlap else 0.0,
                    difflib.SequenceMatcher(None, a, c).ratio() - 0.25)  # spelling alone must be very close
        if score > best_score:
            best, best_score = cat, score
    return best if best_score >= min_similarity else OTHER


# ------------------------------------------------------------------ the three pieces
def format_input(text: str, cfg: TagConfig) -> dict:
    text = text.strip()
    if len(text) > cfg.max_chars:
        text = text[: cfg.max_chars] + " ..."
    return {"text": text, "categories": cfg.categories, "max_fine": cfg.max_fine}


def parse_tags(answer: str, cfg: TagConfig) -> dict | None:
    """``{"fine": [...], "macro": [category]}`` from the teacher's answer, or None."""
    fine_raw, macro_raw = None, None
    kv = parse.parse_key_values(answer, ["Tags", "Tag", "Category", "Categories"])
    if kv:
        fine_raw = kv.get("Tags") or kv.get("Tag")
        macro_raw = kv.get("Category") or kv.get("Categories")
    if not fine_raw:
        js = parse.parse_json(answer, dict)
        if js:
            fine_raw = js.get("tags") or js.get("fine")
            macro_raw = macro_raw or js.get("category") or js.get("macro")
    fine, keys = [], set()
    for t in parse.split_tags(fine_raw):
        n = normalize_tag(t)
        if n and parse.looks_like_label(t, 5) and tag_key(n) not in keys:
            fine.append(n)
            keys.add(tag_key(n))
    if not fine:
        return None
    if isinstance(macro_raw, list):
        macro_raw = macro_raw[0] if macro_raw else None
    # a category answer like 'math, arithmetic' is snapped by its first part
    first = parse.split_tags(macro_raw)[0] if parse.split_tags(macro_raw) else None
    macro = snap_category(first, cfg.categories, cfg.min_similarity)
    if macro == OTHER:  # the teacher's category was unusable: try its own fine tags
        macro = snap_category(", ".join(fine), cfg.categories, cfg.min_similarity + 0.2)
    return {"fine": fine[: cfg.max_fine], "macro": [macro]}


# ------------------------------------------------------------------ the stage
def _load_cache(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {row["key"]: row for row in iter_jsonl(path)}


def tag_texts(llm: LLM, texts: dict[str, str], cfg: TagConfig, cache_path: Path) -> tuple[dict, dict]:
    """Tag ``{id: text}``; return ``({id: {"fine", "macro"}}, stats)``.

    Unparseable answers get ``{"fine": [], "macro": ["Other"]}`` and are counted; the
    cache stores them too (greedy decoding would repeat them).
    """
    cache_path = Path(cache_path)
    cache = _load_cache(cache_path)
    keys = {i: content_hash(t) for i, t in texts.items()}
    todo = sorted({k for k in keys.values() if k not in cache})
    key_text = {keys[i]: t for i, t in texts.items()}
    stats = {"texts": len(texts), "unique": len(set(keys.values())), "cached": len(set(keys.values())) - len(todo),
             "prompted": len(todo), "parsed": 0, "parse_failures": 0}
    sampling = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, stop=["\n\n"])
    for start in range(0, len(todo), cfg.batch_prompts):
        chunk = todo[start:start + cfg.batch_prompts]
        prompts = [render_chat("tag", cfg.prompts_dir, **format_input(key_text[k], cfg)) for k in chunk]
        answers = llm.generate(prompts, sampling)
        for k, prompt, ans in zip(chunk, prompts, answers):
            ans = with_prefill(prompt, ans)
            tags = parse_tags(ans, cfg)
            cache[k] = {"key": k, "ok": tags is not None, "fine": (tags or {}).get("fine", []),
                        "macro": (tags or {}).get("macro", [OTHER]), "raw": ans}
        write_jsonl(cache_path, cache.values())  # flush: a killed run keeps finished chunks
    out = {i: {"fine": list(cache[k]["fine"]), "macro": list(cache[k]["macro"])} for i, k in keys.items()}
    # parse figures over every distinct text, cached or not: a resumed (or later) run reports the same ones
    ok = [cache[k]["ok"] for k in set(keys.values())]
    stats["parsed"], stats["parse_failures"] = sum(ok), len(ok) - sum(ok)
    stats["parse_rate"] = stats["parsed"] / len(ok) if ok else None
    macro_counts: dict[str, int] = {}
    for t in out.values():
        for m in t["macro"]:
            macro_counts[m] = macro_counts.get(m, 0) + 1
    stats["macro_counts"] = dict(sorted(macro_counts.items(), key=lambda kv: -kv[1]))
    log.info("tag: %d texts, %d prompted, %d parse failures", len(texts), len(todo), stats["parse_failures"])
    return out, stats


# ------------------------------------------------------------------ pool sample, vocabulary, statistics
def pool_sample_of(records: list[dict], n: int) -> list[dict]:
    """``n`` pool records in a fixed pseudo-random order (a hash of each id): the same records every
    round, and a grown pool keeps the records sampled before unless newer ones hash lower."""
    return sorted(records, key=lambda r: content_hash("pool-sample", r["id"]))[:max(n, 0)]


def tag_vocabulary(tag_lists: Iterable[list[str]], embed: Callable[[list[str]], np.ndarray] | None,
                   merge_threshold: float, min_count: int) -> tuple[dict[str, str | None], dict]:
    """``{fine tag: canonical tag, or None below the floor}`` over every list of fine tags (one per
    tagged text), and its figures. Tags in order of frequency: one whose embedding cosine to an
    earlier canonical tag is at least ``merge_threshold`` joins the closest such tag (``embed``:
    texts -> L2-normalised vectors; None or threshold 0 = no merging); then canonical tags with
    fewer than ``min_count`` occurrences in all map to None."""
    surface = Counter(t for tags in tag_lists for t in dict.fromkeys(tags))
    # one tag per stem key (``tag_key``), named by its most frequent surface form
    by_key: dict[str, list[str]] = {}
    for t in sorted(surface, key=lambda t: (-surface[t], t)):
        by_key.setdefault(tag_key(t), []).append(t)
    counts = Counter({forms[0]: sum(surface[f] for f in forms) for forms in by_key.values()})
    order = sorted(counts, key=lambda t: (-counts[t], t))
    canon_of: dict[str, str] = {}
    if order and embed is not None and merge_threshold > 0:
        vecs = np.asarray(embed(order), dtype=np.float32)
        canon_idx: list[int] = []
        for i, tag in enumerate(order):
            if canon_idx:
                sims = vecs[canon_idx] @ vecs[i]
                j = int(np.argmax(sims))
                if sims[j] >= merge_threshold:
                    canon_of[tag] = order[canon_idx[j]]
                    continue
            canon_idx.append(i)
            canon_of[tag] = tag
    else:
        canon_of = {t: t for t in order}
    totals = Counter()
    for t, c in counts.items():
        totals[canon_of[t]] += c
    vocab = {t: (canon_of[t] if totals[canon_of[t]] >= min_count else None) for t in order}
    stem_merged = {f: forms[0] for forms in by_key.values() for f in forms[1:]}
    kept = {c for c in vocab.values() if c is not None}
    stats = {"raw_tags": len(order), "canonical_tags": len(set(canon_of.values())), "kept_tags": len(kept),
             "merged": sum(1 for t in order if canon_of[t] != t),
             "dropped_below_floor": len({canon_of[t] for t in order if vocab[t] is None}),
             "merges": {t: canon_of[t] for t in order if canon_of[t] != t},
             "stem_merged": len(stem_merged)}
    for f, rep in stem_merged.items():    # every surface form looks up its key's tag
        vocab[f] = vocab[rep]
    return vocab, stats


def canonical_tags(tags: dict, vocab: dict[str, str | None]) -> list[str]:
    """A text's tags as features for matching: ``macro:<category>`` and ``fine:<canonical tag>``
    (a fine tag the vocabulary has not seen is kept as normalised; one below the floor is dropped)."""
    out = [f"macro:{m}" for m in tags.get("macro", []) if m]
    by_key = _key_index(vocab)
    for t in tags.get("fine", []):
        n = normalize_tag(t)
        c = vocab[n] if n in vocab else by_key.get(tag_key(n), n)
        if c:
            out.append(f"fine:{c}")
    return list(dict.fromkeys(out))


_KEYS: dict[int, tuple[dict, dict]] = {}


def _key_index(vocab: dict[str, str | None]) -> dict[str, str | None]:
    """{stem key: canonical tag} of a vocabulary (a surface form it has not seen still finds its
    tag by key), built once per vocabulary object."""
    got = _KEYS.get(id(vocab))
    if got is None or got[0] is not vocab:
        idx: dict[str, str | None] = {}
        for t, c in vocab.items():
            idx.setdefault(tag_key(t), c)
        got = _KEYS[id(vocab)] = (vocab, idx)
    return got[1]


def tag_stats(by_source: dict[str, list[dict]], vocab: dict[str, str | None] | None = None, top: int = 5) -> dict:
    """Per source: texts tagged, distinct fine tags (canonical ones with ``vocab``), fine tags per
    text, the most frequent fine tags and the macro-category counts."""
    out = {}
    for source, tag_list in sorted(by_source.items()):
        fine = [[(vocab.get(t, t) if vocab is not None else t) for t in tags.get("fine", [])] for tags in tag_list]
        fine = [[t for t in ts if t] for ts in fine]
        fc = Counter(t for ts in fine for t in ts)
        mc = Counter(m for tags in tag_list for m in tags.get("macro", []))
        out[source] = {"texts": len(tag_list), "distinct_fine": len(fc),
                       "fine_per_text": round(sum(map(len, fine)) / max(len(fine), 1), 3),
                       "top_fine": dict(fc.most_common(top)), "macro_counts": dict(mc.most_common())}
    return out
