"""Instruction following: verifiable constraints, checked by the scorer's own IFEval checkers,
with deterministic repair (AutoIF-style: the verifier is code, its verdict is the filter).

An instruction is a teacher-written base request plus constraints drawn from the catalogue
``configs/prompts/constraints.yaml`` (checker id, kwargs, phrasings, repair): preferably the
checkers the deficiency's failed eval items carried, else those its ability words point to.
Of k sampled responses the first that passes every checker is kept; when none does, a response
is repaired by the catalogue's transform for each failing checker (lower/upper case, quotes,
postscript, end phrase, no commas, JSON, title, bullets, ...) and kept only if every checker
then passes. The checkers are ``check_instructions`` of ``configs/tasks/ifeval_offline/utils.py``,
the code that scores ``ifeval_offline``.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from synth.prompts import PROMPTS_DIR, load_data
from synth.verify import Check, basic_check

IFEVAL_UTILS = Path(__file__).resolve().parents[1] / "configs" / "tasks" / "ifeval_offline" / "utils.py"


@functools.lru_cache(maxsize=1)
def _scorer():
    """The ``ifeval_offline`` task's own utils module (loaded by path, as lm-eval loads it)."""
    spec = importlib.util.spec_from_file_location("synth_ifeval_offline_utils", IFEVAL_UTILS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check(response: str, constraints: list[dict], prompt: str = "") -> list[bool]:
    """One bool per constraint: does ``response`` pass its checker (strict, as the task scores)?"""
    return _scorer().check_instructions(response, [c["id"] for c in constraints],
                                        [c["kwargs"] for c in constraints], prompt)


# ------------------------------------------------------------------ the catalogue
@dataclass
class Catalogue:
    entries: list[dict]
    conflicts: set[tuple[str, str]]
    keywords: list[str]
    postscripts: list[str]


@functools.lru_cache(maxsize=4)
def _catalogue(path: str) -> Catalogue:
    raw = load_data(Path(path).name, Path(path).parent)
    known = _scorer().INSTRUCTION_DICT
    entries = []
    for i, e in enumerate(raw.get("constraints") or []):
        where = f"{path}: constraints[{i}]"
        if e.get("id") not in known:
            raise ValueError(f"{where}: unknown IFEval checker id {e.get('id')!r}")
        if e.get("repair", "none") not in REPAIRS and e.get("repair", "none") != "none":
            raise ValueError(f"{where}: unknown repair {e.get('repair')!r}; known: {sorted(REPAIRS)}")
        if not e.get("say") or not e.get("family"):
            raise ValueError(f"{where}: needs 'family' and a non-empty 'say' list")
        entries.append({"kwargs": {}, "hints": [], "repair": "none", **e})
    conflicts = {tuple(p) for p in raw.get("conflicts") or []}
    conflicts |= {(b, a) for a, b in conflicts}
    return Catalogue(entries, conflicts, list(raw.get("keywords") or []), list(raw.get("postscripts") or ["."]))


def catalogue(prompts_dir: str | Path | None = None) -> Catalogue:
    return _catalogue(str((Path(prompts_dir) if prompts_dir else PROMPTS_DIR) / "constraints.yaml"))


def failed_ids(deficiency: dict, eval_targets: dict[str, str] | None) -> Counter:
    """Checker ids the deficiency stands for, counted: the checkers its items actually failed (the
    scorer's evidence, ``diagnose``'s ``evidence.checks``) when known, else every checker of its
    example eval items (their targets list them)."""
    ids: Counter = Counter()
    for c in ((deficiency.get("evidence") or {}).get("checks") or []):
        if isinstance(c, dict) and isinstance(c.get("id"), str):
            ids[c["id"]] += 1
    if ids:
        return ids
    for key in deficiency.get("examples") or []:
        target = (eval_targets or {}).get(key)
        try:
            items = json.loads(target) if target else []
        except (TypeError, ValueError):
            continue
        for it in items if isinstance(items, list) else []:
            if isinstance(it, dict) and isinstance(it.get("id"), str):
                ids[it["id"]] += 1
    return ids


def _draw_kwargs(entry: dict, rng: random.Random, cat: Catalogue) -> dict:
    out = {}
    for key, spec in sorted(entry["kwargs"].items()):
        if isinstance(spec, dict) and "sample" in spec:
            out[key] = rng.sample(cat.keywords, int(spec["sample"]))
        else:
            out[key] = rng.choice(spec)
    return out


def _make(entry: dict, rng: random.Random, cat: Catalogue) -> dict:
    kwargs = _draw_kwargs(entry, rng, cat)
    return {"id": entry["id"], "kwargs": kwargs, "text": rng.choice(entry["say"]).format(**kwargs),
            "family": entry["family"], "repair": entry["repair"]}


def draw_constraints(deficiency: dict, rng: random.Random, cat: Catalogue, prefer: Counter,
                     max_constraints: int = 2) -> list[dict]:
    """1..max_constraints compatible constraints: the first from the deficiency's failed checkers
    (weighted by count), else from its ability/error words, else any; the rest any compatible."""
    text = f"{deficiency.get('ability', '')} {deficiency.get('error', '')}".lower()
    pool = [e for e in cat.entries if prefer.get(e["id"])]
    weights = [prefer[e["id"]] for e in pool]
    if not pool:
        pool = [e for e in cat.entries if any(h in text for h in e["hints"])] or cat.entries
        weights = [1] * len(pool)
    chosen = [_make(rng.choices(pool, weights)[0], rng, cat)]
    for _ in range(rng.randint(1, max(1, max_constraints)) - 1):
        fams = {c["family"] for c in chosen}
        ok = [e for e in cat.entries if e["family"] not in fams and not any((e["family"], f) in cat.conflicts
                                                                          for f in fams)]
        if not ok:
            break
        chosen.append(_make(rng.choice(ok), rng, cat))
    return chosen


def known_constraints(ids: list[str], kwargs: list[dict], cat: Catalogue) -> list[dict]:
    """Constraints given by checker id + kwargs (an IFEval row), with the catalogue's repair where
    an entry has that id and its relation (``less than``/``at least``), else none."""
    out = []
    for iid, kw in zip(ids, kwargs):
        kw = {k: v for k, v in (kw or {}).items() if v is not None}
        entry = next((e for e in cat.entries if e["id"] == iid and all(
            kw.get(k) in spec for k, spec in e["kwargs"].items() if k.endswith("relation"))), None)
        out.append({"id": iid, "kwargs": kw, "text": "", "family": entry["family"] if entry else "",
                    "repair": entry["repair"] if entry else "none"})
    return out


def render_instruction(request: str, constraints: list[dict]) -> str:
    request = request.strip()
    if request and request[-1] not in ".!?":
        request += "."
    return " ".join([request] + [c["text"] for c in constraints])


# ------------------------------------------------------------------ repairs
def _sentences(text: str) -> list[str]:
    flat = " ".join(re.sub(r"(?m)^[ \t]*(?:[*-]|\d+[.)])\s+", "", text).split())
    return [s for s in re.split(r"(?<=[.!?])\s+", flat) if s.strip()]


def _groups(items: list[str], n: int) -> list[list[str]] | None:
    if len(items) < n:
        return None
    size, extra = divmod(len(items), n)
    out, i = [], 0
    for g in range(n):
        k = size + (g < extra)
        out.append(items[i:i + k])
        i += k
    return out


def _truncate(text: str, fits) -> str | None:
    kept = []
    for s in _sentences(text):
        if not fits(kept + [s]):
            break
        kept.append(s)
    return " ".join(kept) or None


def _n_words(sents: list[str]) -> int:
    return len(re.findall(r"\w+", " ".join(sents)))


def _capital_words(text: str, kw: dict, ctx: dict) -> str:
    n, done = int(kw.get("capital_frequency", 2)), [0]

    def up(m):
        if done[0] >= n or m.group(0).isupper():
            return m.group(0)
        done[0] += 1
        return m.group(0).upper()
    return re.sub(r"\b[A-Za-z]{4,}\b", up, text)


def _structured(fmt):
    def repair(text: str, kw: dict, ctx: dict) -> str | None:
        n = int(next(v for k, v in kw.items() if k.startswith("num_")))
        groups = _groups(_sentences(text), n)
        return fmt(groups, kw) if groups else None
    return repair


def _highlight(text: str, kw: dict, ctx: dict) -> str | None:
    sents = _sentences(text)
    n = int(kw.get("num_highlights", 1))
    if len(sents) < n:
        return None
    return " ".join(f"*{s.replace('*', '')}*" if i < n else s for i, s in enumerate(sents))


def _title(text: str, kw: dict, ctx: dict) -> str:
    title = re.sub(r"[<>\n]", "", ctx.get("topic") or " ".join(text.split()[:4])).strip().title() or "A Reply"
    return f"<<{title}>>\n\n{text.strip()}"


def _two_responses(text: str, kw: dict, ctx: dict) -> str | None:
    first = text.replace("******", "").strip()
    other = next((o.replace("******", "").strip() for o in ctx.get("others", [])
                  if o.replace("******", "").strip() not in ("", first)), None)
    return f"{first}\n\n******\n\n{other}" if other else None


REPAIRS = {  # name -> (text, kwargs, ctx) -> repaired text or None; applied in this order
    "truncate_words": lambda t, kw, ctx: _truncate(t, lambda s: _n_words(s) < int(kw["num_words"]) - 12),
    "truncate_sentences": lambda t, kw, ctx: _truncate(t, lambda s: len(s) < int(kw["num_sentences"])),
    "no_comma": lambda t, kw, ctx: re.sub(r",\s*", " ", re.sub(r"(?<=\d),(?=\d{3})", "", t)),
    "capital_words": _capital_words,
    "bullets": _structured(lambda g, kw: "\n".join("* " + " ".join(x) for x in g)),
    "highlight": _highlight,
    "paragraphs": _structured(lambda g, kw: "\n\n***\n\n".join(" ".join(x) for x in g)),
    "sections": _structured(lambda g, kw: "\n\n".join(f"{kw['section_spliter']} {i + 1}\n" + " ".join(x)
                                                      for i, x in enumerate(g))),
    "title": _title,
    "postscript": lambda t, kw, ctx: f"{t.rstrip()}\n\n{kw['postscript_marker']} {ctx.get('postscript', 'Thanks.')}",
    "end_phrase": lambda t, kw, ctx: f"{t.rstrip()}\n\n{kw['end_phrase']}",
    "lowercase": lambda t, kw, ctx: t.lower(),
    "uppercase": lambda t, kw, ctx: t.upper(),
    "two_responses": _two_responses,
    "quote": lambda t, kw, ctx: '"' + t.strip().strip('"') + '"',
    "json": lambda t, kw, ctx: "```json\n" + json.dumps({"response": t.strip()}, ensure_ascii=False, indent=2)
                               + "\n```",
}
ORDER = list(REPAIRS)


def repair(text: str, constraints: list[dict], failing: list[int], ctx: dict) -> tuple[str, list[str]] | None:
    """Apply the repair of each failing constraint (in ``ORDER``); None if one has no repair or fails."""
    todo = []
    for i in failing:
        name = constraints[i].get("repair", "none")
        if name == "none":
            return None
        todo.append((ORDER.index(name), name, constraints[i]["kwargs"]))
    for _, name, kw in sorted(todo, key=lambda x: x[0]):
        text = REPAIRS[name](text, kw, ctx)
        if not text:
            return None
    return text, [n for _, n, _ in sorted(todo, key=lambda x: x[0])]


# ------------------------------------------------------------------ the verifier
def verify(samples: list[str], constraints: list[dict], ctx: dict, allow_repair: bool = True,
           min_chars: int = 20, prompt: str = "") -> tuple[str | None, Check]:
    """The kept response (or None) and the check: the first sample passing every checker as is,
    else the repaired sample needing the fewest repairs."""
    best: tuple | None = None
    unrepaired, usable = 0, [s for s in samples if basic_check(s, min_chars) is None]
    for i, s in enumerate(usable):
        s = s.strip()
        res = check(s, constraints, prompt)
        if all(res):
            unrepaired += 1
            if best is None or best[0] > 0:
                best = (0, s, [], res)
            continue
        if not allow_repair or (best is not None and best[0] == 0):
            continue
        text, done = s, []
        for _ in range(2):  # a repair may break another check (a postscript lengthens): one more pass
            fixed = repair(text, constraints, [j for j, ok in enumerate(res) if not ok],
                           {**ctx, "others": usable[:i] + usable[i + 1:]})
            if fixed is None:
                break
            text, done = fixed[0], done + [n for n in fixed[1] if n not in done]
            res = check(text, constraints, prompt)
            if all(res):
                break
        if all(res) and basic_check(text, min_chars) is None and (best is None or len(done) < best[0]):
            best = (len(done), text, done, res)
    details = {"checkers": [{"id": c["id"], "kwargs": c["kwargs"]} for c in constraints],
               "samples": len(samples), "usable": len(usable), "passed_unrepaired": unrepaired}
    if best is None:
        return None, Check(False, "ifeval_checkers", "constraint_failed" if usable else "no_usable_sample", details)
    return best[1], Check(True, "ifeval_checkers", "", {**details, "repaired": best[2]})
