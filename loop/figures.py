"""The figures that compare rounds, computed from a run directory's files alone.

Used by the HTML report (``loop/html_report.py``) and by the W&B tables (``loop/run.py``
``_track``), so both show the same figures. Every function reads files only, so it works on a live, finished
or copied run. Vocabulary, as in state.json: *round r* is the adapter round r trained (measured at
the start of round r+1 or in ``final/``); *base* is the student round 0 started from.
"""
from __future__ import annotations

import functools
import logging
from collections import defaultdict
from pathlib import Path
from typing import Callable

from evalsuite.records import read_json, read_jsonl
from evalsuite.samples import mean_score, sample_key, split_rows

log = logging.getLogger(__name__)

TEACHER_STAGES = ("tag", "diagnose", "synthesize")
CONTROL_STAGES = ("control_synth", "control_data", "control_train", "control_eval")   # control_synth: untargeted only
ROUND_STAGES = ("eval", "tag", "diagnose", "synthesize", "retrieve", "mix", "train", *CONTROL_STAGES)
UNTAGGED = "(untagged)"
MIN_TEACHER_S = 60.0   # points per teacher-hour needs at least this much teacher time to mean anything


# ------------------------------------------------------------------ the run's shape

def state(run_dir: Path) -> dict:
    path = Path(run_dir) / "state.json"
    return read_json(path) if path.exists() else {"rounds": {}}


def tracked_rounds(st: dict) -> list[int]:
    """Rounds whose adapter has been measured (state.json ``rounds``), in order."""
    return sorted(int(r) for r in st.get("rounds", {}))


def round_dirs(run_dir: Path) -> list[int]:
    return sorted(int(p.name[6:]) for p in Path(run_dir).glob("round_[0-9][0-9][0-9]") if p.is_dir())


def students(run_dir: Path, st: dict | None = None) -> list[tuple[str, Path]]:
    """(label, eval dir) of every student measured: ``base`` then ``round r`` (its outcome)."""
    run_dir = Path(run_dir)
    st = st if st is not None else state(run_dir)
    out = []
    if (run_dir / "round_000" / "eval" / "results.json").exists():
        out.append(("base", run_dir / "round_000" / "eval"))
    for r in tracked_rounds(st):
        d = run_dir / st["rounds"][str(r)]["outcome"]
        if (d / "results.json").exists():
            out.append((f"round {r}", d))
    return out


def students_upto(run_dir: Path, r: int, outcome: Path) -> list[tuple[str, Path]]:
    """The students measured up to round r's, with round r's at ``outcome``: what W&B's step r
    shows (state.json may not hold round r yet, or, on a resumed run, may hold later rounds)."""
    earlier = [(lab, d) for lab, d in students(run_dir) if lab == "base" or int(lab.split()[1]) < r]
    return earlier + [(f"round {r}", Path(outcome))]


def _done(run_dir: Path, where: str, stage: str) -> dict:
    p = Path(run_dir) / where / stage / "DONE"
    return read_json(p) if p.exists() else {}


# ------------------------------------------------------------------ scores per round

def score_series(run_dir: Path, split: str = "test") -> dict:
    """Per task (and ``mean``): the base score and, per tracked round, the targeted adapter's and
    the control adapter's score with their 95% bootstrap CIs (``None`` where absent).

    ``{"labels": ["base", "round 0", ...], "tasks": {task: {"targeted": [(s, lo, hi)|None, ...],
    "control": [...]}}}``; index 0 is the base (the control arm has none there). ``mean`` is the
    unweighted mean over tasks, without a CI (results.json holds none for it)."""
    run_dir = Path(run_dir)
    st = state(run_dir)
    studs = students(run_dir, st)
    labels = [lab for lab, _ in studs]
    rounds = [None if lab == "base" else int(lab.split()[1]) for lab in labels]
    res = [read_json(d / "results.json") for _, d in studs]
    ctrl = []
    for r in rounds:
        p = run_dir / f"round_{r:03d}" / "control_eval" / "results.json" if r is not None else None
        ctrl.append(read_json(p) if p and p.exists() else None)
    tasks = sorted({t for x in res + [c for c in ctrl if c] for t in x["tasks"]})

    def point(x: dict | None, task: str):
        s = (x or {}).get("tasks", {}).get(task, {}).get(split)
        return (s["score"], s["ci_low"], s["ci_high"]) if s and s.get("n") else None

    out = {t: {"targeted": [point(x, t) for x in res], "control": [point(c, t) for c in ctrl]} for t in tasks}
    out["mean"] = {"targeted": [(mean_score(x, split),) * 3 for x in res],
                   "control": [(mean_score(c, split),) * 3 if c else None for c in ctrl]}
    return {"labels": labels, "tasks": out}


def flags(info: dict) -> dict[str, list[str]]:
    """Per task of a state.json round: ``regression`` (paired change against the round's start below
    zero beyond its CI) and ``below control`` (the same against the control arm)."""
    out: dict[str, list[str]] = {}
    for task in info.get("vs_start", {}):
        out[task] = [w for w, d in (("regression", info["vs_start"].get(task)),
                                    ("below control", info.get("vs_control", {}).get(task)))
                     if d and d["ci_high"] < 0]
    return out


# ------------------------------------------------------------------ tags

def dev_tags(run_dir: Path) -> dict[str, list[str]]:
    """``task/doc_id`` -> macro tags, from every round's tag stage (the tag stage tags dev items)."""
    tags: dict[str, list[str]] = {}
    for p in sorted(Path(run_dir).glob("round_*/tag/tags.jsonl")):
        for row in read_jsonl(p):
            tags[row["key"]] = list(row.get("macro") or []) or [UNTAGGED]
    return tags


def tag_matrix(run_dir: Path, split: str = "test", studs: list[tuple[str, Path]] | None = None) -> dict:
    """Accuracy per student (base, round r) × macro tag.

    ``dev``: each dev item counts under the macro tags the tag stage gave it. ``test``: test items
    are not tagged (the tag stage tags dev items only, to spend the teacher on what diagnosis
    uses), so a test item counts under its task's dev tags, weighted by their share among the
    task's tagged dev items (a task whose dev items are 3/4 Math and 1/4 Coding puts 3/4 of each
    test item's weight on Math). Returns ``{"labels", "tags", "acc": [[float|None]], "n": [[float]]}``
    (``n``: the items, or for test the weight, behind each cell)."""
    tags = dev_tags(run_dir)
    studs = students(run_dir) if studs is None else studs
    share: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key, macros in tags.items():
        for m in macros:
            share[key.split("/", 1)[0]][m] += 1.0 / len(macros)
    for task, d in share.items():
        tot = sum(d.values())
        for m in d:
            d[m] /= tot
    all_tags = sorted({m for ms in tags.values() for m in ms})
    acc, n = [], []
    for _, d in studs:
        right, weight = defaultdict(float), defaultdict(float)
        for row in read_jsonl(d / "samples.jsonl"):
            if row["split"] != split:
                continue
            if split == "dev":
                ws = {m: 1.0 for m in tags.get(sample_key(row), [UNTAGGED])}
            else:
                ws = share.get(row["task"]) or {UNTAGGED: 1.0}
            for m, w in ws.items():
                weight[m] += w
                right[m] += w * float(row["correct"])
        for m in weight:
            if m not in all_tags:
                all_tags.append(m)
        acc.append({m: right[m] / weight[m] for m in weight if weight[m] > 0})
        n.append(dict(weight))
    return {"labels": [lab for lab, _ in studs], "tags": all_tags, "split": split,
            "acc": [[a.get(m) for m in all_tags] for a in acc], "n": [[w.get(m, 0.0) for m in all_tags] for w in n]}


# ------------------------------------------------------------------ deficiencies and failures

def deficiencies(run_dir: Path, r: int) -> list[dict]:
    p = Path(run_dir) / f"round_{r:03d}" / "diagnose" / "deficiencies.json"
    return read_json(p).get("deficiencies", []) if p.exists() else []


def failed_dev(run_dir: Path, r: int, max_chars: int = 2000) -> list[dict]:
    """The failed dev items of the student round r started from (what its diagnosis saw), with
    their macro tags and the teacher's diagnosis where one was made."""
    rd = Path(run_dir) / f"round_{r:03d}"
    if not (rd / "eval" / "samples.jsonl").exists():
        return []
    tags = {row["key"]: row for row in read_jsonl(rd / "tag" / "tags.jsonl")} if (rd / "tag" / "tags.jsonl").exists() else {}
    diag = ({row["key"]: row for row in read_jsonl(rd / "diagnose" / "diagnoses.jsonl")}
            if (rd / "diagnose" / "diagnoses.jsonl").exists() else {})
    _, failures = split_rows(read_jsonl(rd / "eval" / "samples.jsonl"))
    out = []
    for s in failures:
        k = sample_key(s)
        d = diag.get(k, {})
        out.append({"task": s["task"], "doc_id": str(s["doc_id"]), "question": s["prompt"][:max_chars],
                    "target": str(s["target"])[:max_chars], "response": str(s["response"])[:max_chars],
                    "macro": ", ".join(tags.get(k, {}).get("macro", [])),
                    "ability": d.get("ability") or "", "error": d.get("error") or ""})
    return out


# ------------------------------------------------------------------ data mix

@functools.lru_cache(maxsize=4)
def _counter(model: str) -> tuple[Callable[[dict], int], str]:
    """(tokens of a record, how they were counted): the student's tokenizer (as the control arm
    counts), else characters / 4."""
    from synth.retrieve import token_counter

    if model and (Path(model).is_dir() or "/" in model and not Path(model).is_absolute()):
        try:
            return token_counter(model), "student tokenizer"
        except Exception as exc:  # a hub tokenizer not in the local cache, a broken folder
            log.info("token counts fall back to characters/4 (%s: %s)", model, exc)
    return token_counter(""), "characters / 4"


def token_counter(run_dir: Path) -> tuple[Callable[[dict], int], str]:
    p = Path(run_dir) / "round_000" / "eval" / "results.json"
    model = read_json(p).get("model", "") if p.exists() else ""   # the resolved student path or id
    return _counter(model)


def _source(rec: dict) -> str:
    src = rec.get("source", "")
    return "synth" if src.startswith("synth") else "pool" if src.startswith("pool") else src or "?"


def _query_macros(run_dir: Path, r: int) -> list[list[str]] | None:
    """The macro tags of each retrieval query of round r, in the retrieve stage's order (the failed
    dev items, or every dev item when none failed, then each deficiency's ability); None when the
    reconstruction does not match the stage's own query count."""
    rd = Path(run_dir) / f"round_{r:03d}"
    try:
        dev, failures = split_rows(read_jsonl(rd / "eval" / "samples.jsonl"))
        tags = {row["key"]: row.get("macro") or [] for row in read_jsonl(rd / "tag" / "tags.jsonl")}
    except FileNotFoundError:
        return None
    queries = [tags.get(sample_key(s), []) for s in (failures or dev)]
    queries += [d.get("macro", []) for d in deficiencies(run_dir, r)]
    n = _done(run_dir, f"round_{r:03d}", "retrieve").get("summary", {}).get("n_queries")
    return queries if n == len(queries) else None


def data_mix(run_dir: Path, r: int) -> dict:
    """Round r's new training data (``mix/train_data.jsonl``) and its control data, by source and
    macro tag: ``{"rows": [{"arm", "source", "macro", "records", "tokens"}], "counted_by", "replayed"}``.

    A synthesized record's macro tag is its first (the deficiency's main one); a retrieved pool
    record carries the macro tag of the query it was retrieved for (a failed dev item's or a
    deficiency's); control records are random pool records, untagged."""
    rd = Path(run_dir) / f"round_{r:03d}"
    count, how = token_counter(run_dir)
    qm = _query_macros(run_dir, r)
    agg: dict[tuple, list] = {}

    def add(arm: str, rec: dict, macro: str) -> None:
        a = agg.setdefault((arm, _source(rec), macro), [0, 0])
        a[0] += 1
        a[1] += count(rec)

    for rec in (read_jsonl(rd / "mix" / "train_data.jsonl") if (rd / "mix" / "train_data.jsonl").exists() else []):
        macros = (rec.get("tags") or {}).get("macro") or []
        q = (rec.get("meta") or {}).get("retrieval", {}).get("query_idx")
        if not macros and qm is not None and q is not None and 0 <= q < len(qm):
            macros = qm[q]
        add("targeted", rec, macros[0] if macros else UNTAGGED)
    for rec in (read_jsonl(rd / "control_data" / "train_data.jsonl")
                if (rd / "control_data" / "train_data.jsonl").exists() else []):
        add("control", rec, UNTAGGED)
    rows = [{"arm": arm, "source": src, "macro": m, "records": v[0], "tokens": v[1]}
            for (arm, src, m), v in sorted(agg.items(), key=lambda kv: (kv[0][0] != "targeted", kv[0][1], -kv[1][1]))]
    replayed = _done(run_dir, f"round_{r:03d}", "train").get("summary", {}).get("n_from_history", 0)
    return {"rows": rows, "counted_by": how, "replayed": replayed}


# ------------------------------------------------------------------ wall times and cost

def stage_times(run_dir: Path) -> dict[str, dict[str, float]]:
    """``{where: {stage: wall_s}}`` for every round directory and ``final``."""
    run_dir = Path(run_dir)
    out = {}
    for r in round_dirs(run_dir):
        where = f"round_{r:03d}"
        out[where] = {s: _done(run_dir, where, s)["wall_s"] for s in ROUND_STAGES if _done(run_dir, where, s)}
    if _done(run_dir, "final", "eval"):
        out["final"] = {"eval": _done(run_dir, "final", "eval")["wall_s"]}
    return out


def teacher_tokens(summary: dict) -> int | None:
    """Teacher tokens a stage recorded: the backend's prompt + completion count (``teacher``, what
    tag, diagnose and synthesize write), else the stage's own ``teacher_tokens``."""
    usage = summary.get("teacher") or {}
    if all(isinstance(usage.get(k), (int, float)) for k in ("prompt_tokens", "completion_tokens")):
        return int(usage["prompt_tokens"] + usage["completion_tokens"])
    n = summary.get("teacher_tokens")
    return int(n) if isinstance(n, (int, float)) else None


def eval_tokens(eval_dir: Path, count: Callable[[dict], int]) -> int:
    """Prompt + response tokens of every item an evaluation scored (the response re-tokenized)."""
    return sum(count({"messages": [{"role": "user", "content": s["prompt"]},
                                   {"role": "assistant", "content": str(s["response"])}]})
               for s in read_jsonl(Path(eval_dir) / "samples.jsonl"))


def cost(run_dir: Path, r: int, outcome: Path | None = None) -> dict:
    """Round r's cost: teacher stages (tokens where recorded, wall time), evaluation (the eval of the
    adapter it trained, at ``outcome`` or where state.json says: time and tokens), training (tokens,
    time), the control arm's time, and the test-mean change it bought per teacher hour (in points,
    i.e. ×100; None under ``MIN_TEACHER_S`` of teacher time)."""
    run_dir = Path(run_dir)
    where = f"round_{r:03d}"
    if outcome is None:
        info = state(run_dir).get("rounds", {}).get(str(r))
        outcome = run_dir / info["outcome"] if info else None
    count, how = token_counter(run_dir)
    teacher = [_done(run_dir, where, s) for s in TEACHER_STAGES]
    toks = [teacher_tokens(d.get("summary", {})) for d in teacher]
    tr = _done(run_dir, where, "train").get("summary", {})
    out = {"round": r, "teacher_s": round(sum(d.get("wall_s", 0.0) for d in teacher), 2),
           "teacher_tokens": sum(toks) if toks and all(t is not None for t in toks) else None,
           "train_s": _done(run_dir, where, "train").get("wall_s"), "train_tokens": tr.get("tokens_seen"),
           "control_s": round(sum(_done(run_dir, where, s).get("wall_s", 0.0)
                                  for s in CONTROL_STAGES), 2),
           "tokens_counted_by": how}
    start = run_dir / where / "eval" / "results.json"
    if outcome is not None and (Path(outcome) / "results.json").exists() and start.exists():
        outcome = Path(outcome)
        out["eval_s"] = read_json(outcome / "DONE")["wall_s"] if (outcome / "DONE").exists() else None
        out["eval_tokens"] = eval_tokens(outcome, count)
        out["delta_test_points"] = round(100 * (mean_score(read_json(outcome / "results.json"))
                                                - mean_score(read_json(start))), 3)
        out["points_per_teacher_hour"] = _per_hour(out["delta_test_points"], out["teacher_s"])
    return out


def _per_hour(points: float, teacher_s: float) -> float | None:
    return round(points / (teacher_s / 3600), 3) if teacher_s >= MIN_TEACHER_S else None


def cost_total(run_dir: Path, per_round: list[dict]) -> dict:
    """The run's whole cost, and the handed-over student's test-mean change over the base per teacher hour."""
    st = state(run_dir)
    teacher_s = sum(c["teacher_s"] for c in per_round)
    out = {"teacher_s": round(teacher_s, 2),
           "total_s": round(sum(sum(v.values()) for v in stage_times(run_dir).values()), 2)}
    base = Path(run_dir) / "round_000" / "eval" / "results.json"
    fin = st.get("final")
    if fin and base.exists():
        out["delta_test_points"] = round(100 * (fin["test_mean"] - mean_score(read_json(base))), 3)
        out["points_per_teacher_hour"] = _per_hour(out["delta_test_points"], teacher_s)
    return out


# ------------------------------------------------------------------ W&B tables

def round_tables(run_dir: Path, r: int, outcome: Path) -> dict[str, tuple[list[str], list[list]]]:
    """W&B's tables for step r, ``{name: (columns, rows)}``: round r's deficiencies, the failed dev
    items its diagnosis saw, its data mix, and the student × macro-tag accuracy matrix up to round
    r's adapter (at ``outcome``)."""
    defs = [[r, i + 1, d.get("ability", ""), d.get("error", ""), d.get("count", 0), d.get("impact", 0.0),
             ", ".join(d.get("tasks", [])), ", ".join(d.get("macro", [])), ", ".join(d.get("examples", []))]
            for i, d in enumerate(deficiencies(run_dir, r))]
    failed = [[r, f["task"], f["doc_id"], f["question"], f["target"], f["response"], f["macro"], f["ability"], f["error"]]
              for f in failed_dev(run_dir, r)]
    mix = [[r, x["arm"], x["source"], x["macro"], x["records"], x["tokens"]] for x in data_mix(run_dir, r)["rows"]]
    studs = students_upto(run_dir, r, outcome)
    tags = []
    for split in ("test", "dev"):
        m = tag_matrix(run_dir, split, studs)
        for label, accs, ns in zip(m["labels"], m["acc"], m["n"]):
            tags += [[label, -1 if label == "base" else int(label.split()[1]), tag, split, a, round(n, 3)]
                     for tag, a, n in zip(m["tags"], accs, ns) if a is not None]
    return {"tables/deficiencies": (["round", "rank", "ability", "error", "count", "impact", "tasks", "macro_tags",
                                     "examples"], defs),
            "tables/failed_dev_samples": (["round", "task", "doc_id", "question", "target", "response", "macro_tags",
                                           "diagnosed_ability", "diagnosed_error"], failed),
            "tables/data_mix": (["round", "arm", "source", "macro_tag", "records", "tokens"], mix),
            "tables/tag_scores": (["student", "round", "macro_tag", "split", "accuracy", "n"], tags)}
