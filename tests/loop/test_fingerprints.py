"""Stage fingerprints cover everything a stage reads: prompt templates, suite and task data, the
pool file, the package version. Editing one reruns exactly the stages that read it (and their
dependants), and nothing else."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from evalsuite.records import make_record, write_jsonl
from evalsuite.suite import suite_hash
from synth.pool import PoolConfig, source_fingerprint
from synth.prompts import PROMPTS_DIR, templates_hash

REPO = Path(__file__).resolve().parents[2]


def _done_times(run_dir: Path) -> dict[str, float]:
    return {str(p.parent.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.glob("*/*/DONE")}


def test_editing_a_template_reruns_exactly_its_stages(tmp_path, tiny_model_path):
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, [make_record([{"role": "user", "content": f"Please add {i} and {i + 2}."},
                                    {"role": "assistant", "content": f"The sum is {2 * i + 2}."}], "pool:t")
                       for i in range(12)])
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "loop", "run", "--config", "configs/smoke.yaml", "--rounds", "1",
            "--run-dir", str(run_dir), f"student.model={tiny_model_path}", "teacher.backend=fake",
            "teacher.model=builtin", f"retrieve.pool.source={pool}", f"cache_dir={tmp_path / 'cache'}",
            "tracking.wandb=disabled", f"synthesize.prompts_dir={prompts}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
    before = _done_times(run_dir)
    assert set(before) >= {"round_000/eval", "round_000/synthesize", "round_000/train", "final/eval"}

    evolve = prompts / "evolve.j2"
    evolve.write_text(evolve.read_text() + "\n{# edited: a comment changes no rendering, but the file changed #}\n")
    subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
    after = _done_times(run_dir)
    rerun = {k for k in before if after[k] != before[k]}
    # synthesize renders evolve.j2; mix and train take its output; the control arm is sized by the mix's
    # tokens; the final eval measures the new adapter. Eval, tag, diagnose and retrieve are kept.
    assert rerun == {"round_000/synthesize", "round_000/mix", "round_000/train", "round_000/control_data",
                     "round_000/control_train", "round_000/control_eval", "final/eval"}, rerun


def test_template_suite_and_pool_hashes_follow_content(tmp_path):
    d = tmp_path / "p"
    shutil.copytree(PROMPTS_DIR, d)
    h = templates_hash(("tag",), d)
    assert h == templates_hash(("tag",), d) and h != templates_hash(("diagnose",), d)
    (d / "diagnose.j2").write_text("changed")
    assert templates_hash(("tag",), d) == h           # only the templates a stage renders count
    (d / "tag.j2").write_text("changed")
    assert templates_hash(("tag",), d) != h

    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": 2}) + "\n")
    suite = tmp_path / "s.yaml"
    suite.write_text(f"tasks:\n  - name: qa\n    data: {data}\n    metric: numeric\n")
    s1 = suite_hash(suite)
    data.write_text(json.dumps({"question": "1+2?", "answer": 3}) + "\n")
    assert suite_hash(suite) != s1

    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, [make_record([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "t")])
    p1 = source_fingerprint(PoolConfig(source=str(pool)))
    write_jsonl(pool, [make_record([{"role": "user", "content": "a"}, {"role": "assistant", "content": "bb"}], "t")])
    assert source_fingerprint(PoolConfig(source=str(pool))) != p1
