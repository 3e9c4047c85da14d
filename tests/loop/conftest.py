"""The one smoke run (two rounds, tiny student, scripted teacher) that every test reading a finished
run shares: made once per session, since it is the slowest fixture of the suite."""
from __future__ import annotations

import pytest

from smoke import cli, overrides, write_pool


@pytest.fixture(scope="session")
def pool_file(tmp_path_factory):
    return write_pool(tmp_path_factory.mktemp("pool") / "pool.jsonl")


@pytest.fixture(scope="session")
def loop_overrides(tiny_model_path, pool_file):
    """``overrides(cache_dir)``: the smoke config on the tiny student, scripted teacher, local pool
    (test_crash starts its killed runs with the same overrides as the shared run)."""
    return lambda cache_dir: overrides(tiny_model_path, pool_file, cache_dir)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, tiny_model_path, pool_file):
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    cache = tmp_path_factory.mktemp("cache")
    args = ["run", "--config", "configs/smoke.yaml", "--rounds", "2", "--run-dir", str(run_dir),
            *overrides(tiny_model_path, pool_file, cache)]
    proc = cli(args)
    assert proc.wait(timeout=900) == 0
    return run_dir, args
