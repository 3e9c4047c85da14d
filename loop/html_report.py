"""``<run>/report.html``: one self-contained page that compares the rounds of a run.

Inline CSS and inline SVG only (no scripts, fonts or images fetched), so it opens offline and
can be mailed. Everything comes from the run directory's files (``loop/figures.py``).
"""
from __future__ import annotations

import math
import time
from html import escape
from pathlib import Path

import yaml

from evalsuite.records import read_json, write_text
from evalsuite.samples import mean_score
from loop import figures, svg

CSS = """
body{font-family:"DejaVu Sans","Liberation Sans",Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222;
     font-size:14px;line-height:1.45;padding:0 16px;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:14px;margin:14px 0 4px}
.muted{color:#666} .note{color:#555;font-size:12.5px;margin:4px 0 8px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:12.5px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f6f8} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.all td{font-weight:bold;background:#fafafa} tr.flag td{background:#fde8e8}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;background:#c62828;color:#fff;margin-right:3px}
.ok{background:#2e7d32}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:19px} .card span{font-size:12px;color:#555}
.panels{display:flex;flex-wrap:wrap;gap:6px} .plotbox{display:inline-block;vertical-align:top;margin:4px 8px 4px 0;
         max-width:100%;overflow-x:auto}
code{background:#f4f4f4;padding:0 3px;border-radius:3px}
"""


# teacher stages in reds, the student's eval blue, training green, the control arm in oranges
STAGE_COLORS = {"eval": "#1f6fb4", "tag": "#f4a582", "diagnose": "#d6604d", "synthesize": "#b2182b",
                "retrieve": "#8c6bb1", "mix": "#bdbdbd", "train": "#2ca02c", "control_synth": "#fee6ce", "control_data": "#fdd0a2",
                "control_train": "#fdae6b", "control_eval": "#e6550d"}


def _f(x, fmt: str = "{:.3f}", empty: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return empty
    return fmt.format(x)


def _dur(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


def _ci(d: dict | None) -> str:
    return "" if not d else f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def _table(head: list[str], rows: list[list[str]], num: set[int] = frozenset(), classes: list[str] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f'<td class="num">{c}</td>' if j in num else f"<td>{c}</td>"
                                          for j, c in enumerate(row)) + "</tr>")
    return "".join(out) + "</table>"


# what the control arm trained on, by the config's ``control``
CONTROL_DATA = {"random": "random pool records", "none": "random pool records",
                "untargeted": "records synthesized without the diagnosis, then random pool records"}


def _config(run_dir: Path) -> dict:
    p = run_dir / "config.yaml"
    return (yaml.safe_load(p.read_text()) or {}) if p.exists() else {}


# ------------------------------------------------------------------ sections

def _header(run_dir: Path, st: dict, cfg: dict, totals: dict) -> str:
    base = run_dir / "round_000" / "eval" / "results.json"
    base_mean = mean_score(read_json(base)) if base.exists() else None
    fin = st.get("final") or {}
    rounds = figures.tracked_rounds(st)
    last = st["rounds"][str(rounds[-1])] if rounds else {}
    vs_c = (last.get("vs_control") or {}).get("_all")
    cards = [("base test mean", _f(base_mean), "round 0's starting student"),
             ("handed over", _f(fin.get("test_mean")),
              f"test mean; best on dev, measured at {fin['measured_at']}" if fin else "run not finished"),
             ("last adapter", _f(fin.get("last_test_mean")), "test mean of the last adapter trained"),
             ("targeted − control", _ci(vs_c).split(" [")[0] if vs_c else "",
              f"last round, all items, 95% CI [{vs_c['ci_low']:+.3f}, {vs_c['ci_high']:+.3f}]" if vs_c
              else "no round measured yet" if not rounds else "no control arm (control: none)"),
             ("teacher time", _dur(totals.get("teacher_s")), "tag + diagnose + synthesize, all rounds"),
             ("points / teacher-hour", _f(totals.get("points_per_teacher_hour"), "{:+.1f}", "–"),
              "handed-over test mean − base, ×100, per hour of teacher stages"
              + ("" if totals.get("points_per_teacher_hour") is not None else
                 f" (not computed: under {figures.MIN_TEACHER_S:.0f} s of teacher time)"))]
    student = (cfg.get("student") or {}).get("model", "?")
    teacher = cfg.get("teacher") or {}
    suite = (cfg.get("eval") or {}).get("suite", "?")
    return (f"<h1>synthloop run <code>{escape(st.get('name', run_dir.name))}</code></h1>"
            f"<div class='muted'>status <b>{escape(str(st.get('status', '?')))}</b> · rounds tracked "
            f"{len(rounds)} of {st.get('rounds_planned', '?')} planned"
            + (f" · stopped: {escape(st['stopped_reason'])}" if st.get("stopped_reason") else "")
            + f" · student <code>{escape(str(student))}</code> · teacher <code>{escape(str(teacher.get('backend', '?')))}:"
            f"{escape(str(teacher.get('model', '?')))}</code> · suite <code>{escape(str(suite))}</code> · "
            f"written {time.strftime('%Y-%m-%d %H:%M')}</div>"
            "<div class='note'>Round r is the adapter round r trained, measured at the start of round r+1 (or in "
            f"<code>final/</code>), next to its control arm (same start, same hyperparameters, {CONTROL_DATA[cfg.get('control', 'random')]} of "
            "the same token count). Scores are on the <b>test</b> items; decisions (plateau stop, the student handed "
            "over) use <b>dev</b> only.</div>"
            "<div class='cards'>" + "".join(f"<div class='card'><span>{escape(a)}</span><b>{b or '–'}</b>"
                                            f"<span>{escape(c)}</span></div>" for a, b, c in cards) + "</div>")


def _scores(run_dir: Path) -> str:
    ser = figures.score_series(run_dir)
    labels = ser["labels"]
    if not labels:
        return "<h2>Scores per round</h2><p class='muted'>No evaluation finished yet.</p>"
    panels = []
    order = sorted((t for t in ser["tasks"] if t != "mean")) + ["mean"]
    for task in order:
        s = ser["tasks"][task]
        vals = [v for p in s["targeted"] + s["control"] if p for v in p]
        base = s["targeted"][0][0] if labels[0] == "base" and s["targeted"][0] else None
        series = [{"name": "control", "color": svg.CONTROL, "dash": True, "points": s["control"], "offset": 5},
                  {"name": "targeted", "color": svg.TARGETED, "points": s["targeted"], "offset": -5,
                   "hide": {0} if base is not None else set()}]
        if base is not None:
            series.append({"name": "base", "color": svg.BASE, "square": True,
                           "points": [s["targeted"][0]] + [None] * (len(labels) - 1)})
        panels.append(f"<div class='plotbox'>{svg.line_panel('mean over tasks' if task == 'mean' else task, labels, series, svg.score_range(vals), base)}</div>")
    has_control = any(p for t in ser["tasks"].values() for p in t["control"])
    leg = svg.legend([("targeted (this loop's data)", svg.TARGETED, "line")]
                     + [("control (equal tokens)", svg.CONTROL, "dashed")] * has_control
                     + [("base (round 0's start)", svg.BASE, "dotted")])
    return ("<h2>Scores per round (test items, 95% bootstrap CIs)</h2>"
            "<div class='note'>One panel per task: x is the student (base, then the adapter each round trained), "
            "whiskers are 95% bootstrap CIs of the task score; the dotted line is the base score. The mean panel is "
            "the unweighted mean over tasks (no CI).</div>"
            f"<div>{leg}</div><div class='panels'>{''.join(panels)}</div>")


def _vs_control(st: dict) -> str:
    rounds = figures.tracked_rounds(st)
    if not rounds:
        return ""
    rows, classes, flagged = [], [], []
    for r in rounds:
        info = st["rounds"][str(r)]
        vs_c, vs_s, fl = info.get("vs_control") or {}, info.get("vs_start") or {}, figures.flags(info)
        for task in sorted(vs_s, key=lambda t: (t == "_all", t)):
            key = "test/mean" if task == "_all" else f"test/{task}"
            c = vs_c.get(task)
            badges = "".join(f"<span class='badge'>{escape(f)}</span>" for f in fl.get(task, []))
            if fl.get(task):
                flagged.append(f"round {r} · {'all items' if task == '_all' else escape(task)}: {', '.join(fl[task])}")
            rows.append([str(r), "all items" if task == "_all" else escape(task), _f(info["scores"].get(key)),
                         _f((info.get("control_scores") or {}).get(key)), _ci(c),
                         _f(c and c["p_mcnemar"]), _f((c or vs_s[task])["mde"]), _ci(vs_s[task]),
                         f"{(c or vs_s[task])['n']}", badges])
            classes.append("flag" if fl.get(task) else "all" if task == "_all" else "")
    labels = [f"round {r}" for r in rounds]
    series = [{"name": "targeted − control", "color": svg.TARGETED,
               "points": [(lambda d: (d["diff"], d["ci_low"], d["ci_high"]) if d else None)(
                   (st["rounds"][str(r)].get("vs_control") or {}).get("_all")) for r in rounds]},
              {"name": "vs the round's start", "color": svg.BASE,
               "points": [(lambda d: (d["diff"], d["ci_low"], d["ci_high"]) if d else None)(
                   (st["rounds"][str(r)].get("vs_start") or {}).get("_all")) for r in rounds]}]
    has_control = any(p for p in series[0]["points"])
    plot = svg.diff_plot("paired change over all test items", labels, series)
    leg = svg.legend([("targeted − control", svg.TARGETED, "line")] * has_control
                     + [("targeted − the round's start", svg.BASE, "line")], 420)
    summary = ("<p><span class='badge ok'>no regressions</span> no task's paired change is below zero beyond its "
               "95% CI, against the round's start or against control.</p>" if not flagged else
               "<p><b>Flagged</b> (paired change below zero beyond its 95% CI):</p><ul>"
               + "".join(f"<li>{f}</li>" for f in flagged) + "</ul>")
    return ("<h2>Targeted vs control, and vs the round's start (paired, same test items)</h2>"
            "<div class='note'>Differences are paired on the same items: mean of per-item correctness change with a "
            "paired bootstrap 95% CI, the exact McNemar p-value (items right→wrong vs wrong→right) and the minimum "
            "detectable effect (two-sided 5% test, 80% power) at this many items. <code>regression</code>: below the "
            "round's start beyond the CI; <code>below control</code>: below the control arm beyond the CI.</div>"
            + summary + f"<div>{leg}</div><div class='plotbox'>{plot}</div>"
            + _table(["round", "task", "targeted", "control", "targeted − control [95% CI]", "p (McNemar)", "MDE",
                      "vs start [95% CI]", "n", "flags"], rows, num={2, 3, 4, 5, 6, 7, 8}, classes=classes))


def _tags(run_dir: Path) -> str:
    test, dev = figures.tag_matrix(run_dir, "test"), figures.tag_matrix(run_dir, "dev")
    if not test["labels"] or not (test["tags"] or dev["tags"]):
        return "<h2>Scores by macro tag</h2><p class='muted'>No tagged items yet.</p>"
    return ("<h2>Scores by macro tag (round × tag)</h2>"
            "<div class='note'>The tag stage tags the <b>dev</b> items (fine tags and one macro category each, by the "
            "teacher). <b>Test</b> items are not tagged (tagging them would spend teacher time on items no decision "
            "uses), so in the test matrix a test item counts under its task's dev macro tags, weighted by their share "
            "among that task's dev items (n is that weight). The dev matrix uses each dev item's own tags — but dev "
            "items are also what diagnosis looked at.</div>"
            f"<div class='plotbox'>{svg.heatmap('test accuracy by macro tag (tags inherited from the task)', test['labels'], test['tags'], test['acc'], test['n'])}</div>"
            f"<div class='plotbox'>{svg.heatmap('dev accuracy by macro tag (items’ own tags)', dev['labels'], dev['tags'], dev['acc'], dev['n'])}</div>")


def _deficiencies(run_dir: Path) -> str:
    out = ["<h2>Deficiencies per round</h2><div class='note'>What the teacher diagnosed from the failed dev items of "
           "the student each round started from, merged and ranked (impact: the share of the task's dev items the "
           "deficiency's failures account for).</div>"]
    for r in figures.round_dirs(run_dir):
        defs = figures.deficiencies(run_dir, r)
        if not defs:
            out.append(f"<h3>round {r}</h3><p class='muted'>none recorded</p>")
            continue
        rows = [[str(i + 1), escape(d.get("ability", "")), escape(d.get("error", "")), str(d.get("count", "")),
                 _f(d.get("impact")), escape(", ".join(d.get("tasks", []))), escape(", ".join(d.get("macro", []))),
                 escape(", ".join(d.get("examples", [])[:4]) + (" …" if len(d.get("examples", [])) > 4 else ""))]
                for i, d in enumerate(defs)]
        out.append(f"<h3>round {r}</h3>" + _table(["#", "ability", "error", "count", "impact", "tasks", "macro tags",
                                                   "example items"], rows, num={0, 3, 4}))
    return "".join(out)


def _mix(run_dir: Path) -> str:
    rounds = figures.round_dirs(run_dir)
    mixes = {r: figures.data_mix(run_dir, r) for r in rounds}
    mixes = {r: m for r, m in mixes.items() if m["rows"]}
    if not mixes:
        return "<h2>Data mix per round</h2><p class='muted'>No training data yet.</p>"
    counted = next(iter(mixes.values()))["counted_by"]
    rows, bars, bar_rows, macro_rows, macro_vals = [], [], [], [], []
    segs = ["synth", "pool (retrieved)", "pool (random: control)"]
    macros = sorted({x["macro"] for m in mixes.values() for x in m["rows"] if x["arm"] == "targeted"})
    for r, m in mixes.items():
        for x in m["rows"]:
            rows.append([str(r), x["arm"], x["source"], escape(x["macro"]), str(x["records"]), f"{x['tokens']:,}"])
        tok = {seg: 0 for seg in segs}
        for x in m["rows"]:
            seg = "pool (random: control)" if x["arm"] == "control" else "synth" if x["source"] == "synth" else "pool (retrieved)"
            tok[seg] += x["tokens"]
        for arm in ("targeted", "control"):
            if any(x["arm"] == arm for x in m["rows"]):
                bar_rows.append(f"r{r} {arm}")
                bars.append([tok[s] if (arm == "control") == (s == "pool (random: control)") else 0 for s in segs])
        macro_rows.append(f"r{r} targeted")
        macro_vals.append([sum(x["tokens"] for x in m["rows"] if x["arm"] == "targeted" and x["macro"] == mc)
                           for mc in macros])
    mcolors = {m: (svg.PALETTE[i % len(svg.PALETTE)] if m != figures.UNTAGGED else "#cccccc")
               for i, m in enumerate(macros)}
    colors = {"synth": svg.TARGETED, "pool (retrieved)": "#7fb3e0", "pool (random: control)": svg.CONTROL}
    replay = ", ".join(f"round {r}: {m['replayed']}" for r, m in mixes.items() if m["replayed"])
    return ("<h2>Data mix per round</h2>"
            f"<div class='note'>Each round's new training data after dedup and decontamination "
            f"(<code>mix/train_data.jsonl</code>) and its control data (<code>control_data/train_data.jsonl</code>), "
            f"tokens counted with the {escape(counted)}. A synthesized record counts under its first macro tag (the "
            "deficiency's main one); a retrieved pool record under the macro tag of the query it was retrieved for (a "
            "failed dev item or a deficiency); control records are random and untagged."
            + (f" Records replayed from earlier rounds (in <code>train/train_set.jsonl</code>, not counted here): "
               f"{replay}." if replay else "") + "</div>"
            f"<div class='plotbox'>{svg.stacked_bars('training tokens by source', bar_rows, segs, bars, 'tok', colors)}</div>"
            f"<div class='plotbox'>{svg.stacked_bars('targeted tokens by macro tag', macro_rows, macros, macro_vals, 'tok', mcolors)}</div>"
            + _table(["round", "arm", "source", "macro tag", "records", "tokens"], rows, num={4, 5}))


def _cost(run_dir: Path, per_round: list[dict], totals: dict) -> str:
    times = figures.stage_times(run_dir)
    if not times:
        return ""
    stages = [s for s in figures.ROUND_STAGES if any(s in v for v in times.values())]
    plot = svg.stacked_bars("stage wall time", list(times), stages, [[v.get(s, 0.0) for s in stages] for v in times.values()],
                            "s", {s: STAGE_COLORS.get(s, "#999") for s in stages}, w=760)
    trows = [[where] + [_f(v.get(s), "{:.1f}") for s in stages] + [f"{sum(v.values()):.1f}"] for where, v in times.items()]
    has_tokens = any(c.get("teacher_tokens") is not None for c in per_round)
    crow = [[str(c["round"]), _f(c["teacher_s"], "{:.1f}"), _f(c.get("teacher_tokens"), "{:,}", "not recorded"),
             _f(c.get("eval_s"), "{:.1f}"), _f(c.get("eval_tokens"), "{:,}"), _f(c.get("train_s"), "{:.1f}"),
             _f(c.get("train_tokens"), "{:,}"), _f(c.get("control_s"), "{:.1f}"),
             _f(c.get("delta_test_points"), "{:+.2f}"), _f(c.get("points_per_teacher_hour"), "{:+.1f}", "–")]
            for c in per_round]
    tot = lambda k: sum(c.get(k) or 0 for c in per_round)  # noqa: E731
    toks = [c.get("teacher_tokens") for c in per_round]
    crow.append(["<b>run</b>", _f(totals.get("teacher_s"), "{:.1f}"),
                 f"{sum(toks):,}" if toks and None not in toks else "", f"{tot('eval_s'):.1f}",
                 f"{tot('eval_tokens'):,}", f"{tot('train_s'):.1f}", f"{tot('train_tokens'):,}", f"{tot('control_s'):.1f}",
                 _f(totals.get("delta_test_points"), "{:+.2f}"), _f(totals.get("points_per_teacher_hour"), "{:+.1f}", "–")])
    counted = per_round[0]["tokens_counted_by"] if per_round else ""
    return ("<h2>Stage wall times and cost</h2>"
            f"<div class='plotbox'>{plot}</div>"
            + _table(["where"] + stages + ["total (s)"], trows, num=set(range(1, len(stages) + 2)))
            + "<div class='note'>Per round: the teacher stages (tag, diagnose, synthesize) — "
            + ("their tokens as the stages recorded them, and wall time" if has_tokens else
               "the stages do not record teacher tokens, so wall time is the teacher's cost")
            + f"; the evaluation of the adapter the round trained (time, and prompt + response tokens counted with "
            f"the {escape(counted)}); training (tokens seen, wall time); the control arm (data + training + eval). "
            "<b>Points per teacher-hour</b>: the change in test mean (×100) the round's adapter made over the round's "
            "start, per hour of teacher stages; the run row uses the handed-over student against the base. "
            f"It is left out (–) where the teacher stages took under {figures.MIN_TEACHER_S:.0f} s (a scripted or "
            "cached teacher), which would make it meaninglessly large.</div>"
            + _table(["round", "teacher (s)", "teacher tokens", "eval (s)", "eval tokens", "train (s)", "train tokens",
                      "control (s)", "Δ test mean (pts)", "pts / teacher-hour"], crow, num=set(range(1, 10))))


def write_html(run_dir: Path, out: Path | None = None) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    st, cfg = figures.state(run_dir), _config(run_dir)
    per_round = [figures.cost(run_dir, r) for r in figures.round_dirs(run_dir)]
    totals = figures.cost_total(run_dir, per_round)
    body = [_header(run_dir, st, cfg, totals), _scores(run_dir), _vs_control(st), _tags(run_dir),
            _deficiencies(run_dir), _mix(run_dir), _cost(run_dir, per_round, totals),
            "<p class='note'>Written by <code>python -m loop report</code> from the run directory's files "
            "(state.json, round_*/…/DONE, results.json, samples.jsonl, tags.jsonl, deficiencies.json, "
            "train_data.jsonl). The same figures are in W&B (offline by default) at step r = round r.</p>"]
    html = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>synthloop · {escape(st.get('name', run_dir.name))}</title><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>")
    path = Path(out) if out else run_dir / "report.html"
    write_text(path, html)
    return path
