"""``loop compare``: two runs' handed-over students, paired on the items both were evaluated on."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from evalsuite.records import read_jsonl
from evalsuite.samples import sample_key
from evalsuite.stats import paired_diff
from loop.figures import state


class CompareError(Exception):
    pass


def handed_over(run_dir: Path) -> tuple[Path, dict]:
    """The eval dir of the student a run handed over (state.json ``final.measured_at``)."""
    if not (Path(run_dir) / "state.json").exists():
        raise CompareError(f"no run directory at {run_dir} (no state.json)")
    st = state(run_dir)
    fin = st.get("final")
    if not fin:
        raise CompareError(f"{run_dir}: no handed-over student yet (state.json has no 'final'; "
                           f"status {st.get('status', 'unknown')!r})")
    d = Path(run_dir) / fin["measured_at"] / "eval"
    if not (d / "samples.jsonl").exists():
        raise CompareError(f"{run_dir}: {d} has no samples.jsonl")
    return d, fin


def compare_runs(run_a: Path, run_b: Path, split: str = "test") -> dict:
    """B − A on the items both handed-over students were evaluated on: per task and over all items,
    the paired difference, 95% CI, exact McNemar p and MDE. ``mismatch`` describes items one run
    has and the other has not (or whose prompt/target differ); those are left out of the pairing."""
    (da, fa), (db, fb) = handed_over(run_a), handed_over(run_b)
    sa = [s for s in read_jsonl(da / "samples.jsonl") if s["split"] == split]
    sb = [s for s in read_jsonl(db / "samples.jsonl") if s["split"] == split]
    ia = {sample_key(s): (s["prompt"], str(s["target"])) for s in sa}
    ib = {sample_key(s): (s["prompt"], str(s["target"])) for s in sb}
    differ = {k for k in ia.keys() & ib.keys() if ia[k] != ib[k]}
    only_a, only_b = sorted(ia.keys() - ib.keys()), sorted(ib.keys() - ia.keys())
    same = (ia.keys() & ib.keys()) - differ
    mismatch = None
    if only_a or only_b or differ:
        mismatch = {"only_a": only_a, "only_b": only_b, "different_text": sorted(differ), "shared": len(same)}
    if not same:
        raise CompareError(f"the two runs share no {split} item (A has {len(ia)}, B has {len(ib)}, "
                           f"{len(differ)} with the same id but a different prompt or target): "
                           "they evaluated different benchmarks or suite versions")
    keep = lambda rows: [s for s in rows if sample_key(s) in same]  # noqa: E731
    ka, kb = keep(sa), keep(sb)

    def acc(rows: list[dict]) -> dict:
        by = defaultdict(list)
        for s in rows:
            by[s["task"]].append(float(s["correct"]))
            by["_all"].append(float(s["correct"]))
        return {t: sum(v) / len(v) for t, v in by.items()}

    return {"a": {"run": str(run_a), "measured_at": fa["measured_at"], "eval_dir": str(da), "acc": acc(ka)},
            "b": {"run": str(run_b), "measured_at": fb["measured_at"], "eval_dir": str(db), "acc": acc(kb)},
            "split": split, "diff": paired_diff(ka, kb, split=split, overall=True), "mismatch": mismatch}


def compare_text(c: dict) -> str:
    a, b = c["a"], c["b"]
    lines = [f"A: {a['run']}  (handed over: {a['measured_at']})",
             f"B: {b['run']}  (handed over: {b['measured_at']})", ""]
    m = c["mismatch"]
    if m:
        lines += [f"WARNING: the runs evaluated different {c['split']} items: {len(m['only_a'])} only in A, "
                  f"{len(m['only_b'])} only in B, {len(m['different_text'])} with the same id but a different "
                  f"prompt or target. Compared on the {m['shared']} shared items only.",
                  *(f"  e.g. {label}: {', '.join(keys[:5])}" for label, keys in
                    (("only in A", m["only_a"]), ("only in B", m["only_b"]), ("different text", m["different_text"]))
                    if keys), ""]
    lines.append(f"B − A on the same {c['split']} items (paired; 95% bootstrap CI, exact McNemar p, "
                 "minimum detectable effect at 80% power):")
    head = ("task", "n", "A", "B", "B − A", "95% CI", "p (McNemar)", "MDE", "A✓B✗", "A✗B✓")
    rows = []
    for task in sorted(c["diff"], key=lambda t: (t == "_all", t)):
        d = c["diff"][task]
        rows.append(("all items" if task == "_all" else task, str(d["n"]), f"{a['acc'][task]:.3f}",
                     f"{b['acc'][task]:.3f}", f"{d['diff']:+.3f}", f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]",
                     "" if d["p_mcnemar"] is None else f"{d['p_mcnemar']:.3f}", f"{d['mde']:.3f}",
                     str(d["b"]), str(d["c"])))
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines += [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    return "\n".join(lines)
