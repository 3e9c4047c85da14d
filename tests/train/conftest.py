"""Small record files for train/ tests."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest


def make_records(n: int, prefix: str, seed: int = 0, multi_every: int = 3) -> list[dict]:
    """Arithmetic chats; every ``multi_every``-th one has two assistant turns."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        msgs = [{"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"Answer: {a + b}"}]
        if multi_every and i % multi_every == 0:
            msgs += [{"role": "user", "content": "Times two?"}, {"role": "assistant", "content": f"Answer: {2 * (a + b)}"}]
        out.append({"id": f"{prefix}-{i}", "messages": msgs, "source": "test",
                    "tags": {"fine": [], "macro": []}, "scores": {}, "meta": {}})
    return out


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def helpers():
    """(make_records, write) for tests that build their own files."""
    return make_records, write


@pytest.fixture
def records_file(tmp_path):
    return lambda name, n, seed=0, **kw: write(tmp_path / f"{name}.jsonl", make_records(n, name, seed, **kw))
