"""Where pool-wide maps run (the only ray user): in this process, or as a Ray Data pipeline.

A pool-wide map is ``map_batches(items, make_fn, cfg)``: ``make_fn()`` builds the per-batch
function once per worker (an embedder loaded once, not per batch) and the function maps a list
of items to a list of results of the same length. ``executor.kind: local`` (the default) runs
it here as a ``datasets`` map (``Dataset.map(batched=True)``); given a ``cache_dir`` and a
``key`` naming the function and its settings, the map's Arrow output is cached under
``cache_dir/maps/`` by a fingerprint of the key and the items' content, so the same map over the
same items is read back instead of recomputed (the function is then never built: no model load).
``executor.kind: ray`` runs it as a Ray Data pipeline
(``ray.data.from_items(...).map_batches(<actor class>, concurrency=executor.workers)``) on the
cluster at ``executor.address`` ("" starts a local one; ``auto`` joins the one ``ray start``
made), and returns the results in the items' order with the Ray node each batch ran on.
``make_fn`` must pickle (a top-level function or a ``functools.partial`` of one).

The pool-wide maps that use it: embedding the texts the index lacks (``synth.embed``), the
content keys of the union's cross-pool dedup (``synth.pools``) and the teacher's tagging of the
pool sample (``MappedLLM``: the LLM protocol over ``map_batches``; on Ray each worker loads its
own copy of the teacher). IFD is not among them: it scores only the candidates a selection
reaches, a few at a time, on the engine's per-core replicas. Ray is an optional extra
(``pip install -e '.[ray]'``).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import pickle
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

log = logging.getLogger(__name__)


@dataclass
class ExecutorConfig:
    kind: Literal["local", "ray"] = "local"  # local: in this process | ray: Ray Data pipelines
    address: str = ""             # ray cluster ("host:port" or "auto"); "" = start a local one
    workers: int = 2              # ray: concurrent actors per map
    batch_size: int = 512         # items per batch
    min_items: int = 0            # ray: maps over fewer items than this run locally (0 = always ray)

    def __post_init__(self) -> None:
        if self.workers < 1 or self.batch_size < 1:
            raise ValueError(f"workers and batch_size must be >= 1, got {self.workers}, {self.batch_size}")


@dataclass
class MapResult:
    results: list
    nodes: Counter          # items mapped per node ("local" for this process)
    seconds: float
    cached: bool = False    # local: read back from the datasets cache, nothing computed


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def map_batches(items: Sequence, make_fn: Callable[[], Callable[[list], list]],
                cfg: ExecutorConfig | None = None, *, cache_dir=None, key: str | None = None,
                desc: str | None = None) -> MapResult:
    """``make_fn()(batch)`` over ``items`` in batches of ``cfg.batch_size``; results in order.
    Local maps are cached under ``cache_dir`` when ``key`` (what identifies ``make_fn``: its
    name and settings) is given; Ray maps are not (their callers cache by content)."""
    cfg = cfg or ExecutorConfig()
    t0 = time.time()
    if cfg.kind == "ray" and len(items) >= max(cfg.min_items, 1):
        res = _ray_map(list(items), make_fn, cfg)
    else:
        res = _local_map(list(items), make_fn, cfg.batch_size, cache_dir, key, desc)
    res.seconds = round(time.time() - t0, 3)
    return res


def map_fingerprint(key: str, blobs: Sequence[bytes], batch_size: int) -> str:
    """The datasets fingerprint of a local map: the function's key, the batch size and every item's content."""
    h = hashlib.sha256(f"{key}\0{batch_size}\0{len(blobs)}\0".encode())
    for b in blobs:
        h.update(hashlib.sha256(b).digest())
    return h.hexdigest()[:40]


def _local_map(items: list, make_fn, batch_size: int, cache_dir, key: str | None, desc: str | None) -> MapResult:
    from datasets import Dataset

    if not items:
        return MapResult([], Counter(), 0.0, False)
    # items and results travel as pickles: pool records, texts and vectors alike, whatever their schema
    blobs = [pickle.dumps(x, protocol=4) for x in items]
    built: dict = {}

    def apply(batch: dict) -> dict:
        if "fn" not in built:
            built["fn"] = make_fn()      # only on a cache miss
        xs = [pickle.loads(b) for b in batch["x"]]
        ys = built["fn"](xs)
        if len(ys) != len(xs):
            raise ValueError(f"map_batches: {len(ys)} results for a batch of {len(xs)}")
        return {"y": [pickle.dumps(y, protocol=4) for y in ys]}

    cache_file = None
    if cache_dir is not None and key:
        fp = map_fingerprint(key, blobs, batch_size)
        folder = Path(cache_dir) / "maps"
        folder.mkdir(parents=True, exist_ok=True)
        cache_file = str(folder / f"{fp}.arrow")
    else:
        fp = uuid.uuid4().hex   # nothing to reuse: a fresh fingerprint (datasets would try to hash the closure)
    out = Dataset.from_dict({"x": blobs}).map(
        apply, batched=True, batch_size=batch_size, remove_columns=["x"], new_fingerprint=fp,
        cache_file_name=cache_file, load_from_cache_file=cache_file is not None,
        keep_in_memory=cache_file is None, desc=desc or "map")
    results = [pickle.loads(b) for b in out["y"]]
    return MapResult(results, Counter({"local": len(results)}), 0.0, cached="fn" not in built)


class _Worker:
    """The Ray actor: builds the function once, maps each batch, tags it with its node id."""

    def __init__(self, make_fn):
        import ray

        self.fn = make_fn()
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out = self.fn(list(batch["x"]))
        res = np.empty(len(out), dtype=object)
        res[:] = [o for o in out]
        return {"i": batch["i"], "y": res, "node": np.array([self.node] * len(out), dtype=object)}


def init_ray(cfg: ExecutorConfig):
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.address or None, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
    return ray


def _ray_map(items: list, make_fn, cfg: ExecutorConfig) -> MapResult:
    if not ray_available():
        raise RuntimeError("executor.kind=ray needs the 'ray' package (pip install -e '.[ray]')")
    ray = init_ray(cfg)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.wait_for_min_actors_s = 600     # every worker ready (model loaded) before batches go out,
    # one batch at a time per worker: a fast worker cannot queue every batch while another is idle
    ds = ray.data.from_items([{"i": i, "x": x} for i, x in enumerate(items)],
                             override_num_blocks=max(1, -(-len(items) // cfg.batch_size)))
    ds = ds.map_batches(_Worker, fn_constructor_args=(make_fn,), batch_size=cfg.batch_size,
                        compute=ray.data.ActorPoolStrategy(size=cfg.workers, max_tasks_in_flight_per_actor=1), num_cpus=1, batch_format="numpy")
    results: list[Any] = [None] * len(items)
    nodes: Counter = Counter()
    seen_batches: set = set()
    for row in ds.iter_rows():
        results[int(row["i"])] = row["y"]
        nodes[row["node"]] += 1
        seen_batches.add(int(row["i"]) // cfg.batch_size)
    log.info("ray map: %d items in %d batches over %d node(s)", len(items), len(seen_batches), len(nodes))
    return MapResult(results, nodes, 0.0)


# ------------------------------------------------------------------ the teacher as a pool-wide map
def _llm_batch(llm_cfg, sampling):
    """A batch function: prompts -> [{"text", "usage"}], the LLM loaded once per worker."""
    from synth.llm import load_llm

    return _llm_runner(load_llm(llm_cfg), sampling)


def _llm_runner(llm, sampling):
    """Prompts -> [{"text", "usage"}] on ``llm`` (the batch's token usage rides on its first item)."""
    def run(prompts: list) -> list:
        before = dict(llm.usage)
        out = llm.generate(prompts, sampling)
        delta = {k: v - before.get(k, 0) for k, v in llm.usage.items() if isinstance(v, (int, float))}
        return [{"text": t, "usage": delta if i == 0 else None} for i, t in enumerate(out)]
    return run


class MappedLLM:
    """The LLM protocol (``generate``, ``usage``, ``close``) over ``map_batches``: with
    ``kind: ray`` each Ray worker loads its own copy of the model from ``llm_cfg``; with
    ``kind: local`` the batches are a ``datasets`` map on ``llm``, the process's loaded teacher
    (one load per round, shared with the other stages)."""

    def __init__(self, llm_cfg, cfg: ExecutorConfig, llm=None):
        if cfg.kind != "ray" and llm is None:
            raise ValueError("MappedLLM: a local map runs on the process's teacher: pass llm")
        self.llm_cfg, self.cfg, self.llm = llm_cfg, cfg, llm
        self.usage: dict = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.nodes: Counter = Counter()

    def generate(self, prompts, sampling) -> list[str]:
        prompts = list(prompts)
        if self.cfg.kind == "ray":
            per = max(1, min(self.cfg.batch_size, -(-len(prompts) // self.cfg.workers)))   # every worker gets some
            make_fn = functools.partial(_llm_batch, self.llm_cfg, sampling)
        else:   # one batch: the engine batches (and splits over its replicas) by itself
            per = max(1, len(prompts))
            make_fn = functools.partial(_llm_runner, self.llm, sampling)
        cfg = ExecutorConfig(self.cfg.kind, self.cfg.address, self.cfg.workers, per, self.cfg.min_items)
        res = map_batches(prompts, make_fn, cfg, desc="teacher")
        for r in res.results:
            for k, v in (r["usage"] or {}).items():
                self.usage[k] = self.usage.get(k, 0) + v
        self.nodes.update(res.nodes)
        return [r["text"] for r in res.results]

    def close(self) -> None:
        pass
