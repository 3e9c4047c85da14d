"""IFD scoring cost on the default pool with the real student: seconds per record, batches, share >= 1.

    .venv/bin/python benchmarks/ifd_cost.py [N]      # N pool records (default 48), a fixed sample

Scores N records of the packaged ShareGPT pool (the default filters, ``synth.tagging.pool_sample_of``)
with ``synth.ifd.IFDScorer`` on SmolLM2-135M-Instruct exactly as the retrieve stage's IFD gate does
(batched; a fresh cache folder, so every score is computed).
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(n: int) -> None:
    from evalsuite.models import resolve_model
    from synth.ifd import IFDScorer
    from synth.pool import PoolConfig, load_pool
    from synth.retrieve import RetrieveConfig
    from synth.tagging import pool_sample_of

    cfg = RetrieveConfig(pool=PoolConfig(source="sharegpt", max_chars=3000, min_ascii_ratio=0.9))
    with tempfile.TemporaryDirectory() as cache:
        recs = pool_sample_of(load_pool(cfg.pool, cache), n)
        t0 = time.time()
        sc = IFDScorer(resolve_model("embedded:smollm2-135m-instruct"), max_prompt_tokens=cfg.ifd_max_tokens,
                       max_answer_tokens=cfg.ifd_max_tokens)
        print("load_s", round(time.time() - t0, 1), flush=True)
        t0 = time.time()
        s = np.array(sc.score_many(recs))
        dt = time.time() - t0
    print("n", len(recs), "score_s", round(dt, 1), "per_record_s", round(dt / len(recs), 3),
          "batches", sc.stats["forward_batches"], "ifd>=1", int((s >= 1).sum()), "median", round(float(np.median(s)), 3))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48)
