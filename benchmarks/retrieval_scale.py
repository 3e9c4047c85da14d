"""How does retrieval cost grow with the pool? Time and memory of the pool index from 10k to 1M vectors.

    .venv/bin/python benchmarks/retrieval_scale.py [--sizes 10000,100000,1000000] [--dim 384]
        [--flat-max 100000] [--nprobe 32] [--also-flat] [--dir /tmp/...]

Synthetic pool vectors (``--dim``-d, from a Gaussian mixture of ``--components`` components,
L2-normalised like sentence embeddings) go into ``synth.vindex.VectorIndex`` as the retrieve
stage uses it (``retrieve.index=auto``: flat up to ``--flat-max`` vectors, IVF beyond). Per size:
building the index (IVF: training its cells included), saving and loading its file, adding 1%
new vectors to the loaded index and saving again (what a new round or an added pool costs; the
kind column shows ``flat>ivf`` where those 1% carried the index past ``--flat-max``), and
searching batches of 100 queries (k = 10, the median of ``--batches`` batches; queries from the
same mixture), with recall@10 against exact search; memory as the process's resident size after
the build and its peak, and the index file's size. Last, how search time grew against the size
(exponent b in t ∝ N^b). ``--also-flat`` measures exact flat search at every size as well.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.vindex import VectorIndex, index_path  # noqa: E402

K = 10
BATCH = 100


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mixture(n: int, centers: np.ndarray, rng: np.random.Generator, spread: float, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, centers.shape[1]), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centers[rng.integers(0, len(centers), m)] + spread * rng.standard_normal((m, centers.shape[1]), dtype=np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_topk(q: np.ndarray, v: np.ndarray, k: int, chunk: int = 200_000) -> np.ndarray:
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(v), chunk):
        sims = q @ v[s:s + chunk].T
        idx = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, idx, 1)], axis=1)
        best_i = np.concatenate([best_i, idx + s], axis=1)
        order = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def measure(n: int, kind: str, args, centers: np.ndarray, folder: Path) -> dict:
    rng = np.random.default_rng(n)
    vecs = mixture(n, centers, rng, args.spread)
    keys = [str(i) for i in range(n)]
    base = rss_mb()
    t0 = time.perf_counter()
    vi = VectorIndex(args.dim, kind, flat_max=args.flat_max, nprobe=args.nprobe)
    vi.add(keys, vecs)
    build = time.perf_counter() - t0
    built = vi.built
    after_build = rss_mb()
    path = index_path(folder, f"{kind}-{n}")
    t0 = time.perf_counter()
    vi.save(path)
    save = time.perf_counter() - t0
    del vi
    t0 = time.perf_counter()
    vi = VectorIndex.load(path, kind, args.flat_max, args.nprobe)
    load = time.perf_counter() - t0
    extra = mixture(max(1, n // 100), centers, rng, args.spread)
    t0 = time.perf_counter()
    added = vi.add([f"new{i}" for i in range(len(extra))], extra)
    vi.save(path)
    grow = time.perf_counter() - t0
    queries = mixture(BATCH * args.batches, centers, rng, args.spread)
    vi.search(queries[:BATCH], K)     # warm-up
    times, recalls = [], []
    allv = np.concatenate([vecs, extra])
    for b in range(args.batches):
        q = queries[b * BATCH:(b + 1) * BATCH]
        t0 = time.perf_counter()
        _, rows = vi.search(q, K)
        times.append(time.perf_counter() - t0)
        if b == 0:
            truth = exact_topk(q, allv, K)
            recalls.append(np.mean([len(set(r) & set(t)) / K for r, t in zip(rows.tolist(), truth.tolist())]))
    out = {"n": n, "kind": built if built == vi.built else f"{built}>{vi.built}", "cells": getattr(vi.index, "nlist", None), "build_s": build, "save_s": save,
           "load_s": load, "add1pct_save_s": grow, "added": added, "search_s": float(np.median(times)),
           "recall": float(recalls[0]), "rss_build_mb": after_build - base, "rss_peak_mb": rss_mb("VmHWM"),
           "file_mb": path.stat().st_size / 2**20}
    path.unlink()
    del vi, vecs, allv
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--components", type=int, default=2000, help="Gaussian mixture components")
    ap.add_argument("--spread", type=float, default=0.04, help="per-dimension std around a component's centre")
    ap.add_argument("--flat-max", type=int, default=100_000)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--also-flat", action="store_true", help="measure exact flat search at every size too")
    ap.add_argument("--dir", type=Path, default=None, help="where the index files go (default: a temp dir)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((args.components, args.dim)).astype(np.float32) / math.sqrt(args.dim)
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = ["auto"] + (["flat"] if args.also_flat else [])
    print(f"{args.dim}-d vectors, Gaussian mixture of {args.components}; batches of {BATCH} queries, k={K}; "
          f"auto = flat up to {args.flat_max:,}, IVF beyond (nprobe {args.nprobe}); {os.cpu_count()} CPUs")
    head = (f"{'vectors':>9} {'kind':>8} {'cells':>5} {'build s':>8} {'save s':>7} {'load s':>7} {'+1% s':>7} "
            f"{'search s/100q':>13} {'recall@10':>9} {'RSS+ MB':>8} {'peak MB':>8} {'file MB':>8}")
    print(head)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in sizes:
            for kind in kinds:
                r = measure(n, kind, args, centers, Path(tmp))
                r["setting"] = kind
                rows.append(r)
                print(f"{r['n']:>9,} {r['kind']:>8} {r['cells'] or '-':>5} {r['build_s']:>8.2f} {r['save_s']:>7.2f} "
                      f"{r['load_s']:>7.2f} {r['add1pct_save_s']:>7.2f} {r['search_s']:>13.4f} {r['recall']:>9.3f} "
                      f"{r['rss_build_mb']:>8.0f} {r['rss_peak_mb']:>8.0f} {r['file_mb']:>8.0f}", flush=True)
    print("\ngrowth of search time per batch (t ∝ N^b between consecutive sizes):")
    for kind in kinds:
        rs = [r for r in rows if r["setting"] == kind]
        for a, b in zip(rs, rs[1:]):
            exp = math.log(b["search_s"] / a["search_s"]) / math.log(b["n"] / a["n"])
            print(f"  {kind:>4}: {a['n']:,} ({a['kind']}) -> {b['n']:,} ({b['kind']}): x{b['search_s'] / a['search_s']:.2f} "
                  f"for x{b['n'] / a['n']:.0f} vectors, b = {exp:.2f}")


if __name__ == "__main__":
    main()
