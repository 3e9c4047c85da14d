"""End to end: two rounds on the tiny student with the scripted teacher and a small local pool.

Asserts the files each stage wrote, that round 1 evaluated round 0's adapter, that a re-run
resumes without recomputing, and that a run killed with SIGKILL mid-stage resumes cleanly. The run
is the session fixture ``smoke_run`` (tests/loop/conftest.py), shared with test_report.py.
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

from evalsuite.records import read_records
from smoke import cli as _cli
from smoke import overrides as _overrides

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "smoke_round0.json"
STAGES = ("eval", "tag", "diagnose", "synthesize", "retrieve", "mix", "train",
          "control_data", "control_train", "control_eval")


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
        # round 1's pool holds round 0's verified synthesized records too (pool "synth")
        assert retrieved and all(rec["source"].startswith("pool:") or (r == "round_001" and rec["source"] == "synth")
                                 for rec in retrieved)
        rt = json.loads((run_dir / r / "retrieve" / "DONE").read_text())["summary"]
        assert sum(p["selected"] for p in rt["by_pool"].values()) == len(retrieved)
        assert ("synth" in rt["pools"]) == (r == "round_001") and rt["pools"]["pool"]["records"] > 0
        assert rt["kl_target_selected"] is not None and rt["kl_target_random"] is not None
        assert rt["max_seq_len"] == 512 and all(rec["meta"]["retrieval"]["tokens"] <= 512 for rec in retrieved)
        skipped = json.loads((run_dir / r / "train" / "metrics.json").read_text())["skipped_ids"]
        assert not {rec["id"] for rec in retrieved} & {i for ids in skipped.values() for i in ids}
        train = run_dir / r / "train"
        assert (train / "adapter" / "adapter_model.safetensors").exists()
        assert read_records(train / "train_set.jsonl")
    # round 1 joined round 0's verified synthesized records (deduplicated) and retrieved nothing round 0 had
    rt1 = json.loads((run_dir / "round_001" / "retrieve" / "DONE").read_text())["summary"]
    syn0 = [rec for rec in read_records(run_dir / "round_000" / "synthesize" / "records.jsonl") if rec["meta"]["verified"]]
    got0 = {rec["id"] for rec in read_records(run_dir / "round_000" / "retrieve" / "records.jsonl")}
    got1 = {rec["id"] for rec in read_records(run_dir / "round_001" / "retrieve" / "records.jsonl")}
    assert rt1["pools"]["synth"]["records"] + rt1["pools"]["synth"]["dropped_duplicate"] == len(syn0) > 0
    assert rt1["pools"]["pool"]["dropped_retrieved_before"] == len(got0) and not got0 & got1
    # round 1 evaluated the student that round 0 trained
    res1 = json.loads((run_dir / "round_001" / "eval" / "results.json").read_text())
    assert res1["adapter"] and Path(res1["adapter"]).resolve() == (run_dir / "round_000/train/adapter").resolve()
    assert (run_dir / "final" / "eval" / "results.json").exists()
    # the control arm: same start and token count, random pool records, same items, never fed forward
    for r in ("round_000", "round_001"):
        cd = json.loads((run_dir / r / "control_data" / "DONE").read_text())["summary"]
        assert cd["records"] > 0 and cd["tokens"] >= cd["target_tokens"] > 0
        ctrl = read_records(run_dir / r / "control_data" / "train_data.jsonl")
        assert all(rec["source"].startswith("pool:") for rec in ctrl)
        cres = json.loads((run_dir / r / "control_eval" / "results.json").read_text())
        assert Path(cres["adapter"]).resolve() == (run_dir / r / "control_train" / "adapter").resolve()
    res0 = json.loads((run_dir / "round_000" / "eval" / "results.json").read_text())
    assert res1["adapter"] != json.loads((run_dir / "round_000" / "control_eval" / "results.json").read_text())["adapter"]
    for r in ("0", "1"):   # round r's row: the adapter it trained vs its control, paired, with McNemar and MDE
        row = state["rounds"][r]
        assert row["outcome"] == ("round_001/eval" if r == "0" else "final/eval")
        allc = row["vs_control"]["_all"]
        assert allc["n"] == sum(t["test"]["n"] for t in res0["tasks"].values()) and allc["mde"] > 0
        assert 0 <= allc["p_mcnemar"] <= 1 and allc["ci_low"] <= allc["diff"] <= allc["ci_high"]
    # the student handed over is the best on dev among those measured
    devs = {w: json.loads((run_dir / w / "eval" / "results.json").read_text()) for w in ("round_000", "round_001", "final")}
    fin = state["final"]
    assert fin["chosen_by"] == "dev mean" and fin["measured_at"] in devs
    assert fin["dev_mean"] == max(round(sum(t["dev"]["score"] for t in d["tasks"].values()) / len(d["tasks"]), 4)
                                  for d in devs.values())
    assert "Targeted vs control" in (run_dir / "report.md").read_text()
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
            steps = [p["step"] for p in m["provenance"]]
            # a teacher proposal, or a pool seed (no teacher step: its record id) evolved and checked
            assert steps[0] == "instruct" or steps[:3] == ["pool_seed", "evolve", "evolve_check"], steps
            assert all(p["prompt"] for p in m["provenance"] if p["step"] != "pool_seed")
            if steps[0] == "pool_seed":
                assert m["pool_seed"] == m["provenance"][0]["record_id"] and m["evolved"]
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
                     r0 / "eval" / "decontam_texts.jsonl", round_idx=0, samples=r0 / "eval" / "samples.jsonl",
                     tags=r0 / "tag")
    assert read_records(tmp_path / "sy" / "records.jsonl") == read_records(r0 / "synthesize" / "records.jsonl")
    mix_stage(cfg, r0 / "synthesize" / "records.jsonl", r0 / "retrieve" / "records.jsonl",
              r0 / "eval" / "decontam_texts.jsonl", tmp_path / "mx")
    assert read_records(tmp_path / "mx" / "train_data.jsonl") == read_records(r0 / "mix" / "train_data.jsonl")


def test_pool_tags_vocabulary_and_tag_matched_retrieval(smoke_run, tmp_path):
    """tag.pool_sample: the teacher tags a sample of the pool beside the dev items (cached: a second
    round prompts nothing new), the vocabulary covers both, the summary has figures per source, and
    retrieval reads the target's tag histogram (tag KL pair in its summary; pool records carry tags)."""
    from loop.config import load_config
    from loop.run import retrieve_stage, tag_stage

    run_dir, _ = smoke_run
    cfg = load_config(run_dir / "config.yaml", ["tag.pool_sample=24", "tag.min_count=1"])
    r0 = run_dir / "round_000"
    cache = tmp_path / "tags.jsonl"
    st = tag_stage(cfg, tmp_path / "tg", r0 / "eval" / "samples.jsonl", cache)
    pool_tags = [json.loads(line) for line in (tmp_path / "tg" / "pool_tags.jsonl").read_text().splitlines()]
    assert st["pool_sampled"] == len(pool_tags) == 24 and all(t["macro"] and t["fine"] for t in pool_tags)
    assert "pool:pool" in st["by_source"] and any(k.startswith("dev:") for k in st["by_source"])
    assert st["by_source"]["pool:pool"]["texts"] == 24 and sum(st["by_source"]["pool:pool"]["macro_counts"].values()) == 24
    vocab = json.loads((tmp_path / "tg" / "vocab.json").read_text())
    assert vocab["raw_tags"] >= vocab["kept_tags"] > 0 and set(vocab["vocab"]) >= {t for r in pool_tags for t in r["fine"]}
    # the dev tags are the run's own (tags.jsonl is unchanged by the pool sample)
    assert (tmp_path / "tg" / "tags.jsonl").read_text() == (r0 / "tag" / "tags.jsonl").read_text()
    again = tag_stage(cfg, tmp_path / "tg2", r0 / "eval" / "samples.jsonl", cache)
    assert again["prompted"] == 0 and again["cached"] == again["unique"]
    rt = retrieve_stage(cfg, Path(cfg.cache_dir), r0 / "eval" / "samples.jsonl", r0 / "diagnose" / "deficiencies.json",
                        tmp_path / "rt", tags=tmp_path / "tg")
    assert rt["tagged_pool_records"] == 24 and "kl_tags_selected" in rt
    assert (rt["kl_tags_selected"] is None) == (rt["tagged_selected"] == 0)
    sampled = {r["id"] for r in pool_tags}
    for rec in read_records(tmp_path / "rt" / "records.jsonl"):
        assert bool(rec["tags"]["macro"]) == (rec["id"] in sampled)


def test_synthesized_records_joining_the_pool_are_tagged_by_the_teacher(smoke_run, tmp_path):
    """Round 0's verified synthesized records join round 1's pool as ``synth``: the tag stage tags
    them (source ``synth`` in its summary), and retrieval reads those tags, not the copied ones."""
    from loop.config import load_config
    from loop.run import tag_stage

    run_dir, _ = smoke_run
    cfg = load_config(run_dir / "config.yaml", ["tag.min_count=1"])
    r0 = run_dir / "round_000"
    verified = [r for r in read_records(r0 / "synthesize" / "records.jsonl") if r["meta"].get("verified") is True]
    st = tag_stage(cfg, tmp_path / "tg", r0 / "eval" / "samples.jsonl", tmp_path / "tags.jsonl",
                   synthesized=[r0 / "synthesize" / "records.jsonl"])
    assert verified and st["synth_tagged"] == len(verified) and st["by_source"]["synth"]["texts"] == len(verified)
    rows = [json.loads(line) for line in (tmp_path / "tg" / "pool_tags.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows if r["source"] == "synth"} == {r["id"] for r in verified}


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
    assert out.count("resumed") >= 20


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
