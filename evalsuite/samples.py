"""lm-eval's logged samples -> the suite's flat per-item rows, and per-task summaries.

Works on the plain dicts lm-eval returns (``results["samples"][task]``), so it needs no
lm-eval import and is tested on hand-written samples.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable

from evalsuite.split import SPLITS, assign_split
from evalsuite.stats import score_summary

ID_FIELDS = ("id", "task_id", "key")


def sample_key(row: dict) -> str:
    """``task/doc_id``: how every stage names an eval item (tags, diagnoses, deficiency examples)."""
    return f"{row['task']}/{row['doc_id']}"


def split_rows(rows: list[dict], split: str = "dev") -> tuple[list[dict], list[dict]]:
    """(the split's rows, those of them scored wrong): the failures diagnosis works on."""
    part = [r for r in rows if r["split"] == split]
    return part, [r for r in part if not r["correct"]]


def mean_score(results: dict, split: str = "test") -> float:
    """The headline of a ``results.json``: the unweighted mean over tasks of a split's score."""
    vals = [t[split]["score"] for t in results["tasks"].values() if t.get(split, {}).get("n")]
    return round(sum(vals) / len(vals), 4) if vals else 0.0


def stable_doc_id(doc: dict, index: int) -> str:
    """The doc's own id when it has one (stable when the data is reordered), else its position."""
    for f in ID_FIELDS:
        if isinstance(doc, dict) and doc.get(f) is not None:
            return str(doc[f])
    return str(index)


def plain(x: Any) -> Any:
    """JSON-safe copy: numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _first(x: Any) -> Any:
    while isinstance(x, (list, tuple)) and x:
        x = x[0]
    return x


def target_text(doc: dict, target: Any, choices: list[str] | None) -> str:
    if choices is not None and isinstance(target, int) and 0 <= target < len(choices):
        return choices[target]
    if isinstance(doc, dict) and "instruction_id_list" in doc:  # IFEval: the constraints are the target
        return json.dumps([{"id": i, "kwargs": k} for i, k in zip(doc["instruction_id_list"], doc["kwargs"])],
                          ensure_ascii=False)
    return target if isinstance(target, str) else json.dumps(plain(target), ensure_ascii=False)


def to_rows(task: str, samples: list[dict], *, primary_metric: str, prompt_of: Callable[[dict], str],
            choices_of: Callable[[dict], list[str] | None] = lambda d: None,
            filter_name: str | None = None, dev_ratio: float = 0.5, id_prefix: str = "") -> list[dict]:
    """One row per item: task, doc_id, split, prompt, target, response, extracted, correct, metrics."""
    if not samples:
        return []
    filters = list(dict.fromkeys(s.get("filter", "none") for s in samples))
    use = filter_name or filters[0]
    if use not in filters:
        raise KeyError(f"task {task!r}: filter {use!r} not among its filters {filters}")
    rows = []
    for s in samples:
        if s.get("filter", "none") != use:
            continue
        doc = s["doc"]
        names = s.get("metrics") or []
        if primary_metric not in names:
            raise KeyError(f"task {task!r}: primary metric {primary_metric!r} not among {names}")
        values = {m: plain(s[m]) for m in names}
        choices = choices_of(doc)
        if choices is not None:  # multiple choice: the response is the highest log-likelihood choice
            lls = [float(_first(r)) for r in s["resps"]]
            best = max(range(len(lls)), key=lls.__getitem__) if lls else -1
            response = extracted = choices[best] if 0 <= best < len(choices) else ""
        else:
            response = str(_first(s["resps"]) or "")
            extracted = _first(s["filtered_resps"])
            extracted = "" if extracted is None else str(extracted)
        score = float(values[primary_metric])
        doc_id = id_prefix + stable_doc_id(doc, s["doc_id"])
        row = {"task": task, "doc_id": doc_id, "split": assign_split(task, doc_id, dev_ratio),
               "prompt": prompt_of(doc), "target": target_text(doc, s.get("target"), choices),
               "response": response, "extracted": extracted, "correct": score >= 0.5,
               "metrics": values, "score": score}
        if choices is not None:
            row["choices"] = choices
        rows.append(row)
    return rows


def summarize(rows: list[dict], bootstrap: int = 1000, seed: int = 0) -> dict:
    """Per task: the primary metric's mean with a bootstrap CI, for each split and overall."""
    out: dict[str, dict] = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        entry = {sp: score_summary([r["score"] for r in mine if r["split"] == sp], n=bootstrap, seed=seed)
                 for sp in SPLITS}
        entry["all"] = score_summary([r["score"] for r in mine], n=bootstrap, seed=seed)
        out[task] = entry
    return out


def format_table(tasks: dict) -> str:
    """Plain-text table: task × split, score with 95% CI and item count."""
    def cell(s: dict) -> str:
        if not s or s["n"] == 0 or math.isnan(s["score"]):
            return "-"
        return f"{s['score']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] n={s['n']}"

    header = ("task", "metric", "dev", "test")
    lines = [(t, v.get("metric", ""), cell(v.get("dev")), cell(v.get("test"))) for t, v in tasks.items()]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*l) for l in lines])
