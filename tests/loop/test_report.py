"""The reports that compare rounds, on the shared smoke run (no extra loop run):

* ``report.html`` (written by ``loop run`` and by ``loop report``) is self-contained, holds the
  round tables with the figures in state.json, and — rendered by headless Chromium — shows its
  plots: every plot's screen area holds the drawing's colours and is blank when the plots are
  hidden (skipped where no Chromium is installed);
* ``loop compare`` pairs two runs' handed-over students (copies of the smoke run with known changes);
* the W&B offline run holds the tables (JSON files, at steps 0 and 1), the cost figures and the
  training set and adapter artifacts of each round.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from evalsuite.records import read_json, read_jsonl, write_json, write_jsonl
from evalsuite.stats import mcnemar_exact
from pngimage import read_png
from smoke import REPO

TABLES = ("deficiencies", "failed_dev_samples", "data_mix", "tag_scores")


def _loop(*args, check=True):
    return subprocess.run([sys.executable, "-m", "loop", *args], cwd=REPO, capture_output=True, text=True,
                          check=check, timeout=300)


@pytest.fixture(scope="module")
def report_html(smoke_run, tmp_path_factory):
    run_dir, _ = smoke_run
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = _loop("report", str(run_dir), "--out", str(out))
    assert res.stdout.strip() == str(out)
    return out


class _Tables(HTMLParser):
    """The text of every table's rows, table by table."""

    def __init__(self):
        super().__init__()
        self.tables, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table(self, *head: str) -> list[list[str]]:
        """The rows (header left out) of the tables whose header starts with ``head``."""
        return [row for t in self.tables if t and tuple(t[0][:len(head)]) == head for row in t[1:]]


def test_loop_run_writes_report_html(smoke_run):
    run_dir, _ = smoke_run
    html = (run_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html


def test_report_is_self_contained_and_holds_the_round_figures(smoke_run, report_html):
    run_dir, _ = smoke_run
    html = report_html.read_text()
    # nothing fetched: no scripts, stylesheets, images or fonts from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    p = _Tables()
    p.feed(html)
    st = read_json(run_dir / "state.json")
    # targeted vs control: one row per round and task, with state.json's paired figures
    rows = p.table("round", "task", "targeted", "control")
    for r, info in st["rounds"].items():
        row = next(x for x in rows if x[:2] == [r, "all items"])
        d = info["vs_control"]["_all"]
        assert row[4] == f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
        assert row[5] == f"{d['p_mcnemar']:.3f}" and row[6] == f"{d['mde']:.3f}"
        assert {x[1] for x in rows if x[0] == r} == {"all items" if t == "_all" else t for t in info["vs_start"]}
    # deficiencies of every round, by ability
    defs = p.table("#", "ability", "error", "count")
    for r in ("round_000", "round_001"):
        for d in read_json(run_dir / r / "diagnose" / "deficiencies.json")["deficiencies"]:
            assert any(x[1] == d["ability"] and x[3] == str(d["count"]) for x in defs)
    # data mix: the targeted tokens, counted with the student's tokenizer, are what the control arm matched
    assert "tokens counted with the student tokenizer" in html
    mix = p.table("round", "arm", "source", "macro tag", "records", "tokens")
    for r in (0, 1):
        done = read_json(run_dir / f"round_{r:03d}" / "control_data" / "DONE")["summary"]
        for arm, want in (("targeted", done["target_tokens"]), ("control", done["tokens"])):
            assert sum(int(x[5].replace(",", "")) for x in mix if x[:2] == [str(r), arm]) == want
    assert {x[2] for x in mix if x[1] == "targeted"} == {"synth", "pool"}
    # cost: teacher time and tokens (the backend's prompt + completion count) from the stage DONEs;
    # the scripted teacher is too fast for points per hour
    cost = next(x for x in p.table("round", "teacher (s)") if x[0] == "0")
    dones = [read_json(run_dir / "round_000" / s / "DONE") for s in ("tag", "diagnose", "synthesize")]
    toks = sum(d["summary"]["teacher"]["prompt_tokens"] + d["summary"]["teacher"]["completion_tokens"] for d in dones)
    assert float(cost[1]) == pytest.approx(sum(d["wall_s"] for d in dones), abs=0.06) and cost[9] == "–"
    assert toks > 0 and cost[2] == f"{toks:,}"
    assert int(cost[4].replace(",", "")) > 0 and int(cost[6].replace(",", "")) > 0    # eval and train tokens
    assert "Test</b> items are not tagged" in html   # the tag heatmap says where test items' tags come from


def test_regressions_are_flagged(smoke_run, tmp_path):
    """A round whose paired change is below zero beyond its CI is flagged in the table and the summary."""
    from loop.html_report import write_html

    run_dir, _ = smoke_run
    st = read_json(run_dir / "state.json")
    st["rounds"]["1"]["vs_start"]["_all"].update(diff=-0.2, ci_low=-0.3, ci_high=-0.1)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("wandb", "adapter"))
    write_json(copy / "state.json", st)
    html = write_html(copy).read_text()
    assert "round 1 · all items: regression" in html and '<tr class="flag">' in html
    assert "no regressions" not in html


def test_points_per_teacher_hour_from_the_stage_times(smoke_run, tmp_path):
    """Cost per point: the round's test-mean change in points over its teacher stages' hours, per round
    and for the run (the handed-over student over the base); None below a minute of teacher time."""
    from loop import figures

    run_dir, _ = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("wandb", "adapter"))
    for stage, wall in (("tag", 600.0), ("diagnose", 1200.0), ("synthesize", 1800.0)):   # one teacher hour
        done = read_json(copy / "round_000" / stage / "DONE")
        write_json(copy / "round_000" / stage / "DONE", {**done, "wall_s": wall})
    c0 = figures.cost(copy, 0)
    assert c0["teacher_s"] == 3600.0
    outcome = copy / read_json(copy / "state.json")["rounds"]["0"]["outcome"]
    start = read_json(copy / "round_000" / "eval" / "results.json")
    want = round(100 * (figures.mean_score(read_json(outcome / "results.json")) - figures.mean_score(start)), 3)
    assert c0["delta_test_points"] == want and c0["points_per_teacher_hour"] == pytest.approx(want)
    c1 = figures.cost(copy, 1)        # round 1's teacher stages still take seconds: no rate
    assert c1["teacher_s"] < figures.MIN_TEACHER_S and c1["points_per_teacher_hour"] is None
    total = figures.cost_total(copy, [c0, c1])
    fin = read_json(copy / "state.json")["final"]
    pts = round(100 * (fin["test_mean"] - figures.mean_score(start)), 3)
    assert total["delta_test_points"] == pts
    assert total["points_per_teacher_hour"] == pytest.approx(pts / ((3600.0 + c1["teacher_s"]) / 3600), abs=1e-3)


def _change(diff: float, low: float, high: float) -> dict:
    return {"diff": diff, "ci_low": low, "ci_high": high, "n": 50, "b": 0, "c": 0, "p_mcnemar": 1.0, "mde": 0.1}


def test_each_task_is_flagged_against_its_start_and_against_control():
    """Per task, targeted or not: ``regression`` when the change over the round's start is below zero
    beyond its CI, ``below control`` when the change over the control arm is; a CI touching 0 is no flag.
    report.md's round table and the HTML report read the same flags."""
    from loop.figures import flags
    from loop.report import round_table

    info = {"scores": {"test/mean": 0.3, "test/a": 0.2, "test/b": 0.4, "test/c": 0.3},
            "control_scores": {"test/mean": 0.3, "test/a": 0.3, "test/b": 0.3, "test/c": 0.3},
            "vs_start": {"a": _change(-0.1, -0.2, -0.01), "b": _change(0.1, 0.0, 0.2), "c": _change(-0.1, -0.2, 0.0),
                         "_all": _change(0.0, -0.05, 0.05)},
            "vs_control": {"a": _change(-0.1, -0.2, 0.01), "b": _change(-0.2, -0.3, -0.1), "c": _change(0.0, -0.1, 0.1),
                           "_all": _change(0.0, -0.05, 0.05)}}
    assert flags(info) == {"a": ["regression"], "b": ["below control"], "c": [], "_all": []}
    assert flags({k: v for k, v in info.items() if k != "vs_control"}) == {
        "a": ["regression"], "b": [], "c": [], "_all": []}              # a run without a control arm
    rows = {line.split(" | ")[1]: line for line in round_table({"rounds": {"0": info}})[2:]}
    assert rows["a"].endswith("| regression |") and rows["b"].endswith("| below control |")
    assert rows["c"].endswith("|  |") and rows["**all items**"].endswith("|  |")


def test_report_of_a_live_run(smoke_run, tmp_path):
    """The report reads whatever files exist: a run still in round 0 (evaluated and tagged, nothing
    trained or tracked yet) gets its base scores and stage times, and says what is missing."""
    from loop.html_report import write_html

    run_dir, _ = smoke_run
    live = tmp_path / "live"
    shutil.copytree(run_dir, live, ignore=shutil.ignore_patterns("wandb", "adapter", "round_001", "final", "diagnose",
                                                                  "synthesize", "retrieve", "mix", "train", "control_*"))
    st = read_json(live / "state.json")
    st.update(rounds={}, status="running")
    st.pop("final")
    write_json(live / "state.json", st)
    html = write_html(live).read_text()
    assert "status <b>running</b>" in html and "no round measured yet" in html and "No training data yet" in html
    assert "score per round" in html and "stage wall time" in html


def _chromium() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def _chrome(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-device-scale-factor=1", f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


BOXES_JS = """<script>{const pre = document.createElement('pre'); pre.id = 'boxes';
 pre.textContent = JSON.stringify({height: document.documentElement.scrollHeight,
  plots: [...document.querySelectorAll('svg.plot')].map(e => { const r = e.getBoundingClientRect();
    return [e.getAttribute('aria-label'), r.left + scrollX, r.top + scrollY, r.width, r.height]; })});
 document.body.appendChild(pre);}</script>"""


def _colours(img: np.ndarray) -> set:
    return set(map(tuple, img.reshape(-1, img.shape[-1])[:, :3].tolist()))


@pytest.mark.skipif(_chromium() is None, reason="no headless browser installed (apt-get install chromium): "
                                                "the HTML is still checked above, but not rendered")
def test_report_renders_its_plots_in_chromium(smoke_run, report_html, tmp_path):
    """Render the page in headless Chromium and look at the pixels: each plot's area (from the
    browser's own layout) holds many colours, among them the drawing's, and the same area is blank
    in a render of the same page with the plots hidden."""
    from loop import svg
    from loop.figures import tag_matrix

    run_dir, _ = smoke_run
    browser, html = _chromium(), report_html.read_text()
    width = 1280
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", BOXES_JS + "</body>"))
    dom = _chrome(browser, tmp_path, f"--window-size={width},2000", "--dump-dom", probe.as_uri()).stdout
    layout = json.loads(html_unescape(re.search(r'<pre id="boxes">(.*?)</pre>', dom, re.S).group(1)))
    height = int(layout["height"]) + 10
    plots = [(label, *map(int, (x, y, w, h))) for label, x, y, w, h in layout["plots"]]
    names = " | ".join(p[0] for p in plots)
    for expected in ("score per round", "paired change over all test items", "test accuracy by macro tag",
                     "dev accuracy by macro tag", "training tokens by source", "targeted tokens by macro tag",
                     "stage wall time"):
        assert expected in names

    hidden = tmp_path / "hidden.html"
    hidden.write_text(html.replace("</head>", "<style>svg.plot{visibility:hidden}</style></head>"))
    shots = {}
    for name, page in (("shown", report_html), ("hidden", hidden)):
        shots[name] = tmp_path / f"{name}.png"
        _chrome(browser, tmp_path, f"--window-size={width},{height}", f"--screenshot={shots[name]}", page.as_uri())
    shown, blank = read_png(shots["shown"]), read_png(shots["hidden"])
    assert shown.shape == blank.shape and shown.shape[:2] == (height, width)

    for label, x, y, w, h in plots:
        box = (slice(y + 1, y + h - 1), slice(x + 1, x + w - 1))
        drawn, empty = _colours(shown[box]), _colours(blank[box])
        assert len(empty) == 1, f"{label}: the page behind the plot is not blank"
        assert len(drawn) >= 8, f"{label}: only {len(drawn)} colours where the plot should be"
        assert (shown[box] != blank[box]).any(axis=-1).mean() > 0.01, f"{label}: almost nothing drawn"
    # the series' own colours are on screen where the charts are
    def has(label_part: str, rgb: tuple) -> bool:
        return any(np.all(shown[y:y + h, x:x + w, :3] == rgb, axis=-1).sum() >= 20
                   for label, x, y, w, h in plots if label_part in label)
    assert has("score per round", (0x1f, 0x6f, 0xb4)) and has("score per round", (0xe0, 0x7b, 0x00))
    assert has("training tokens by source", (0x1f, 0x6f, 0xb4)) and has("training tokens by source", (0xe0, 0x7b, 0x00))
    assert has("stage wall time", (0x2c, 0xa0, 0x2c))   # training's green
    cells = {svg._blue(a) for row in tag_matrix(run_dir, "test")["acc"] for a in row if a is not None}
    assert any(has("test accuracy by macro tag", tuple(int(c[i:i + 2], 16) for i in (1, 3, 5))) for c in cells)


# ------------------------------------------------------------------ loop compare

def _copy_handed_over(run_dir: Path, dst: Path) -> Path:
    """A minimal run directory: state.json and the handed-over student's eval."""
    st = read_json(run_dir / "state.json")
    where = st["final"]["measured_at"]
    shutil.copytree(run_dir / where / "eval", dst / where / "eval")
    write_json(dst / "state.json", st)
    return dst / where / "eval" / "samples.jsonl"


def test_compare_pairs_the_handed_over_students(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    _copy_handed_over(run_dir, tmp_path / "a")
    samples_b = _copy_handed_over(run_dir, tmp_path / "b")
    rows = read_jsonl(samples_b)
    wrong = [r for r in rows if r["split"] == "test" and not r["correct"]]
    assert len(wrong) >= 3
    for r in wrong[:3]:            # B gets three more test items right
        r["correct"] = True
    write_jsonl(samples_b, rows)
    out = _loop("compare", str(tmp_path / "a"), str(tmp_path / "b")).stdout
    n = sum(1 for r in rows if r["split"] == "test")
    line = next(x for x in out.splitlines() if x.startswith("all items"))
    cols = line.split()
    assert cols[2] == str(n) and float(cols[5]) == pytest.approx(3 / n, abs=1e-3)
    assert f"{mcnemar_exact(0, 3):.3f}" in line and "WARNING" not in out
    for task in {r["task"] for r in rows}:
        assert any(x.startswith(task) for x in out.splitlines())

    same = _loop("compare", str(tmp_path / "a"), str(tmp_path / "a")).stdout
    cols = next(x for x in same.splitlines() if x.startswith("all items")).split()
    assert cols[5:9] == ["+0.000", "[+0.000,", "+0.000]", "1.000"]


def test_compare_says_when_the_runs_evaluated_different_items(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    _copy_handed_over(run_dir, tmp_path / "a")
    samples_b = _copy_handed_over(run_dir, tmp_path / "b")
    rows = [r for r in read_jsonl(samples_b)]
    test = [r for r in rows if r["split"] == "test"]
    rows.remove(test[0])                       # one item only A has
    test[1]["prompt"] += " (edited)"           # one item whose text differs
    write_jsonl(samples_b, rows)
    out = _loop("compare", str(tmp_path / "a"), str(tmp_path / "b")).stdout
    assert "WARNING: the runs evaluated different test items: 1 only in A, 0 only in B, 1 with the same id" in out
    assert f"Compared on the {len(test) - 2} shared items only" in out

    for r in rows:                             # nothing shared at all: an error, exit code 2
        r["doc_id"] = f"other-{r['doc_id']}"
    write_jsonl(samples_b, rows)
    res = _loop("compare", str(tmp_path / "a"), str(tmp_path / "b"), check=False)
    assert res.returncode == 2 and "share no test item" in res.stderr and "Traceback" not in res.stderr
    res = _loop("compare", str(tmp_path / "a"), str(tmp_path / "nowhere"), check=False)
    assert res.returncode == 2 and "no run directory" in res.stderr


# ------------------------------------------------------------------ W&B (offline run files)

def _wandb_records(path: Path):
    """The records of an offline run's ``.wandb`` file (a LevelDB-style log of protobuf records;
    W&B's Python package no longer ships a reader): what `wandb sync` would upload."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):       # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_wandb_offline_run_holds_tables_cost_and_artifacts(smoke_run):
    run_dir, _ = smoke_run
    st = read_json(run_dir / "state.json")
    files = Path(st["wandb_dir"])
    wandb_file = next(files.parent.glob("run-*.wandb"))
    history, artifacts = {}, []
    for rec in _wandb_records(wandb_file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in rec.history.item}
            history.setdefault(int(items["_step"]), {}).update(items)
        elif kind == "artifact":
            artifacts.append((rec.artifact.name, rec.artifact.type, set(rec.artifact.aliases),
                              {e.path for e in rec.artifact.manifest.contents}))
    for step in (0, 1):
        h = history[step]
        for t in TABLES:
            assert json.loads(h[f"tables/{t}/_type"]) == "table-file"
            table = json.loads((files / json.loads(h[f"tables/{t}/path"])).read_text())
            assert table["data"], f"step {step}: table {t} is empty"
            if t != "tag_scores":
                assert {row[0] for row in table["data"]} == {step}
        for k in ("cost/teacher_s", "cost/train_tokens", "cost/eval_tokens", "cost/eval_s", "test/mean"):
            assert k in h, f"step {step}: no {k}"
        # targeted minus control per task and over all items: state.json's paired differences
        vs_control = st["rounds"][str(step)]["vs_control"]
        assert {t for t in vs_control} == {k.split("/", 1)[1] for k in h if k.startswith("targeted_minus_control/")}
        for task, d in vs_control.items():
            assert json.loads(h[f"targeted_minus_control/{task}"]) == pytest.approx(d["diff"])
        # the retrieve summary's KL pair, as the round's stage wrote it
        rt = read_json(run_dir / f"round_{step:03d}" / "retrieve" / "DONE")["summary"]
        for k in ("kl_target_selected", "kl_target_random"):
            assert rt[k] is not None and json.loads(h[f"retrieve/{k}"]) == pytest.approx(rt[k]), k
        assert any(a[0] == "train_set" and a[1] == "dataset" and f"round-{step}" in a[2]
                                           and a[3] == {"train_set.jsonl"} for a in artifacts)
        assert any(a[0] == "adapter" and a[1] == "model" and f"round-{step}" in a[2]
                   and "adapter_model.safetensors" in a[3] for a in artifacts)
    # the failed dev items of round 0 with question, target and response; the tag matrix grows per step
    h0 = history[0]
    failed = json.loads((files / json.loads(h0["tables/failed_dev_samples/path"])).read_text())
    assert failed["columns"][3:6] == ["question", "target", "response"]
    samples = read_jsonl(run_dir / "round_000" / "eval" / "samples.jsonl")
    assert len(failed["data"]) == sum(1 for s in samples if s["split"] == "dev" and not s["correct"])
    students = lambda step: {row[0] for row in json.loads(  # noqa: E731
        (files / json.loads(history[step]["tables/tag_scores/path"])).read_text())["data"]}
    assert students(0) == {"base", "round 0"} and students(1) == {"base", "round 0", "round 1"}
