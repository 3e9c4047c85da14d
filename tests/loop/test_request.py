"""`python -m loop request`: a dataset aimed at one benchmark, on the tiny student with the scripted
teacher and a small local pool that holds copies of benchmark items (which must not get through).

Asserts the folder it writes (save_to_disk files, data.jsonl, data.parquet, card), that its rows are
valid records sharing no 13-gram with any item of the benchmark, that the project's trainer trains
on it, that --from-run reuses a run's samples instead of evaluating, that an unfinished request
resumes, and that bad input stops before any work with one line and exit code 2.
"""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evalsuite.records import make_record, read_json, read_records, validate_record, write_json, write_jsonl

REPO = Path(__file__).resolve().parents[2]
TASK = "math_offline"
ITEMS = REPO / "configs" / "tasks" / "math_offline" / "math_offline.jsonl"
SUFFIX = "\nSolve it step by step, then write the final answer as: The answer is <number>."  # its doc_to_text
N = 12


def _benchmark_items() -> list[dict]:
    return [json.loads(line) for line in ITEMS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    names, things = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay"], ["marbles", "stamps", "shells", "coins", "cards"]
    recs = [make_record([{"role": "user", "content": f"{a} collects {t}: {3 + i} on Monday and {2 * i + 1} on "
                                                     f"Tuesday. What total did {a} collect?"},
                         {"role": "assistant", "content": f"{3 + i} + {2 * i + 1} = {3 * i + 4}. "
                                                          f"{a} collected {3 * i + 4} {t}."}],
                        source="pool:test") for i, a in enumerate(names) for t in things]
    recs += [make_record([{"role": "user", "content": f"Please {t}."},
                          {"role": "assistant", "content": f"Here is how to {t}: step one, step two."}],
                         source="pool:test") for t in ("write a haiku about rain", "sort a list in python")]
    # copies of the first items (the ones the request evaluates): retrieval finds them, decontamination
    # must drop them
    recs += [make_record([{"role": "user", "content": "Quick one: " + it["question"] + SUFFIX},
                          {"role": "assistant", "content": it["solution"]}], source="pool:leak")
             for it in _benchmark_items()[:6]]
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    write_jsonl(path, recs)
    return path


def _overrides(tiny_model_path, pool_file, cache):
    # the tiny random student puts nearly every record at IFD >= 1 (the default gate would drop the
    # pool): the gate still runs, with a threshold it does not reach, as in tests/loop/smoke.py
    return [f"student.model={tiny_model_path}", "teacher.backend=fake", "teacher.model=builtin",
            f"retrieve.pool.source={pool_file}", f"cache_dir={cache}", "retrieve.k_per_query=12",
            "retrieve.ifd_max=100"]


def _cli(*args, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "loop", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def request_dir(tmp_path_factory, tiny_model_path, pool_file):
    out = tmp_path_factory.mktemp("req") / "math"
    cache = tmp_path_factory.mktemp("cache")
    args = ["request", "--benchmark", TASK, "--n", N, "--out", out, "--config", "configs/smoke.yaml",
            *_overrides(tiny_model_path, pool_file, cache)]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, args


def test_writes_a_dataset_folder_of_valid_records(request_dir):
    import datasets

    out, _ = request_dir
    for name in ("README.md", "data.jsonl", "data.parquet", "dataset_info.json", "state.json"):
        assert (out / name).is_file(), name
    recs = read_records(out / "data.jsonl")
    assert len(recs) == N                         # retrieval had room for decontamination's drops
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == len(recs)
    for i, row in enumerate(ds):
        validate_record(row, where=f"load_from_disk row {i}")
        # the same records, scores/meta included (floats to 9 digits: datasets' Json column re-encodes them)
        assert _floats9(row) == _floats9(recs[i])
    pq = datasets.load_dataset("parquet", data_files=str(out / "data.parquet"))["train"]
    assert [r["id"] for r in pq] == [r["id"] for r in recs]
    # synthesized (verified) records first, then retrieved ones; every record tagged
    kinds = ["synth" if r["source"] == "synth" else "pool" for r in recs]
    assert "synth" in kinds and "pool" in kinds and kinds == sorted(kinds, key=lambda k: k != "synth")
    assert all(r["meta"]["verified"] for r in recs if r["source"] == "synth")
    assert all(r["tags"]["macro"] for r in recs)
    # it evaluated the task's dev items only
    samples = [json.loads(line) for line in (out / "work" / "eval" / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["task"] for s in samples} == {TASK} and {s["split"] for s in samples} == {"dev"}


def test_no_row_shares_a_13_gram_with_the_benchmark(request_dir):
    from synth.overlap import ngrams, words

    out, _ = request_dir
    grams = set()
    for it in _benchmark_items():                 # every item, dev and test, read from the task's data
        grams.update(ngrams(words(it["question"] + SUFFIX), 13))
    assert len(grams) > 1000
    for rec in read_records(out / "data.jsonl"):
        for m in rec["messages"]:
            assert not set(ngrams(words(m["content"]), 13)) & grams, (rec["id"], m["content"][:80])
    # the pool's copies of items were retrieved and dropped by decontamination, not missed by retrieval
    mix = read_json(out / "work" / "mix" / "DONE")["summary"]
    assert mix["dropped"]["contaminated"]["retrieved"] >= 1


def test_card_names_the_benchmark_and_its_figures(request_dir):
    out, _ = request_dir
    text = (out / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    recs = read_records(out / "data.jsonl")
    n_synth = sum(r["source"] == "synth" for r in recs)
    s = meta["synthloop"]
    assert s["benchmark"] == TASK and s["requested"] == N and s["records"] == len(recs)
    assert s["synth"] == n_synth and s["pool"] == len(recs) - n_synth and s["tokens"] > 0
    assert s["teacher"] == "fake:builtin" and s["version"] and s["commit"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data.parquet" and TASK in meta["tags"]
    assert f"# Data request: {TASK}" in body
    for section in ("## Provenance", "## Deficiencies targeted", "## Tag distribution", "## Verification",
                    "## Decontamination", "## Source mix and tokens"):
        assert section in body, section
    assert "python -m loop request --benchmark math_offline" in body and "Math Reasoning" in body
    assert f"| synth | {n_synth} |" in body
    # the verification table counts the synthesized records by the check that passed on them
    assert sum(int(n) for n in re.findall(r"^\| \w+:verified \| (\d+) \|$", body, re.M)) == n_synth > 0
    mix = read_json(out / "work" / "mix" / "DONE")["summary"]
    assert f"{mix['dropped']['contaminated']['retrieved']} retrieved" in body
    assert "| math_offline/math-000" in body     # a matched item, by name


def test_the_trainer_trains_on_it(request_dir, tiny_model_path, tmp_path):
    out, _ = request_dir
    proc = subprocess.run([sys.executable, "-m", "train", "--data", str(out / "data.jsonl"), "--base",
                           tiny_model_path, "--out", str(tmp_path / "adapter"), "max_steps=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "adapter" / "adapter" / "adapter_model.safetensors").exists()


def test_unfinished_request_resumes_and_overwrite_reuses_stages(request_dir):
    out, args = request_dir
    before = {p.parent.name: p.stat().st_mtime for p in (out / "work").glob("*/DONE")}
    # as if killed during the label stage: its temp folder left, no later stage, no dataset published
    shutil.rmtree(out / "work" / "dataset")
    shutil.move(out / "work" / "label", out / "work" / ".label.tmp")
    for p in out.iterdir():
        if p.name != "work":
            p.unlink()
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    after = {p.parent.name: p.stat().st_mtime for p in (out / "work").glob("*/DONE")}
    for stage in ("eval", "benchmark", "tag", "diagnose", "synthesize", "retrieve", "mix", "select"):
        assert after[stage] == before[stage], f"{stage} was recomputed"
    assert after["label"] != before["label"] and (out / "README.md").exists()
    # a finished request is not replaced without --overwrite; with it, unchanged stages are reused
    again = _cli(*args)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    proc = _cli(*args, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert {p.parent.name: p.stat().st_mtime for p in (out / "work").glob("*/DONE")} == after


def test_from_run_reuses_the_runs_latest_samples(request_dir, tiny_model_path, pool_file, tmp_path):
    from loop.config import load_config, save_config

    out, args = request_dir
    run = tmp_path / "run"
    # a run directory: its config and two measured students; the newest eval (final) is the one taken
    save_config(load_config(REPO / "configs" / "smoke.yaml", _overrides(tiny_model_path, pool_file, tmp_path / "c")),
                run / "config.yaml")
    for where, finished in (("round_000", "2026-01-01T00:00:00"), ("final", "2026-01-02T00:00:00")):
        shutil.copytree(out / "work" / "eval", run / where / "eval")
        done = read_json(run / where / "eval" / "DONE")
        write_json(run / where / "eval" / "DONE", {**done, "finished": finished})
    req = tmp_path / "from_run"
    proc = _cli("request", "--benchmark", TASK, "--n", 4, "--out", req, "--from-run", run)
    assert proc.returncode == 0, proc.stderr
    ev = read_json(req / "work" / "eval" / "DONE")["summary"]
    assert ev["from"] == str(run / "final" / "eval") and ev["dev_items"] > 0
    assert not (req / "work" / "eval" / "task_configs").exists()      # nothing was evaluated
    assert 0 < len(read_records(req / "data.jsonl")) <= 4
    assert f"reused from `{run / 'final' / 'eval'}`" in (req / "README.md").read_text()


@pytest.mark.parametrize("case", ["unknown_task", "n_zero", "out_not_empty", "from_run_without_task"])
def test_bad_input_is_one_line_and_exit_2_before_any_work(case, tmp_path, capsys, request_dir):
    from loop.__main__ import main

    out = tmp_path / "out"
    argv = ["request", "--benchmark", TASK, "--n", "5", "--out", str(out), "--config", "configs/smoke.yaml"]
    want = {"unknown_task": "did you mean 'math_offline'?", "n_zero": "--n must be >= 1",
            "out_not_empty": "exists and is not empty", "from_run_without_task": "no dev samples of 'ifeval_offline'"}
    if case == "unknown_task":
        argv[2] = "mth_offline"
    elif case == "n_zero":
        argv[4] = "0"
    elif case == "out_not_empty":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:
        argv[2] = "ifeval_offline"
        run = tmp_path / "run"
        shutil.copytree(request_dir[0] / "work" / "eval", run / "round_000" / "eval")   # math samples only
        shutil.copy(request_dir[0] / "work" / "config.yaml", run / "config.yaml")
        argv += ["--from-run", str(run)]
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        rc = main(argv)
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and want[case] in err, err
    if case == "out_not_empty":
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    else:
        assert not out.exists()


def _floats9(obj):
    return json.loads(json.dumps(obj), parse_float=lambda x: round(float(x), 9))
