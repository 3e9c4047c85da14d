"""End to end: two rounds on the tiny student with the scripted teacher and a small local pool.

Asserts the files each stage wrote, that round 1 evaluated round 0's adapter, that a re-run
resumes without recomputing, and that a run killed with SIGKILL mid-stage resumes cleanly.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalsuite.records import make_record, read_records, write_jsonl

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "smoke_round0.json"
STAGES = ("eval", "tag", "diagnose", "synthesize", "retrieve", "mix", "train")


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    topics = ["add two numbers", "multiply prices", "write a haiku about rain", "sort a list in python",
              "explain photosynthesis", "convert miles to km", "list three fruits in uppercase",
              "compute the average speed", "write a json object with a name", "divide a pizza among friends"]
    recs = [make_record([{"role": "user", "content": f"Please {t} (variant {i})."},
                         {"role": "assistant", "content": f"Here is how to {t}: step one, step two. Done {i}."}],
                        source="pool:test") for i in range(6) for t in topics]
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    write_jsonl(path, recs)
    return path


def _overrides(tiny_model_path, pool_file, cache_dir):
    return [f"student.model={tiny_model_path}", "teacher.backend=fake", "teacher.model=builtin",
            f"retrieve.pool.source={pool_file}", f"cache_dir={cache_dir}", "tracking.wandb=offline"]


def _cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "loop", *args], cwd=REPO, env=env, **kw)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_model_path, pool_file):
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    cache = tmp_path_factory.mktemp("cache")
    args = ["run", "--config", "configs/smoke.yaml", "--rounds", "2", "--run-dir", str(run_dir),
            *_overrides(tiny_model_path, pool_file, cache)]
    proc = _cli(args)
    assert proc.wait(timeout=900) == 0
    return run_dir, args


def test_two_rounds_write_every_stage(smoke_run):
    run_dir, _ = smoke_run
    assert (run_dir / "config.yaml").exists()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "finished" and set(state["rounds"]) == {"0", "1"}
    for r in ("round_000", "round_001"):
        for s in STAGES:
            done = json.loads((run_dir / r / s / "DONE").read_text())
            assert len(done["fingerprint"]) == 20
        ev = run_dir / r / "eval"
        res = json.loads((ev / "results.json").read_text())
        assert res["tasks"] and all("test" in t and "dev" in t for t in res["tasks"].values())
        rows = [json.loads(line) for line in (ev / "samples.jsonl").read_text().splitlines()]
        assert rows and {"task", "doc_id", "split", "prompt", "target", "response", "correct"} <= set(rows[0])
        assert (ev / "decontam_texts.jsonl").stat().st_size > 0
        defs = json.loads((run_dir / r / "diagnose" / "deficiencies.json").read_text())["deficiencies"]
        assert defs, "the tiny student fails dev items and the scripted teacher diagnoses them"
        assert all(d["ability"] and d["count"] >= 1 and d["impact"] > 0 for d in defs)
        synth = read_records(run_dir / r / "synthesize" / "records.jsonl")
        assert synth and all(rec["meta"]["round"] == int(r[-3:]) for rec in synth)
        retrieved = read_records(run_dir / r / "retrieve" / "records.jsonl")
        assert retrieved and all(rec["source"].startswith("pool:") for rec in retrieved)
        train = run_dir / r / "train"
        assert (train / "adapter" / "adapter_model.safetensors").exists()
        assert read_records(train / "train_set.jsonl")
    # round 1 evaluated the student that round 0 trained
    res1 = json.loads((run_dir / "round_001" / "eval" / "results.json").read_text())
    assert res1["adapter"] and Path(res1["adapter"]).resolve() == (run_dir / "round_000/train/adapter").resolve()
    assert (run_dir / "final" / "eval" / "results.json").exists()
    assert list((run_dir / "wandb").glob("offline-run-*")), "a W&B offline run directory"
    assert (run_dir / "report.md").read_text().count("|") > 10


def test_synthesized_records_are_verified_only_by_a_named_check(smoke_run):
    """Every record the run wrote: ``meta.verified`` holds only when a named check passed on every
    assistant turn; each record names the deficiency it serves and keeps each step's raw teacher I/O."""
    from synth.verify import VERIFYING

    run_dir, _ = smoke_run
    for r in ("round_000", "round_001"):
        recs = read_records(run_dir / r / "synthesize" / "records.jsonl")
        assert any(rec["meta"]["verified"] for rec in recs)
        for rec in recs:
            m = rec["meta"]
            v = m["verification"]
            checks = [v] + v.get("turns", [])
            assert m["verified"] == all(c["passed"] and c["method"] in VERIFYING for c in checks), rec["id"]
            assert m["deficiency"]["id"] == m["deficiency_id"] and m["kind"] in ("instruction", "code", "math", "other")
            assert m["provenance"][0]["step"] == "instruct" and all(p["prompt"] for p in m["provenance"])
        summary = json.loads((run_dir / r / "synthesize" / "DONE").read_text())["summary"]
        assert summary["records"] == len(recs) and summary["verified_records"] == sum(x["meta"]["verified"] for x in recs)
        assert summary["steps"]["answer"]["calls"] >= 1 and "accept" in summary["filters"]


def _digest(round_dir: Path) -> dict:
    """What round 0's stages produced, minus timings: eval responses, tags, deficiencies, and the
    ids + message hashes of the synthesized, retrieved and mixed records."""
    def rows(p):
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    out = {"eval": [[r["task"], r["doc_id"], r["split"], r["response"], r["correct"]]
                    for r in rows(round_dir / "eval" / "samples.jsonl")],
           "tag": rows(round_dir / "tag" / "tags.jsonl"),
           "deficiencies": [[d["id"], d["ability"], d["count"]] for d in
                            json.loads((round_dir / "diagnose" / "deficiencies.json").read_text())["deficiencies"]]}
    for stage, name in (("synthesize", "records.jsonl"), ("retrieve", "records.jsonl"), ("mix", "train_data.jsonl")):
        out[stage] = [[r["id"], hashlib.sha256(json.dumps(r["messages"]).encode()).hexdigest()[:12]]
                      for r in rows(round_dir / stage / name)]
    return out


def test_round_0_outputs_are_pinned(smoke_run):
    """The smoke run's stage outputs with the scripted teacher, pinned: a change that alters what a
    stage writes shows up here (regenerate with SYNTHLOOP_UPDATE_GOLDEN=1 and say why in the commit)."""
    run_dir, _ = smoke_run
    got = _digest(run_dir / "round_000")
    if os.environ.get("SYNTHLOOP_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    for stage in want:
        assert got[stage] == want[stage], f"round 0 {stage} output changed"


def test_stages_rerun_from_their_input_files_alone(smoke_run, tmp_path):
    """A stage needs only the run directory's files: rerunning synthesize and mix from them gives
    the same records."""
    from loop.config import load_config
    from loop.run import mix_stage, synthesize_stage

    run_dir, _ = smoke_run
    cfg = load_config(run_dir / "config.yaml")
    r0 = run_dir / "round_000"
    synthesize_stage(cfg, tmp_path / "sy", r0 / "diagnose" / "deficiencies.json",
                     r0 / "eval" / "decontam_texts.jsonl", round_idx=0)
    assert read_records(tmp_path / "sy" / "records.jsonl") == read_records(r0 / "synthesize" / "records.jsonl")
    mix_stage(cfg, r0 / "synthesize" / "records.jsonl", r0 / "retrieve" / "records.jsonl",
              r0 / "eval" / "decontam_texts.jsonl", tmp_path / "mx")
    assert read_records(tmp_path / "mx" / "train_data.jsonl") == read_records(r0 / "mix" / "train_data.jsonl")


def test_status_prints_stages_and_scores(smoke_run):
    run_dir, _ = smoke_run
    out = subprocess.run([sys.executable, "-m", "loop", "status", str(run_dir)], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "round_000" in out and "round_001" in out and "train:done" in out and "test" in out


def test_rerun_resumes_without_recomputing(smoke_run):
    run_dir, args = smoke_run
    before = {p: p.stat().st_mtime for p in run_dir.glob("round_*/*/DONE")}
    proc = _cli(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert {p: p.stat().st_mtime for p in run_dir.glob("round_*/*/DONE")} == before
    assert out.count("resumed") >= 14


def test_kill_9_mid_stage_then_rerun_completes(tmp_path, tiny_model_path, pool_file):
    run_dir = tmp_path / "killed"
    args = ["run", "--config", "configs/smoke.yaml", "--rounds", "1", "--run-dir", str(run_dir),
            *_overrides(tiny_model_path, pool_file, tmp_path / "cache")]
    proc = _cli(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (run_dir / "round_000" / ".train.tmp").exists():      # wait until training has started
        assert proc.poll() is None and time.time() < deadline, "run ended before reaching training"
        time.sleep(0.2)
    eval_done = (run_dir / "round_000" / "eval" / "DONE").stat().st_mtime
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "round_000" / "train" / "DONE").exists()

    proc = _cli(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert (run_dir / "round_000" / "eval" / "DONE").stat().st_mtime == eval_done   # finished work kept
    assert (run_dir / "round_000" / "train" / "adapter" / "adapter_model.safetensors").exists()
    assert not (run_dir / "round_000" / ".train.tmp").exists()


def test_bad_config_key_exits_with_a_clear_error(tmp_path):
    proc = _cli(["run", "--config", "configs/smoke.yaml", "--run-dir", str(tmp_path / "x"), "train.lora.rr=3"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "train.lora.rr" in err and not (tmp_path / "x").exists()


def test_help_documents_the_options():
    out = subprocess.run([sys.executable, "-m", "loop", "run", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    for opt in ("--config", "--rounds", "--run-dir", "key.sub=value"):
        assert opt in out
