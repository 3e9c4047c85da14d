"""A data request: up to N training records aimed at one benchmark, delivered as a dataset folder.

    python -m loop request --benchmark math_offline --n 40 --out data/math40 [--from-run runs/default]

The second way to drive the loop (the first is ``loop run``): the same stages (``loop.run``'s
stage functions), for one task of the suite, ending in a dataset instead of an adapter:

    EVAL the task's dev items (or --from-run: a run's latest samples of it) -> TAG -> DIAGNOSE
    -> SYNTHESIZE (verified) + RETRIEVE -> MIX (dedup; decontaminated against every item of the
    task, dev and test) -> SELECT (verified synthesized first, then retrieved, up to N) -> LABEL
    (teacher tags for records without any) -> DATASET (data.jsonl, data.parquet, the
    save_to_disk files and a dataset card README.md, copied into DIR)

Every stage writes under ``DIR/work/<stage>/`` through ``RunDir.stage`` (atomic, fingerprinted),
so a killed request resumes when the same command runs again. Bad input (task name, N, --out,
--from-run, and everything ``loop.preflight`` checks) stops it before any work.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
import shlex
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import yaml

from evalsuite.records import read_json, read_jsonl, read_records, write_json, write_jsonl, write_text
from evalsuite.samples import split_rows
from evalsuite.suite import SuiteError, load_suite
from loop import preflight
from loop.artifacts import RunDir
from loop.config import Config, save_config, to_dict
from loop.preflight import PreflightError
from loop.run import (VERSION, TeacherHost, _with_teacher, diagnose_stage, eval_stage, mix_stage, retrieve_stage,
                      stage_inputs, synthesize_stage, tag_stage)

log = logging.getLogger("loop.request")
REPO = Path(__file__).resolve().parents[1]
WORK = "work"                                 # DIR/work/<stage>/: the request's stages


def request(cfg: Config, task: str, n: int, out: Path, *, from_run: Path | None = None,
            overwrite: bool = False, command: str = "") -> dict:
    out = Path(out)
    # 0. bad input stops here, before any work
    entry, suite = check_task(cfg, task)
    if n < 1:
        raise PreflightError(f"--n must be >= 1, got {n}")
    check_out(out, overwrite)
    source = latest_eval(from_run, task) if from_run else None
    work = out / WORK
    cfg = _for_request(cfg, n, restricted_suite(suite, entry, work / "suite.yaml"))
    write_json(work / "request.json", {"benchmark": task, "n": n, "from_run": str(from_run) if from_run else None,
                                       "command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    preflight.check(cfg, out)
    save_config(cfg, work / "config.yaml")
    from evalsuite.models import resolve_model

    student = resolve_model(cfg.student.model, cfg.cache_dir)
    rd, cache, ext = RunDir(out), Path(cfg.cache_dir), stage_inputs(cfg)

    def done(res):
        log.info("[request] %-12s %s in %.1f s", res.name, "resumed" if res.skipped else "done", res.wall_s)

    def stage(name, parts, fn, **kw):
        return rd.stage(WORK, name, parts, fn, on_done=done, **kw)

    # 1. EVAL the student on the task's dev items, or take a run's latest samples of the task
    if source is None:
        ev = stage("eval", [cfg.eval, cfg.student, "dev", *ext["eval"]],
                   lambda o: eval_stage(cfg, student, None, o, split="dev"))
    else:
        ev = stage("eval", ["from_run", task, str(source), _file_hash(source / "samples.jsonl")],
                   lambda o: from_run_stage(source, task, o))
    samples = ev.dir / "samples.jsonl"
    # 2. BENCHMARK: every item of the task (dev and test, no limit): what no record may overlap
    bm = stage("benchmark", [cfg.eval.suite, *ext["eval"]], lambda o: benchmark_stage(cfg, o))
    items = bm.dir / "decontam_texts.jsonl"

    # 3-9 share one teacher, loaded once (a GPU teacher: one worker process)
    with TeacherHost(cfg) as teacher:
        # 3-7. the loop's own stages, on this task's failures
        tg = stage("tag", [cfg.tag, cfg.teacher, ev.fingerprint, *ext["tag"]],
                   lambda o: teacher.run(tag_stage, o, samples=samples, cache_path=work / "cache" / "tags.jsonl"))
        dg = stage("diagnose", [cfg.diagnose, cfg.teacher, tg.fingerprint, *ext["diagnose"]],
                   lambda o: teacher.run(diagnose_stage, o, samples=samples, tags=tg.dir / "tags.jsonl"))
        deficiencies = dg.dir / "deficiencies.json"
        sy = stage("synthesize", [cfg.synthesize, cfg.teacher, cfg.seed, dg.fingerprint, bm.fingerprint,
                                  *ext["synthesize"]],
                   lambda o: teacher.run(synthesize_stage, o, deficiencies=deficiencies, avoid=items, round_idx=0,
                                         samples=samples, tags=tg.dir))
        rt = stage("retrieve", [cfg.retrieve, dg.fingerprint, *ext["retrieve"]],
                   lambda o: retrieve_stage(cfg, cache, samples, deficiencies, o))
        mx = stage("mix", [cfg.mix, sy.fingerprint, rt.fingerprint, bm.fingerprint, *ext["mix"]],
                   lambda o: mix_stage(cfg, sy.dir / "records.jsonl", rt.dir / "records.jsonl", items, o))

        # 8. SELECT: verified synthesized records first, then retrieved ones, up to N
        se = stage("select", [n, cfg.synthesize.train_unverified, mx.fingerprint, VERSION],
                   lambda o: select_stage(cfg, mx.dir / "train_data.jsonl", sy.dir / "records.jsonl", n, o))
        # 9. LABEL: teacher tags for the records that carry none (pool records), as tag does for eval items
        lb = stage("label", [cfg.tag, cfg.teacher, se.fingerprint, *ext["tag"]],
                   lambda o: teacher.run(label_stage, o, records=se.dir / "records.jsonl",
                                         cache_path=work / "cache" / "tags.jsonl"))
    # 10. DATASET: the files and the card, then copied into DIR
    prov = provenance(cfg, suite, task, n, source, command)
    ds = stage("dataset", [lb.fingerprint, {k: v for k, v in prov.items() if k != "commit"}, VERSION],
               lambda o: dataset_stage(student, work, lb.dir / "records.jsonl", prov, o))
    publish(ds.dir, out)
    return {**ds.summary, "out": str(out)}


# ------------------------------------------------------------------ bad input, before any work

def check_task(cfg: Config, task: str):
    """(the suite entry named ``task``, the suite); a name not in the suite is an error with a
    did-you-mean from the suite's tasks."""
    try:
        suite = load_suite(cfg.eval.suite)
    except SuiteError as exc:
        raise PreflightError(f"eval.suite: {preflight._one_line(exc)}") from None
    names = [t.name for t in suite.tasks]
    if task not in names:
        close = difflib.get_close_matches(task, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PreflightError(f"--benchmark {task!r}: no such task in suite {suite.name!r}{hint} "
                             f"(its tasks: {', '.join(names)})")
    return suite.tasks[names.index(task)], suite


def check_out(out: Path, overwrite: bool) -> None:
    """--out must be missing, empty, an unfinished request (resumed), or --overwrite given."""
    if out.exists() and not out.is_dir():
        raise PreflightError(f"--out {out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()) or overwrite:
        return
    if (out / WORK / "request.json").exists() and not (out / "README.md").exists():
        log.info("--out %s holds an unfinished request: resuming its finished stages", out)
        return
    raise PreflightError(f"--out {out}: exists and is not empty (pass --overwrite to replace its dataset; "
                         f"finished stages under {WORK}/ are reused)")


def latest_eval(run: Path, task: str) -> Path:
    """The run's most recently finished eval stage holding dev samples of ``task``."""
    run = Path(run)
    done = [d for d in [*sorted(run.glob("round_*/eval")), run / "final" / "eval"] if (d / "DONE").is_file()]
    if not done:
        raise PreflightError(f"--from-run {run}: no finished eval stage (round_NNN/eval/DONE or final/eval/DONE)")
    order = {d: i for i, d in enumerate(done)}
    src = max(done, key=lambda d: (str(read_json(d / "DONE").get("finished", "")), order[d]))
    rows = read_jsonl(src / "samples.jsonl")
    dev, _ = split_rows([r for r in rows if r["task"] == task])
    if not dev:
        have = ", ".join(sorted({r["task"] for r in rows})) or "none"
        raise PreflightError(f"--from-run {run}: its latest eval ({src.relative_to(run)}) has no dev samples of "
                             f"{task!r} (tasks there: {have})")
    return src


def restricted_suite(suite, entry, path: Path) -> Path:
    """The suite with only ``entry`` (paths made absolute), written to ``path``."""
    task = {k: v for k, v in dataclasses.asdict(entry).items() if v not in (None, {})}
    doc = {"description": f"{suite.name} ({suite.path}) restricted to {entry.name} by `loop request`",
           "apply_chat_template": suite.apply_chat_template,
           "include_path": [str(p) for p in suite.include_path], "tasks": [task]}
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)
    return path


def _for_request(cfg: Config, n: int, suite: Path) -> Config:
    """The config the request runs: its one-task suite, and retrieval sized to 2N records, room for
    what decontamination and dedup drop before SELECT cuts to N (the token budget scaled alike, so
    records keep the config's tokens per record)."""
    r, want = cfg.retrieve, 2 * n
    budget = r.token_budget
    if budget and r.max_records:
        budget = max(1, round(budget * want / r.max_records))
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, suite=str(suite)),
                               retrieve=dataclasses.replace(r, max_records=want, token_budget=budget))


# ------------------------------------------------------------------ stages that differ from the loop's

def from_run_stage(source: Path, task: str, out: Path) -> dict:
    """The task's dev samples from a run's eval stage, in place of evaluating again."""
    rows, _ = split_rows([r for r in read_jsonl(source / "samples.jsonl") if r["task"] == task])
    write_jsonl(out / "samples.jsonl", rows)
    res = read_json(source / "results.json")
    write_json(out / "results.json", {**res, "tasks": {task: res["tasks"][task]}, "split": "dev",
                                      "from_run": str(source)})
    return {"from": str(source), "adapter": res.get("adapter"), "dev_items": len(rows),
            "failures": sum(not r["correct"] for r in rows)}


def benchmark_stage(cfg: Config, out: Path) -> dict:
    """Every item of the suite's task (dev and test, no limit): its prompt and target."""
    from evalsuite.harness import item_texts

    rows = item_texts(cfg.eval)
    write_jsonl(out / "decontam_texts.jsonl", rows)
    return {"items": len({r["key"] for r in rows}), "texts": len(rows)}


def select_stage(cfg: Config, mixed: Path, synthesized: Path, n: int, out: Path) -> dict:
    """Up to ``n`` records of the mix: verified synthesized ones first, then unverified synthesized
    ones (only those ``synthesize.train_unverified`` let the stage write; none when it is ``none``),
    then retrieved ones in retrieval order."""
    synth_ids = {r["id"] for r in read_records(synthesized)}
    recs = read_records(mixed)
    synth = [r for r in recs if r["id"] in synth_ids]
    pool = [r for r in recs if r["id"] not in synth_ids]
    ok = ([r for r in synth if r["meta"].get("verified")]
          + [r for r in synth if not r["meta"].get("verified") and cfg.synthesize.train_unverified != "none"])
    chosen = (ok + pool)[:n]
    write_jsonl(out / "records.jsonl", chosen)
    kept = Counter("synth" if r["id"] in synth_ids else "pool" for r in chosen)
    return {"requested": n, "records": len(chosen), "synth": kept["synth"], "pool": kept["pool"],
            "dropped_unverified": len(synth) - len(ok), "over_n": len(ok) + len(pool) - len(chosen)}


def label_stage(cfg: Config, out: Path, records: Path, cache_path: Path) -> dict:
    """Tag (``tag.j2``, cached) the first user turn of each record that has no tags."""
    from synth.tagging import tag_texts

    recs = read_records(records)
    todo = {r["id"]: next(m["content"] for m in r["messages"] if m["role"] != "system")
            for r in recs if not (r["tags"]["fine"] or r["tags"]["macro"])}
    stats = {"records": len(recs), "tagged": 0}
    if todo:
        (tags, st), cost = _with_teacher(cfg, lambda llm: tag_texts(llm, todo, cfg.tag, cache_path))
        for r in recs:
            if r["id"] in tags:
                r["tags"] = tags[r["id"]]
        stats.update(tagged=len(tags), parse_failures=st["parse_failures"], teacher=cost)
    write_jsonl(out / "records.jsonl", recs)
    return stats


def dataset_stage(student: str, work: Path, records: Path, prov: dict, out: Path) -> dict:
    """data.jsonl, data.parquet, the ``save_to_disk`` files and README.md (the card) under ``out``;
    the card's figures come from the request's stage folders under ``work``."""
    from synth.retrieve import token_counter

    recs = read_records(records)
    write_jsonl(out / "data.jsonl", recs)
    ds = to_dataset(recs)
    ds.to_parquet(str(out / "data.parquet"))
    ds.save_to_disk(str(out / "hf"), num_shards=1)   # one shard: an empty dataset loads back too
    figs = figures(work, recs, token_counter(student))
    write_text(out / "README.md", card(prov, figs))
    return {"records": len(recs), **{k: figs["sources"][k]["records"] for k in ("synth", "pool")},
            "tokens": figs["sources"]["all"]["tokens"]}


def to_dataset(recs: list[dict]):
    """The records as a ``datasets.Dataset`` with the record schema's columns; ``scores`` and
    ``meta`` (free-form objects) are ``Json`` columns, so every row reads back as the same record
    (datasets decodes them with pandas' ujson, which may miss a float's last bit; data.jsonl is exact)."""
    import datasets
    from datasets import Features, Json, List, Value

    text = Value("string")
    features = Features({"id": text, "messages": List({"role": text, "content": text}), "source": text,
                         "tags": {"fine": List(text), "macro": List(text)}, "scores": Json(), "meta": Json()})
    return datasets.Dataset.from_dict({k: [r[k] for r in recs] for k in features}, features=features)


def publish(ds_dir: Path, out: Path) -> None:
    """Copy the dataset stage's files into DIR, each atomically; the card last (it marks done)."""
    for old in out.glob("data-*-of-*.arrow"):
        old.unlink()
    files = [ds_dir / f for f in ("data.jsonl", "data.parquet")] + sorted((ds_dir / "hf").iterdir())
    for src in files + [ds_dir / "README.md"]:
        tmp = out / f".{src.name}.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(out / src.name)


# ------------------------------------------------------------------ provenance, figures, the card

def provenance(cfg: Config, suite, task: str, n: int, source: Path | None, command: str) -> dict:
    res = read_json(source / "results.json") if source is not None else {}
    return {"benchmark": task, "requested": n, "suite": suite.name, "suite_path": str(suite.path),
            "student": res.get("model") or cfg.student.model, "adapter": res.get("adapter"),
            "from_run": str(source) if source is not None else None,
            "teacher": f"{cfg.teacher.backend}:{cfg.teacher.model}", "config": to_dict(cfg),
            "version": VERSION, "commit": _commit(), "command": command}


def _commit() -> str | None:
    """The checkout's git commit (``+dirty`` with uncommitted changes to tracked files), if any."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _summary(stage_dir: Path) -> dict:
    return read_json(stage_dir / "DONE")["summary"]


def figures(work: Path, recs: list[dict], count) -> dict:
    """Every figure the card states, from the stage folders under ``work`` and the final records."""
    synth_ids = {r["id"] for r in read_records(work / "synthesize" / "records.jsonl")}
    origin = {r["id"]: "synth" if r["id"] in synth_ids else "pool" for r in recs}
    sources = {k: {"records": 0, "tokens": 0, "multi_turn": 0} for k in ("synth", "pool", "all")}
    for r in recs:
        tok, multi = count(r), sum(m["role"] == "user" for m in r["messages"]) > 1
        for k in (origin[r["id"]], "all"):
            sources[k]["records"] += 1
            sources[k]["tokens"] += tok
            sources[k]["multi_turn"] += int(multi)
    samples = read_jsonl(work / "eval" / "samples.jsonl")
    dev, failures = split_rows(samples)
    items = read_jsonl(work / "benchmark" / "decontam_texts.jsonl")
    mix = _summary(work / "mix")
    hits = [{"item": items[i]["key"], "field": items[i]["field"], "records": c}
            for i, c in mix["decontam"].get("eval_hits", [])]
    served = Counter(r["meta"].get("deficiency_id") for r in recs if origin[r["id"]] == "synth")
    defs = read_json(work / "diagnose" / "deficiencies.json")["deficiencies"]
    synth = [r for r in recs if origin[r["id"]] == "synth"]
    return {
        "eval": {"dev_items": len(dev), "failures": len(failures),
                 "score": round(sum(r["score"] for r in dev) / len(dev), 4) if dev else None,
                 **_summary(work / "eval")},
        "benchmark": _summary(work / "benchmark"),
        "diagnose": _summary(work / "diagnose"),
        "deficiencies": [{**d, "records": served.get(d["id"], 0)} for d in defs],
        "synthesize": _summary(work / "synthesize"),
        "verified_in_data": dict(Counter(f"{(r['meta'].get('verification') or {}).get('method', '?')}:"
                                         + ("verified" if r["meta"].get("verified") else "unverified")
                                         for r in synth)),
        "retrieve": _summary(work / "retrieve"),
        "mix": mix, "decontam_hits": hits,
        "select": _summary(work / "select"), "label": _summary(work / "label"),
        "macro": Counter(t for r in recs for t in r["tags"]["macro"]).most_common(),
        "fine": Counter(t for r in recs for t in r["tags"]["fine"]).most_common(15),
        "sources": sources,
    }


def _size_category(n: int) -> str:
    return "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"


def _table(header: tuple, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows])


def card(prov: dict, f: dict) -> str:
    """The dataset card: YAML front matter (HF dataset-card fields + the request's key figures),
    then provenance, deficiencies, tags, verification, decontamination, sources and tokens."""
    src, task, mix, sy = f["sources"], prov["benchmark"], f["mix"], f["synthesize"]
    ver = {k[len("verify_"):]: v for k, v in (sy.get("filters") or {}).items()
           if k.startswith("verify_") and not k.endswith("_turn")}
    ins = (sy.get("filters") or {}).get("instructions", {})
    dropped = mix["dropped"]["contaminated"]
    front = {
        "pretty_name": f"synthloop data request: {task}",
        "language": ["en"], "license": "other", "task_categories": ["text-generation"],
        "tags": ["synthetic", "synthloop", task], "size_categories": [_size_category(src["all"]["records"])],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data.parquet"}]}],
        "synthloop": {"benchmark": task, "suite": prov["suite"], "requested": prov["requested"],
                      "records": src["all"]["records"], "synth": src["synth"]["records"],
                      "pool": src["pool"]["records"], "tokens": src["all"]["tokens"],
                      "student": prov["student"], "adapter": prov["adapter"], "teacher": prov["teacher"],
                      "version": prov["version"], "commit": prov["commit"],
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    ev = f["eval"]
    evaluated = (f"reused from `{prov['from_run']}`" if prov["from_run"] else "evaluated for this request")
    cfg = prov["config"]
    out = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
           f"# Data request: {task}", "",
           f"{src['all']['records']} training records (of {prov['requested']} requested) aimed at what "
           f"`{prov['student']}` gets wrong on the **{task}** benchmark: {src['synth']['records']} synthesized "
           f"for its diagnosed deficiencies, {src['pool']['records']} retrieved from the pool, none sharing a "
           f"{mix['decontam']['n']}-gram with any item of {task}. Made by synthloop's `loop request`. Each row "
           "is a chat record `{id, messages: [{role, content}], source, tags: {fine, macro}, scores, meta}` "
           "(the format TRL, axolotl and LLaMA-Factory read as is).", "",
           "## Provenance", "",
           _table(("", ""), [
               ("benchmark", f"{task} (suite `{prov['suite']}`, `{prov['suite_path']}`)"),
               ("student", f"`{prov['student']}`" + (f" + adapter `{prov['adapter']}`" if prov["adapter"] else "")),
               ("dev items", f"{ev['dev_items']} ({evaluated}); {ev['failures']} failed, dev score {ev['score']}"),
               ("teacher", f"`{prov['teacher']}`"),
               ("config", f"`{cfg['name']}` (resolved: `work/config.yaml`); eval.limit={cfg['eval']['limit']}, "
                          f"synthesize.top_k={cfg['synthesize']['top_k']}, "
                          f"synthesize.per_deficiency={cfg['synthesize']['per_deficiency']}, "
                          f"retrieve.max_records={cfg['retrieve']['max_records']}, seed={cfg['seed']}"),
               ("code", f"synthloop {prov['version']}, commit `{prov['commit'] or 'unknown'}`"),
               ("date", front["synthloop"]["created"]),
               ("command", f"`{prov['command']}`"),
           ]), "",
           "## Deficiencies targeted", "",
           f"The teacher diagnosed {f['diagnose'].get('diagnosed', f['diagnose'].get('failures', '?'))} of the "
           f"{ev['failures']} failed dev items (parse failures: {f['diagnose'].get('parse_failures', 0)}); merged "
           f"into ranked deficiencies, the top {cfg['synthesize']['top_k']} of which were served.", "",
           _table(("#", "ability (missing)", "failed items", "impact", "tags", "records here"),
                  [(i + 1, d["ability"], d["count"], d.get("impact", ""), ", ".join(d.get("tags", [])[:3]),
                    d["records"]) for i, d in enumerate(f["deficiencies"])]) if f["deficiencies"]
           else "No failed dev items: nothing to diagnose (the records are retrieved ones only).", "",
           "## Tag distribution", "",
           "Synthesized records carry their deficiency's tags; the teacher tagged "
           f"{f['label'].get('tagged', 0)} records that had none (`tag.j2`).", "",
           _table(("macro category", "records"), f["macro"]) if f["macro"] else "(no tags)", "",
           "Most frequent fine tags: " + (", ".join(f"{t} ({c})" for t, c in f["fine"]) or "none") + ".", "",
           "## Verification", "",
           f"The synthesize stage prompted {ins.get('in', 0)} instructions, kept {ins.get('out', 0)}, and wrote "
           f"{sy.get('records', 0)} records, {sy.get('verified_records', 0)} of them verified "
           f"({sy.get('tokens_per_kept_record') or '-'} estimated teacher tokens per kept record). A record is "
           "verified only when a named check passed on every assistant turn (`meta.verification`). Checks, by "
           "kind: " + ("; ".join(f"{kind} {v['out']}/{v['in']} passed (dropped: "
                                  f"{', '.join(f'{r} {c}' for r, c in sorted(v['dropped'].items())) or 'none'})"
                                  for kind, v in sorted(ver.items())) or "none ran") + ". Unverified records "
           f"allowed by `synthesize.train_unverified={cfg['synthesize']['train_unverified']}`; "
           f"{f['select']['dropped_unverified']} dropped at selection.", "",
           _table(("check (meta.verification.method)", "records here"), sorted(f["verified_in_data"].items()))
           if f["verified_in_data"] else "(no synthesized records)", "",
           "`ifeval_checkers`: every IFEval checker of the request passed (after a deterministic repair where one "
           "applied); `code_tests`: the solution passed non-vacuous assert tests in the sandbox; "
           "`pot_and_majority`/`pot`/`majority`: an executed program and the worked answers agree on the number; "
           "`judge`: a teacher judge score only, never verified.", "",
           "## Decontamination", "",
           f"Against every item of {task} — {f['benchmark']['items']} items, dev and test, "
           f"{f['benchmark']['texts']} texts (prompt and target) — with the mix's rule: any shared word "
           f"{mix['decontam']['n']}-gram, or containment of a whole text of {mix['decontam']['min_words']}–"
           f"{mix['decontam']['n'] - 1} words (shorter texts ignored: {mix['decontam'].get('eval_short_ignored', 0)})."
           f" Dropped: {dropped['synth']} synthesized, {dropped['retrieved']} retrieved "
           f"(of {mix['in']['synth']} + {mix['in']['retrieved']}); near-copies of items were already refused "
           f"at synthesis ({sy.get('instructions', {}).get('dropped', {}).get('near_benchmark', 0)}). "
           f"Duplicates dropped: {sum(v for k, v in mix['dropped'].items() if k.endswith('_duplicate'))}.", "",
           _table(("matched item", "field", "records dropped"), [(h["item"], h["field"], h["records"])
                                                                 for h in f["decontam_hits"]])
           if f["decontam_hits"] else "No record matched an item.", "",
           "## Source mix and tokens", "",
           _table(("source", "records", "tokens", "multi-turn"),
                  [(k, v["records"], v["tokens"], v["multi_turn"]) for k, v in src.items()]), "",
           f"Tokens: the student's tokenizer over every message (+4 per turn for the chat template). Retrieval: "
           f"{f['retrieve'].get('selected', 0)} of {f['retrieve'].get('candidates', 0)} candidates "
           f"(mean similarity {f['retrieve'].get('mean_similarity')}); {f['select']['over_n']} records beyond "
           f"N left out.", "",
           "## Files and use", "",
           "`data.jsonl` (the records, exact), `data.parquet` (the same rows; `scores` and `meta` as JSON), "
           "`dataset_info.json` + `state.json` + `data-*.arrow` (`datasets.save_to_disk`), `work/` (every "
           "stage's inputs and outputs; re-running the command resumes from them). For the Hub, upload "
           "`README.md` and `data.parquet` (the front matter's `configs` points at it).", "",
           "```python",
           "import datasets",
           "ds = datasets.load_from_disk(\"DIR\")                                   # this folder",
           "ds = datasets.load_dataset(\"parquet\", data_files=\"DIR/data.parquet\")  # or the parquet file",
           "```",
           "`python -m train --data DIR/data.jsonl --base BASE_MODEL --out adapter_out` trains a LoRA adapter "
           "on it.", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ command line

def cli(args) -> int:
    """``python -m loop request ...`` (parsed by loop.__main__): one line and exit 2 on bad input."""
    import os
    import sys

    from evalsuite.records import RecordError
    from loop.__main__ import DEFAULT_CONFIG, _all_local
    from loop.config import ConfigError, load_config

    from_run = Path(args.from_run) if args.from_run else None
    config = args.config or (from_run / "config.yaml" if from_run else DEFAULT_CONFIG)
    overrides = list(args.overrides) + ([f"eval.suite={args.suite}"] if args.suite else [])
    command = shlex.join(["python", "-m", "loop", "request", "--benchmark", args.benchmark, "--n", str(args.n),
                          "--out", args.out, *(["--config", args.config] if args.config else []),
                          *(["--suite", args.suite] if args.suite else []),
                          *(["--from-run", args.from_run] if args.from_run else []), *args.overrides])
    try:
        if from_run and not args.config and not Path(config).is_file():
            raise PreflightError(f"--from-run {from_run}: not a run directory (no config.yaml)")
        cfg = load_config(config, overrides)
        if _all_local(cfg):   # the embedded default needs nothing from a hub; never let a library try
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        res = request(cfg, args.benchmark, args.n, Path(args.out), from_run=from_run, overwrite=args.overwrite,
                      command=command)
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (PreflightError, SuiteError, RecordError) as exc:
        if args.debug:
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"{res['records']} records ({res['synth']} synthesized, {res['pool']} retrieved, {res['tokens']} tokens) "
          f"-> {res['out']}   card: {Path(res['out']) / 'README.md'}")
    return 0
