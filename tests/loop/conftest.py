"""Fixtures shared by the loop's end-to-end tests (test_e2e, test_crash): a small local pool, the
overrides that point the smoke config at the tiny student and the scripted teacher, and one
uninterrupted two-round smoke run (session-scoped: test_crash compares its killed run to it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalsuite.records import make_record, write_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def loop_overrides(tiny_model_path, pool_file):
    """``overrides(cache_dir)``: the smoke config on the tiny student, scripted teacher, local pool.
    ``train.save_steps=1`` checkpoints every step, so a killed training has something to resume."""
    def overrides(cache_dir) -> list[str]:
        return [f"student.model={tiny_model_path}", "teacher.backend=fake", "teacher.model=builtin",
                f"retrieve.pool.source={pool_file}", f"cache_dir={cache_dir}", "tracking.wandb=offline",
                "train.save_steps=1"]
    return overrides


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, loop_overrides):
    """Two uninterrupted rounds of the smoke config: (run_dir, the CLI args that made it)."""
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    args = ["run", "--config", "configs/smoke.yaml", "--rounds", "2", "--run-dir", str(run_dir),
            *loop_overrides(tmp_path_factory.mktemp("cache"))]
    proc = subprocess.Popen([sys.executable, "-m", "loop", *args], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.wait(timeout=900) == 0
    return run_dir, args
