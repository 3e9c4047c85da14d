"""Stage 3, diagnose: the teacher explains each failed dev item; explanations merge into a ranked list.

For every failure the teacher sees the question, ground truth, the student's output and the
scorer's evidence (``evalsuite.evidence``: the failed checker ids, the failing assert, expected
vs given number and the last operation; ``diagnose.j2``) and writes, in one call, ``Error:`` (the
mistake), ``Shortcut:`` (what the student did instead of the work the question needed — the
shortcut that induced the error) and ``Ability:`` (what is missing). Grouping goes on the evidence first: items
whose evidence names the problem by itself (a failed checker id, a NameError, no number given)
form one deficiency per task and key, named from the evidence, whatever the teacher said — an
item whose answer did not parse still counts there; items with family-level evidence (an
assertion failed, a wrong number) or none are grouped within their key by the similarity of
their normalised ability text (and fine tags). Deficiencies are ranked by score impact: the
share of each task's dev items the deficiency loses, averaged over the suite's tasks.

Writes ``diagnoses.jsonl`` (one row per item, raw teacher text and parse status),
``deficiencies.json`` (``{"deficiencies": [...], "stats": {...}}``) and ``report.md``.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from evalsuite import evidence as scorer_evidence
from evalsuite.records import content_hash, write_json, write_jsonl
from evalsuite.samples import sample_key
from synth import parse
from synth.embed import DEFAULT_EMBEDDER
from synth.llm.base import LLM, Sampling
from synth.prompts import render_chat, with_prefill
from synth.tagging import stem_word

log = logging.getLogger(__name__)


@dataclass
class DiagnoseConfig:
    max_items: int = 64            # failed dev items shown to the teacher (spread over tasks)
    top_k: int = 10                # deficiencies kept in the ranked list
    max_chars: int = 700           # of question / student output shown (question keeps its tail)
    max_new_tokens: int = 96       # three short lines: error, shortcut, ability
    temperature: float = 0.0
    merge_by: Literal["embedding", "words"] = "embedding"  # how the teacher's abilities are compared
    merge_threshold: float = 0.5   # words: 0.7·Jaccard(stems) + 0.3·Jaccard(tags) at which two count as one
    embed_threshold: float = 0.6   # embedding: 0.7·cosine + 0.3·Jaccard(tags) at which two count as one
    embedder: str = DEFAULT_EMBEDDER
    examples_per_deficiency: int = 5
    fallback_to_tags: bool = False  # an unparseable answer falls back to the item's first fine tag
    prompts_dir: str | None = None


_FILLER = {"the", "a", "an", "of", "to", "and", "in", "on", "for", "with", "ability", "skill", "student",
           "lack", "missing", "understanding", "knowledge", "how", "correctly", "correct", "proper", "properly",
           "basic", "good", "it", "is", "are", "be", "that", "this", "their", "its", "not"}


def ability_words(text: str) -> frozenset[str]:
    """Content-word stems of an ability phrase: what grouping compares."""
    return frozenset(w for w in (stem_word(x) for x in re.findall(r"[a-z0-9+#]+", text.lower()))
                     if w not in _FILLER)


def _jaccard(a: frozenset | set, b: frozenset | set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


# ------------------------------------------------------------------ the three pieces
def format_input(failure: dict, cfg: DiagnoseConfig) -> dict:
    q = str(failure.get("prompt", "")).strip()
    if len(q) > cfg.max_chars:  # lm-eval prompts may carry few-shot examples: the question is last
        q = "... " + q[-cfg.max_chars:]
    target = failure.get("target", "")
    target = ", ".join(map(str, target)) if isinstance(target, list) else str(target)
    resp = str(failure.get("response", "")).strip() or "(empty)"
    if len(resp) > cfg.max_chars:
        resp = resp[: cfg.max_chars] + " ..."
    return {"question": q, "target": target.strip()[: cfg.max_chars], "response": resp,
            "evidence": scorer_evidence.describe(failure.get("evidence"))[: cfg.max_chars]}


_SHORTCUT_KEYS = ["Shortcut", "Shortcut taken", "Shortcut used"]


def parse_diagnosis(answer: str) -> dict | None:
    """``{"ability", "error", "shortcut"}`` from ``Ability:``/``Error:``/``Shortcut:`` lines or JSON;
    None without an ability (an answer without a shortcut line keeps ``shortcut`` empty)."""
    kv = parse.parse_key_values(answer, ["Ability", "Missing ability", "Skill", "Error", "Mistake",
                                         *_SHORTCUT_KEYS]) or {}
    ability = kv.get("Ability") or kv.get("Missing ability") or kv.get("Skill")
    error = kv.get("Error") or kv.get("Mistake") or ""
    shortcut = next((kv[k] for k in _SHORTCUT_KEYS if kv.get(k)), "")
    if not ability:
        js = parse.parse_json(answer, dict) or {}
        ability, error = js.get("ability") or js.get("missing_ability"), js.get("error") or error
        shortcut = js.get("shortcut") or shortcut
    if not ability or not isinstance(ability, str):
        return None
    ability, prev = re.split(r"(?<=[a-z0-9])\.\s|\n", ability.strip())[0], None
    while ability != prev:  # quotes, dots and any whitespace (a tab, U+3000) around the phrase
        prev, ability = ability, ability.strip().strip(".\"'")
    # an echoed calculation ('48 + 24 = 62') or answer is not an ability
    if not ability_words(ability) or not parse.looks_like_label(ability, 12) \
            or re.search(r"[=]|\d\s*[-+*/x]\s*\d", ability):
        return None
    return {"ability": ability, "error": str(error).strip(), "shortcut": _sentence(str(shortcut))}


def _sentence(text: str) -> str:
    """The first sentence, its full stop kept."""
    return re.split(r"(?<=[a-z0-9\"']\.)\s", text.strip())[0].strip()


def _error_of(answer: str) -> str | None:
    """The mistake sentence of a first-step answer (for the 'name the skill' second step)."""
    kv = parse.parse_key_values(answer, ["Error", "Mistake", "Correct answer", "Student answer", "Ability",
                                         *_SHORTCUT_KEYS]) or {}
    err = (kv.get("Error") or kv.get("Mistake") or "").strip()
    err = re.split(r"(?<=[a-z0-9\"'])\.\s", err)[0].strip()
    return err if len(err.split()) >= 3 else None


def _shortcut_of(answer: str) -> str:
    kv = parse.parse_key_values(answer, ["Error", "Mistake", "Ability", *_SHORTCUT_KEYS]) or {}
    return _sentence(next((kv[k] for k in _SHORTCUT_KEYS if kv.get(k)), ""))


# ------------------------------------------------------------------ the stage
def _select(failures: list[dict], n: int) -> list[dict]:
    """Up to ``n`` items, round-robin over tasks in a fixed hashed order (balanced, deterministic)."""
    by_task: dict[str, list[dict]] = {}
    for f in sorted(failures, key=lambda f: content_hash(f["task"], str(f["doc_id"]))):
        by_task.setdefault(f["task"], []).append(f)
    out, queues = [], [by_task[t] for t in sorted(by_task)]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _evidence_key(row: dict) -> tuple[str | None, bool]:
    ev = row.get("evidence") or {}
    return ev.get("key"), bool(ev.get("specific"))


def _merge(rows: list[dict], cfg: DiagnoseConfig) -> list[list[dict]]:
    """Evidence first: rows with the same specific evidence key (per task) form one group; the rest
    are grouped greedily by what the teacher said, never across evidence keys: a diagnosis joins
    the most similar group whose seed it matches enough (embedding cosine of the ability phrases,
    or their content-word stems; blended with the items' fine tags)."""
    by_key: dict[tuple, list[dict]] = {}
    rest = []
    for r in rows:
        key, specific = _evidence_key(r)
        if key and specific:
            by_key.setdefault((r["task"], key), []).append(r)
        elif r.get("ability"):
            rest.append(r)
    if cfg.merge_by == "embedding" and rest:
        from synth.embed import embed_texts

        vecs = embed_texts([r["ability"] for r in rest], cfg.embedder)
        feats, threshold = list(vecs), cfg.embed_threshold

        def sim_of(a, b) -> float:
            return float(np.dot(a, b))
    else:
        feats, threshold = [ability_words(r["ability"]) for r in rest], cfg.merge_threshold
        sim_of = _jaccard
    groups: list[tuple[str | None, object, set, list[dict]]] = []
    for r, feat in zip(rest, feats):
        key = _evidence_key(r)[0]
        tags = set(r["tags"].get("fine", []))
        best, best_sim = None, 0.0
        for g in groups:
            if g[0] != key:
                continue
            sim = sim_of(feat, g[1])
            if tags and g[2]:   # an item never tagged is unknown there, not unlike
                sim = 0.7 * sim + 0.3 * _jaccard(tags, g[2])
            if sim > best_sim:
                best, best_sim = g, sim
        if best is not None and best_sim >= threshold:
            best[3].append(r)
        else:
            groups.append((key, feat, tags, [r]))
    return list(by_key.values()) + [g[3] for g in groups]


def _deficiency(members: list[dict], task_sizes: dict[str, int], scale: dict[str, float], n_tasks: int,
                cfg: DiagnoseConfig) -> dict:
    key, specific = _evidence_key(members[0])
    named = [m for m in members if m.get("ability")]
    if specific:   # the evidence is the finding: it names the deficiency; the teacher's words stay beside it
        top_norm, rep = key, {"ability": scorer_evidence.humanize(key), "error": next(
            (m["error"] for m in named if m.get("error")), ""), "shortcut": next(
            (m["shortcut"] for m in named if m.get("shortcut")), "")}
    else:
        norm = Counter(" ".join(sorted(ability_words(m["ability"]))) for m in named)
        top_norm = norm.most_common(1)[0][0]
        rep = next(m for m in named if " ".join(sorted(ability_words(m["ability"]))) == top_norm)
    errors = [m["error"] for m in members if m.get("error")]
    shortcuts = [m["shortcut"] for m in members if m.get("shortcut")]
    tags = Counter(t for m in members for t in m["tags"].get("fine", []))
    macro = Counter(t for m in members for t in m["tags"].get("macro", []))
    per_task = Counter(m["task"] for m in members)
    # each diagnosed item stands for scale[t] failures of its task when only a sample was diagnosed
    impact_by_task = {t: min(1.0, c * scale[t] / max(task_sizes[t], 1)) for t, c in sorted(per_task.items())}
    return {
        "id": "def-" + content_hash(f"{members[0]['task']}/{top_norm}" if specific else top_norm, n=10),
        "ability": rep["ability"],
        "error": rep["error"] or (errors[0] if errors else ""),
        "shortcut": rep.get("shortcut") or (shortcuts[0] if shortcuts else ""),
        "count": len(members),
        "tags": [t for t, _ in tags.most_common(5)],
        "macro": [t for t, _ in macro.most_common(2)],
        "examples": [m["key"] for m in members[: cfg.examples_per_deficiency]],
        "tasks": sorted(per_task),
        "impact": round(sum(impact_by_task.values()) / max(n_tasks, 1), 6),
        "impact_by_task": {t: round(v, 6) for t, v in impact_by_task.items()},
        "errors": list(dict.fromkeys(errors))[:3],
        "shortcuts": list(dict.fromkeys(shortcuts))[:3],
        # the scorer's findings on its items (expected vs given number, the failing assert, the failed
        # checkers), one line each as the teacher saw them: what synthesis aims its instructions at
        "evidence": {"key": key, "specific": specific,
                     "items": sum(1 for m in members if m.get("evidence")),
                     "checks": _checks(members),
                     "findings": list(dict.fromkeys(scorer_evidence.describe(m["evidence"])
                                                    for m in members if m.get("evidence")))[:3]} if key else None,
        "teacher_abilities": list(dict.fromkeys(m["ability"] for m in named))[:3],
    }


def _checks(members: list[dict]) -> list[dict]:
    """The failed checkers (id + kwargs) behind a deficiency, most frequent first: what synthesis can
    build instructions around."""
    seen: Counter = Counter()
    first: dict[str, dict] = {}
    for m in members:
        for c in (m.get("evidence") or {}).get("failed", []):
            k = c["id"] + " " + str(sorted(c["kwargs"].items()))
            seen[k] += 1
            first.setdefault(k, c)
    return [first[k] for k, _ in seen.most_common(5)]


def diagnose(llm: LLM, failures: list[dict], tags: dict[str, dict], cfg: DiagnoseConfig, out_dir: Path,
             task_sizes: dict[str, int] | None = None) -> dict:
    """Diagnose failed dev items (``evalsuite.samples.split_rows``) and write the ranked
    deficiencies; return stats.

    ``task_sizes`` is each task's number of dev items (the impact denominator); without it
    the number of failures of that task is used, so impact becomes a share of failures.
    """
    out_dir = Path(out_dir)
    for i, f in enumerate(failures):
        missing = [k for k in ("task", "doc_id", "prompt", "target", "response") if k not in f]
        if missing:
            raise ValueError(f"diagnose: failure #{i} is missing key(s) {missing} "
                             f"(expected an eval sample row from samples.jsonl)")
    stats = {"failures": len(failures)}
    chosen = _select(failures, cfg.max_items)
    fail_counts = Counter(f["task"] for f in failures)
    sizes = {t: (task_sizes or {}).get(t, fail_counts[t]) for t in fail_counts}
    n_tasks = len(set(task_sizes or {}) | set(fail_counts))
    chosen_counts = Counter(f["task"] for f in chosen)
    scale = {t: fail_counts[t] / chosen_counts[t] for t in chosen_counts}

    prompts = [render_chat("diagnose", cfg.prompts_dir, **format_input(f, cfg)) for f in chosen]
    answers = llm.generate(prompts, Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                             stop=["\n\n"])) if prompts else []
    answers = [with_prefill(p, a) for p, a in zip(prompts, answers)]
    # step 2: an answer with a mistake but no usable ability gets a short 'name the skill' prompt
    errors = [_error_of(a) if parse_diagnosis(a) is None else None for a in answers]
    second = [i for i, e in enumerate(errors) if e]
    if second:
        p2 = [render_chat("ability", cfg.prompts_dir, error=errors[i]) for i in second]
        a2 = llm.generate(p2, Sampling(max_new_tokens=24, temperature=cfg.temperature, stop=["\n"]))
    step2 = {i: with_prefill(p, a) for i, p, a in zip(second, p2, a2)} if second else {}
    rows, parsed_rows, fallbacks = [], [], 0
    for i, (f, ans, err) in enumerate(zip(chosen, answers, errors)):
        key = sample_key(f)
        item_tags = tags.get(key, {"fine": [], "macro": []})
        d, source = parse_diagnosis(ans), "teacher"
        if d is None and i in step2:
            d, source = parse_diagnosis(step2[i]), "teacher-2step"
            if d:   # the step-2 answer holds only the ability
                d.update(error=err, shortcut=_shortcut_of(ans))
            ans = ans + "\n[step 2] " + step2[i]
        source = source if d else None
        if d is None and cfg.fallback_to_tags and item_tags.get("fine"):
            d, source = {"ability": item_tags["fine"][0], "error": "", "shortcut": ""}, "tags"
            fallbacks += 1
        row = {"key": key, "task": f["task"], "doc_id": f["doc_id"], "parsed": bool(source and source != "tags"),
               "source": source, "ability": (d or {}).get("ability"), "error": (d or {}).get("error"),
               "shortcut": (d or {}).get("shortcut") or "", "tags": item_tags, "evidence": f.get("evidence"), "raw": ans}
        rows.append(row)
        if d or _evidence_key(row)[1]:    # a specific finding counts even when the teacher's answer did not parse
            parsed_rows.append(row)
    groups = _merge(parsed_rows, cfg)
    defs = [_deficiency(g, sizes, scale, n_tasks, cfg) for g in groups]
    defs.sort(key=lambda d: (-d["impact"], -d["count"], d["ability"]))
    seen: Counter = Counter()
    for d in defs:  # ids stay unique even if two groups share a representative ability
        seen[d["id"]] += 1
        if seen[d["id"]] > 1:
            d["id"] += f"-{seen[d['id']]}"
    n_parsed = sum(r["parsed"] for r in rows)
    stats.update({"diagnosed": len(rows), "parsed": n_parsed, "parse_failures": len(rows) - n_parsed,
                  "parsed_in_step2": sum(r["source"] == "teacher-2step" for r in rows),
                  "parse_rate": n_parsed / len(rows) if rows else None, "fallback_from_tags": fallbacks,
                  "with_evidence": sum(bool(r["evidence"]) for r in rows),
                  "evidence_keys": dict(Counter(r["evidence"]["key"] for r in rows if r["evidence"]).most_common()),
                  "grouped_by_evidence": sum(1 for d in defs if (d["evidence"] or {}).get("specific")),
                  "groups": len(defs), "deficiencies": min(len(defs), cfg.top_k)})
    kept = defs[: cfg.top_k]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "diagnoses.jsonl", rows)
    write_json(out_dir / "deficiencies.json", {"deficiencies": kept, "stats": stats})
    (out_dir / "report.md").write_text(_report(kept, rows, stats), encoding="utf-8")
    log.info("diagnose: %d items, %d parsed, %d deficiencies", len(rows), n_parsed, len(kept))
    return stats


def _cell(s: str, n: int = 80) -> str:
    s = " ".join(str(s).split()).replace("|", "/")
    return s if len(s) <= n else s[: n - 1] + "…"


def _report(defs: list[dict], rows: list[dict], stats: dict) -> str:
    lines = ["# Diagnosis", "",
             f"{stats['failures']} failures given, {stats['diagnosed']} diagnosed, {stats['parsed']} parsed "
             f"({stats['parse_failures']} unparseable), {stats['groups']} groups, {len(defs)} kept.", ""]
    if not defs:
        lines.append("No deficiencies (no failed dev items, or no parseable diagnosis).")
    else:
        lines += ["| # | ability | error | shortcut | count | impact | tasks | tags | examples |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for i, d in enumerate(defs, 1):
            lines.append(f"| {i} | {_cell(d['ability'], 60)} | {_cell(d['error'])} | {_cell(d.get('shortcut', ''))} | "
                         f"{d['count']} | "
                         f"{d['impact']:.3f} | {', '.join(d['tasks'])} | {_cell(', '.join(d['tags']), 60)} | "
                         f"{_cell(', '.join(d['examples']), 60)} |")
    bad = [r for r in rows if not r["parsed"]][:5]
    if bad:
        lines += ["", "## Unparseable teacher answers (first 5)", ""]
        lines += [f"- `{r['key']}`: {_cell(r['raw'], 160)}" for r in bad]
    return "\n".join(lines) + "\n"
