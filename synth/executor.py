"""Where pool-wide maps run (the only ray user): in this process, or as a Ray Data pipeline.

A pool-wide map is ``map_batches(items, make_fn, cfg)``: ``make_fn()`` builds the per-batch
function once per worker (an embedder loaded once, not per batch) and the function maps a list
of items to a list of results of the same length. ``executor.kind: local`` (the default) runs
it here, batch by batch. ``executor.kind: ray`` runs it as a Ray Data pipeline
(``ray.data.from_items(...).map_batches(<actor class>, concurrency=executor.workers)``) on the
cluster at ``executor.address`` ("" starts a local one; ``auto`` joins the one ``ray start``
made), and returns the results in the items' order with the Ray node each batch ran on.
``make_fn`` must pickle (a top-level function or a ``functools.partial`` of one).

The pool-wide maps that use it: embedding the texts the index lacks (``synth.embed``), the
content keys of the union's cross-pool dedup (``synth.pools``) and the teacher's tagging of the
pool sample (``MappedLLM``: the LLM protocol over ``map_batches``, each worker loading its own
copy of the teacher). Ray is an optional extra (``pip install -e '.[ray]'``).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import time
from collections import Counter
from dataclasses import dataclass
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


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def map_batches(items: Sequence, make_fn: Callable[[], Callable[[list], list]],
                cfg: ExecutorConfig | None = None) -> MapResult:
    """``make_fn()(batch)`` over ``items`` in batches of ``cfg.batch_size``; results in order."""
    cfg = cfg or ExecutorConfig()
    t0 = time.time()
    if cfg.kind == "ray" and len(items) >= max(cfg.min_items, 1):
        res = _ray_map(list(items), make_fn, cfg)
    else:
        fn, out, nodes = make_fn(), [], Counter()
        for s in range(0, len(items), cfg.batch_size):
            part = fn(list(items[s:s + cfg.batch_size]))
            if len(part) != len(items[s:s + cfg.batch_size]):
                raise ValueError(f"map_batches: {len(part)} results for a batch of {len(items[s:s + cfg.batch_size])}")
            out.extend(part)
            nodes["local"] += len(part)
        res = MapResult(out, nodes, 0.0)
    res.seconds = round(time.time() - t0, 3)
    return res


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
    """A batch function: prompts -> [{"text", "usage"}], the LLM loaded once per worker (the batch's
    token usage rides on its first item)."""
    from synth.llm import load_llm

    llm = load_llm(llm_cfg)

    def run(prompts: list) -> list:
        before = dict(llm.usage)
        out = llm.generate(prompts, sampling)
        delta = {k: v - before.get(k, 0) for k, v in llm.usage.items() if isinstance(v, (int, float))}
        return [{"text": t, "usage": delta if i == 0 else None} for i, t in enumerate(out)]
    return run


class MappedLLM:
    """The LLM protocol (``generate``, ``usage``, ``close``) over ``map_batches``: with
    ``kind: ray`` each Ray worker loads its own copy of the model from ``llm_cfg``."""

    def __init__(self, llm_cfg, cfg: ExecutorConfig):
        self.llm_cfg, self.cfg = llm_cfg, cfg
        self.usage: dict = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.nodes: Counter = Counter()

    def generate(self, prompts, sampling) -> list[str]:
        prompts = list(prompts)
        per = max(1, min(self.cfg.batch_size, -(-len(prompts) // self.cfg.workers)))   # every worker gets some
        cfg = ExecutorConfig(self.cfg.kind, self.cfg.address, self.cfg.workers, per, self.cfg.min_items)
        res = map_batches(prompts, functools.partial(_llm_batch, self.llm_cfg, sampling), cfg)
        for r in res.results:
            for k, v in (r["usage"] or {}).items():
                self.usage[k] = self.usage.get(k, 0) + v
        self.nodes.update(res.nodes)
        return [r["text"] for r in res.results]

    def close(self) -> None:
        pass
