"""The local pool-wide maps (``datasets`` maps) and their caches, on the default pool.

    .venv/bin/python benchmarks/pool_maps.py [N]      # N texts embedded through the map (default 256)

On the packaged ShareGPT pool with the default filters, in a fresh cache folder (the pool's
conversion cache is reused from the model cache): the union's dedup keys as a ``datasets`` map,
cold then read back from ``maps/``; DSIR's hashed n-gram features of every pool record, cold then
from the ``dsir/`` store; and embedding N first user turns through the map against the same
encoder called directly (the map's overhead, as a ratio). Last line ``map/direct = X``.
"""
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(n: int) -> None:
    from evalsuite.models import cache_root
    from synth import embed, select
    from synth.executor import ExecutorConfig, map_batches
    from synth.pool import PoolConfig, load_pool
    from synth.pools import load_union

    pool_cfg = PoolConfig(source="sharegpt", max_chars=3000, min_ascii_ratio=0.9)
    load_pool(pool_cfg, cache_root())              # the converted pool, cached as the loop caches it
    tmp = Path(tempfile.mkdtemp(prefix="pool-maps-"))
    try:
        shutil.copytree(Path(cache_root()) / "pool", tmp / "pool", dirs_exist_ok=True)
        cold, t_cold = _timed(lambda: load_union(pool_cfg, [], tmp))
        warm, t_warm = _timed(lambda: load_union(pool_cfg, [], tmp))
        assert [r["id"] for r in cold.records] == [r["id"] for r in warm.records]
        print(f"dedup keys ({len(cold.records)} records): cold {t_cold:.2f} s (map {cold.dedup['seconds']:.2f} s), "
              f"cached {t_warm:.2f} s (map {warm.dedup['seconds']:.2f} s, read back: {warm.dedup['cached']})")
        texts = [embed.record_text(r) for r in cold.records]
        grams = select.HashedNgrams(10_000)
        (f1, s1), t1 = _timed(lambda: select.cached_matrix(grams, texts, tmp))
        (f2, s2), t2 = _timed(lambda: select.cached_matrix(grams, texts, tmp))
        assert (f1 != f2).nnz == 0 and s2["computed"] == 0
        print(f"dsir features ({len(texts)} records): computed {t1:.2f} s, from the store {t2:.2f} s "
              f"({t1 / max(t2, 1e-9):.1f}x)")
        sample = [t[:embed.MAX_CHARS] for t in texts[:n]]
        enc = embed.load_embedder(embed.DEFAULT_EMBEDDER, "cpu")
        embed._encode(enc, sample[:8], 64)        # warm-up
        direct, t_direct = _timed(lambda: embed._encode(enc, sample, 64))
        res, t_map = _timed(lambda: map_batches(sample, lambda: (lambda ts: list(embed._encode(enc, ts, 64))),
                                                ExecutorConfig(batch_size=512), desc="embed"))
        np.testing.assert_allclose(np.stack(res.results), direct, atol=1e-5)
        print(f"embedding {n} texts: direct {t_direct:.2f} s ({n / t_direct:.1f} texts/s), "
              f"datasets map {t_map:.2f} s ({n / t_map:.1f} texts/s)")
        print(f"map/direct = {t_map / t_direct:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
