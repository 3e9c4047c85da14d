"""The local report: round-by-round scores and stage times, as text (`loop status`), as
``<run>/report.md`` and as ``<run>/report.html`` (``loop/html_report.py``: plots and the tables
that compare rounds). Reads only the run directory, so it works on a live or dead run."""
from __future__ import annotations

import logging
from pathlib import Path

from evalsuite.records import read_json, read_jsonl
from evalsuite.samples import mean_score
from evalsuite.stats import paired_diff
from loop import figures
from loop.artifacts import RunDir

log = logging.getLogger(__name__)
STAGES = ("eval", "tag", "diagnose", "synthesize", "retrieve", "mix", "train")
CONTROL = ("control_data", "control_train", "control_eval")


def _rounds(run_dir: Path) -> list[str]:
    names = sorted(p.name for p in run_dir.glob("round_*") if p.is_dir())
    if (run_dir / "final").is_dir():
        names.append("final")
    return names


def _scores(run_dir: Path, where: str) -> dict | None:
    path = run_dir / where / "eval" / "results.json"
    return read_json(path) if path.exists() else None


def status_text(run_dir: Path) -> str:
    rd = RunDir(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    st = rd.state()
    lines = [f"run {st.get('name', run_dir.name)} at {run_dir}  status={st.get('status', '?')}  "
             f"rounds planned={st.get('rounds_planned', '?')}"]
    for where in _rounds(run_dir):
        stages = ("eval",) if where == "final" else STAGES + tuple(
            c for c in CONTROL if rd.stage_status(where, c)[0] != "pending")
        cells = []
        for s in stages:
            state, info = rd.stage_status(where, s)
            cells.append(f"{s}:{state}" + (f"({info.get('wall_s', 0):.0f}s)" if state == "done" else ""))
        lines.append(f"{where:10s} " + "  ".join(cells))
        res = _scores(run_dir, where)
        if res:
            for task, t in sorted(res["tasks"].items()):
                parts = [f"{sp} {t[sp]['score']:.3f} [{t[sp]['ci_low']:.3f}, {t[sp]['ci_high']:.3f}] n={t[sp]['n']}"
                         for sp in ("dev", "test") if sp in t]
                lines.append(f"{'':10s}   {task:28s} " + " | ".join(parts))
    return "\n".join(lines)


def paired_vs_first(run_dir: Path) -> list[str]:
    """Each later round (and final) against round 0 on the same test items: paired difference + 95% CI."""
    evals = [w for w in _rounds(run_dir) if (run_dir / w / "eval" / "samples.jsonl").exists()]
    if len(evals) < 2:
        return []
    base = read_jsonl(run_dir / evals[0] / "eval" / "samples.jsonl")
    lines = ["| vs round_000 | task | diff | 95% CI | n |", "|---|---|---|---|---|"]
    for where in evals[1:]:
        for task, d in paired_diff(base, read_jsonl(run_dir / where / "eval" / "samples.jsonl")).items():
            lines.append(f"| {where} | {task} | {d['diff']:+.3f} | [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {d['n']} |")
    return lines


def _ci(d: dict) -> str:
    return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def round_table(st: dict) -> list[str]:
    """Per round: the adapter it trained against its control and against its starting point
    (test items, paired), with the exact McNemar p and the minimum detectable effect; regressions
    (a paired change below zero beyond its CI) are flagged."""
    out = ["| round | task | targeted | control | targeted − control [95% CI] | p (McNemar) | MDE | "
           "vs start [95% CI] | |", "|---|---|---|---|---|---|---|---|---|"]
    for r, info in sorted(st.get("rounds", {}).items(), key=lambda kv: int(kv[0])):
        vs_c, vs_s, flagged = info.get("vs_control", {}), info.get("vs_start", {}), figures.flags(info)
        for task in sorted(vs_s, key=lambda t: (t == "_all", t)):
            name = "**all items**" if task == "_all" else task
            tgt = info["scores"].get("test/mean" if task == "_all" else f"test/{task}")
            ctl = (info.get("control_scores") or {}).get("test/mean" if task == "_all" else f"test/{task}")
            c = vs_c.get(task)
            p = "" if not c or c["p_mcnemar"] is None else f"{c['p_mcnemar']:.3f}"
            out.append(f"| {r} | {name} | {tgt:.3f} | {'' if ctl is None else f'{ctl:.3f}'} | "
                       f"{_ci(c) if c else ''} | {p} | "
                       f"{(c or vs_s[task])['mde']:.3f} | {_ci(vs_s[task])} | {', '.join(flagged[task])} |")
    return out


def write_report(run_dir: Path) -> Path:
    rd = RunDir(run_dir)
    st = rd.state()
    base = _scores(run_dir, "round_000")
    out = [f"# synthloop run `{st.get('name', run_dir.name)}`", "",
           "Round r's row is the adapter round r trained (measured at the start of round r+1 or in "
           "final/), next to its control arm. Decisions use dev; test is reported.", "",
           "| round | " + " | ".join(["test mean", "control", "dev mean", "deficiencies", "synth", "retrieved",
                                      "mixed", "train loss"]) + " |",
           "|---|---|---|---|---|---|---|---|---|"]
    if base:
        out.append(f"| base | {mean_score(base):.3f} | | {mean_score(base, 'dev'):.3f} | | | | | |")
    for r, info in sorted(st.get("rounds", {}).items(), key=lambda kv: int(kv[0])):
        m, ctl = info["metrics"], info.get("control_scores") or {}
        out.append(f"| {r} | {m.get('test/mean', 0):.3f} | {ctl.get('test/mean', float('nan')):.3f} | "
                   f"{m.get('dev/mean', 0):.3f} | {m.get('deficiencies', 0)} | {m.get('synthesize/records', 0)} "
                   f"| {m.get('retrieve/records', 0)} | {m.get('mix/records', 0)} | {m.get('train/loss') or float('nan'):.3f} |")
    if st.get("final"):
        f = st["final"]
        out += ["", f"Handed over: the best student on dev, measured at `{f['measured_at']}` "
                    f"(dev {f['dev_mean']:.3f}, test {f['test_mean']:.3f}); the last adapter's test mean: "
                    f"{f['last_test_mean']:.3f}."]
    table = round_table(st)
    if len(table) > 2:
        out += ["", "## Targeted vs control, and vs the round's start (test items, paired)", "", *table]
    paired = paired_vs_first(run_dir)
    if paired:
        out += ["", "## Test-score change against round 0 (paired, same items)", "", *paired]
    out += ["", "## Stages and scores", "", "```", status_text(run_dir), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(out), encoding="utf-8")
    from loop.html_report import write_html

    try:   # the run's results are saved already: a report that cannot be drawn must not fail the run
        write_html(run_dir)
    except Exception:
        log.exception("report.html could not be written; `python -m loop --debug report %s` shows why", run_dir)
    return path
