"""How tests make a smoke run: the small local pool, the overrides (tiny student, scripted teacher,
W&B offline) and the CLI launcher. The run itself is the session fixture ``smoke_run`` in
``tests/loop/conftest.py``, shared by every module that reads a finished run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from evalsuite.records import make_record, write_jsonl

REPO = Path(__file__).resolve().parents[2]
TOPICS = ["add two numbers", "multiply prices", "write a haiku about rain", "sort a list in python",
          "explain photosynthesis", "convert miles to km", "list three fruits in uppercase",
          "compute the average speed", "write a json object with a name", "divide a pizza among friends"]


def write_pool(path: Path) -> Path:
    recs = [make_record([{"role": "user", "content": f"Please {t} (variant {i})."},
                         {"role": "assistant", "content": f"Here is how to {t}: step one, step two. Done {i}."}],
                        source="pool:test") for i in range(6) for t in TOPICS]
    write_jsonl(path, recs)
    return path


def overrides(tiny_model_path, pool_file, cache_dir) -> list[str]:
    """``train.save_steps=1`` checkpoints every step, so a killed training has something to resume.
    The tiny random student puts nearly every record at IFD >= 1: the gate runs (scored, cached)
    with a threshold it does not reach."""
    return [f"student.model={tiny_model_path}", "teacher.backend=fake", "teacher.model=builtin",
            f"retrieve.pool.source={pool_file}", f"cache_dir={cache_dir}", "tracking.wandb=offline",
            "train.save_steps=1", "retrieve.ifd_max=100"]


def cli(args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "loop", *args], cwd=REPO, env=env, **kw)


def teacher_probe(cfg, out):
    """A teacher stage in miniature (top level, so a worker process can run it): which process ran
    it and which teacher object it got, plus the cost ``_with_teacher`` reports."""
    from synth.llm.base import Sampling
    from loop.run import _with_teacher

    (pid, llm_id, text), cost = _with_teacher(
        cfg, lambda llm: (os.getpid(), id(llm), llm.generate([[{"role": "user", "content": "hi"}]], Sampling())[0]))
    return {"pid": pid, "llm": llm_id, "text": text, "cost": cost}
