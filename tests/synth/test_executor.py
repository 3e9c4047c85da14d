"""Pool-wide maps: in process (always) and as Ray Data pipelines on a local two-node Ray cluster
(head and worker on loopback, one CPU each), giving the same results as in process, split over
both nodes. The Ray part is skipped when the optional 'ray' package is not installed."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from evalsuite.records import make_record
from synth.embed import embed_texts
from synth.executor import ExecutorConfig, map_batches, ray_available
from synth.pool import PoolConfig
from synth.pools import _exact_keys, load_union

REPO = Path(__file__).resolve().parents[2]


def _records(n):
    return [make_record([{"role": "user", "content": f"Question {i % (n // 2)}: how do I sort item {i % (n // 2)}?"},
                         {"role": "assistant", "content": f"Answer {i % (n // 2)}."}], "pool:t", id=f"pool:t:{i}")
            for i in range(n)]


def test_local_map_keeps_order_and_counts():
    recs = _records(50)
    res = map_batches(recs, _exact_keys, ExecutorConfig(batch_size=7))
    assert len(res.results) == 50 and res.results[0] == res.results[25] != res.results[1]
    assert res.nodes == {"local": 50}
    with pytest.raises(ValueError, match="workers and batch_size"):
        ExecutorConfig(workers=0)


def test_local_map_is_a_datasets_map_cached_by_key_and_content(tmp_path):
    """With a key and a cache dir the map's Arrow output is read back for the same items (the function
    is not even built); other items or another key recompute; without a key nothing is cached."""
    built = []

    def make():
        built.append(1)
        return lambda xs: [{"n": len(x["messages"][0]["content"]), "vec": [0.5, float(i)]} for i, x in enumerate(xs)]

    recs = _records(30)
    first = map_batches(recs, make, ExecutorConfig(batch_size=8), cache_dir=tmp_path, key="k/v1")
    assert len(built) == 1 and not first.cached and len(list((tmp_path / "maps").glob("*.arrow"))) == 1
    again = map_batches(recs, make, ExecutorConfig(batch_size=8), cache_dir=tmp_path, key="k/v1")
    assert again.results == first.results and again.cached and len(built) == 1 and again.nodes == {"local": 30}
    map_batches(recs[:-1], make, ExecutorConfig(batch_size=8), cache_dir=tmp_path, key="k/v1")   # other items
    map_batches(recs, make, ExecutorConfig(batch_size=8), cache_dir=tmp_path, key="k/v2")        # another function
    assert len(built) == 3 and len(list((tmp_path / "maps").glob("*.arrow"))) == 3
    plain = map_batches(recs, make, ExecutorConfig(batch_size=8), cache_dir=tmp_path)          # no key: no cache
    assert len(built) == 4 and plain.results == first.results and not plain.cached
    assert len(list((tmp_path / "maps").glob("*.arrow"))) == 3
    with pytest.raises(ValueError, match="results for a batch"):
        map_batches(recs, lambda: (lambda xs: xs[:-1]), ExecutorConfig(batch_size=8))
    assert map_batches([], make).results == []


def test_union_dedup_keys_are_read_back_from_the_map_cache(tmp_path):
    from evalsuite.records import write_jsonl

    write_jsonl(tmp_path / "p.jsonl", _records(40))
    cfg = PoolConfig(source=str(tmp_path / "p.jsonl"), min_turns=2)
    a = load_union(cfg, [], tmp_path / "c")
    b = load_union(cfg, [], tmp_path / "c")
    assert a.dedup["cached"] is False and b.dedup["cached"] is True
    assert [r["id"] for r in a.records] == [r["id"] for r in b.records] and len(a.records) == 20


def test_teacher_as_a_local_map_on_the_loaded_teacher(tmp_path):
    """Locally MappedLLM runs the batches as a datasets map on the process's teacher: same tags and usage."""
    from synth.executor import MappedLLM
    from synth.llm import LLMConfig, load_llm
    from synth.tagging import TagConfig, tag_texts

    texts = {f"t{i}": f"Compute {i} + {i * 3} and explain the python function for item {i}." for i in range(12)}
    teacher = LLMConfig(backend="fake", model="builtin")
    direct_llm, loaded = load_llm(teacher), load_llm(teacher)
    direct, _ = tag_texts(direct_llm, texts, TagConfig(), tmp_path / "a.jsonl")
    mapped = MappedLLM(teacher, ExecutorConfig(), loaded)
    via_map, stats = tag_texts(mapped, texts, TagConfig(), tmp_path / "b.jsonl")
    assert via_map == direct and stats["parse_failures"] == 0
    assert mapped.usage == direct_llm.usage == loaded.usage and mapped.nodes == {"local": 12}
    with pytest.raises(ValueError, match="pass llm"):
        MappedLLM(teacher, ExecutorConfig())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a worker node started with `ray start --block` on 127.0.0.1, ended by process group."""
    if not ray_available():
        pytest.skip("the optional 'ray' package is not installed (pip install -e '.[ray]')")
    import ray

    ray_bin = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="/tmp/ray-sl-")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=200000000", "--block",
              "--disable-usage-stats"]
    procs = [subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false",
                               f"--temp-dir={tmp}", *common], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
                break
            except Exception:
                assert time.time() < deadline, "the ray head did not start"
                time.sleep(2)
        procs.append(subprocess.Popen([ray_bin, "start", f"--address={address}", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.time() < deadline, "the ray worker node did not join"
            time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        for p in procs:
            try:
                os.killpg(p.pid, 15)
                p.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, 9)


def test_ray_map_dedup_and_embedding_match_local_and_use_both_nodes(ray_cluster, tmp_path):
    cfg = ExecutorConfig(kind="ray", address=ray_cluster, workers=2, batch_size=100)
    recs = _records(2000)
    local = map_batches(recs, _exact_keys)
    res = map_batches(recs, _exact_keys, cfg)
    assert res.results == local.results
    assert len(res.nodes) == 2 and sum(res.nodes.values()) == 2000, res.nodes     # the split: both nodes worked
    # the union's dedup keys through ray: the same union
    from evalsuite.records import write_jsonl

    write_jsonl(tmp_path / "p.jsonl", recs)
    a = load_union(PoolConfig(source=str(tmp_path / "p.jsonl"), min_turns=2), [], tmp_path / "c")
    b = load_union(PoolConfig(source=str(tmp_path / "p.jsonl"), min_turns=2), [], tmp_path / "c", executor=cfg)
    assert [r["id"] for r in a.records] == [r["id"] for r in b.records] and b.dedup["executor"] == "ray"
    # embedding new texts (as the index does for records it lacks): same vectors as in process, cached alike
    texts = [f"How do I cook dish number {i} for {i % 7} people?" for i in range(300)]
    report: dict = {}
    vr = embed_texts(texts, cache_path=tmp_path / "emb", executor=ExecutorConfig("ray", ray_cluster, 2, 50),
                     report=report)
    vl = embed_texts(texts)
    np.testing.assert_allclose(vr, vl, atol=1e-5)
    assert report["executor"] == "ray" and report["embedded"] == 300 and len(report["nodes"]) == 2
    again: dict = {}
    embed_texts(texts, cache_path=tmp_path / "emb", executor=cfg, report=again)
    assert again == {}                                                               # all from the cache


def test_teacher_tagging_as_a_ray_map_matches_local(ray_cluster, tmp_path):
    """MappedLLM: the scripted teacher loaded on each worker tags like the in-process one, with the
    same token usage, on both nodes."""
    from synth.executor import MappedLLM
    from synth.llm import LLMConfig, load_llm
    from synth.tagging import TagConfig, tag_texts

    texts = {f"t{i}": f"Compute {i} + {i * 3} and explain the python function for item {i}." for i in range(40)}
    teacher = LLMConfig(backend="fake", model="builtin")
    local_llm = load_llm(teacher)
    local, _ = tag_texts(local_llm, texts, TagConfig(), tmp_path / "a.jsonl")
    mapped = MappedLLM(teacher, ExecutorConfig(kind="ray", address=ray_cluster, workers=2))
    remote, stats = tag_texts(mapped, texts, TagConfig(), tmp_path / "b.jsonl")
    assert remote == local and stats["parse_failures"] == 0
    assert mapped.usage == local_llm.usage and len(mapped.nodes) == 2
