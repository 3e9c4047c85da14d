"""IFD scoring cost and agreement per engine, on the default pool with the real student.

    .venv/bin/python benchmarks/ifd_cost.py [N]      # N pool records (default 48), a fixed sample

Scores the same N records of the packaged ShareGPT pool (the default filters,
``synth.tagging.pool_sample_of``) with ``synth.ifd.IFDScorer`` on SmolLM2-135M-Instruct exactly as
the retrieve stage's IFD gate does (batched, no score cache), once per engine: transformers fp32
(the reference) and CTranslate2 at float32 and int8 (``retrieve.ifd_engine`` /
``ifd_quantization``). Prints per engine the seconds per record, the speed-up over transformers,
and against the reference: the largest IFD difference, the share of keep/drop decisions at
``ifd_max`` = 1 that agree, and the Spearman rank correlation. Last line ``ct2-int8/hf = X``.
"""
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = (("hf", "float32"), ("ct2", "float32"), ("ct2", "int8"))


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)


def main(n: int) -> None:
    from evalsuite.models import cache_root, resolve_model
    from synth.ifd import IFDScorer
    from synth.pool import PoolConfig, load_pool
    from synth.retrieve import RetrieveConfig
    from synth.tagging import pool_sample_of

    cfg = RetrieveConfig(pool=PoolConfig(source="sharegpt", max_chars=3000, min_ascii_ratio=0.9))
    recs = pool_sample_of(load_pool(cfg.pool, cache_root()), n)   # the pool cache; IFD scores are not cached
    model = resolve_model("embedded:smollm2-135m-instruct")
    scores, per_rec = {}, {}
    for engine, q in ENGINES:
        name = "hf" if engine == "hf" else f"ct2-{q}"
        t0 = time.time()
        sc = IFDScorer(model, max_prompt_tokens=cfg.ifd_max_tokens, max_answer_tokens=cfg.ifd_max_tokens,
                       engine=engine, quantization=q)
        load = time.time() - t0
        t0 = time.time()
        s = np.array(sc.score_many(recs))
        dt = time.time() - t0
        sc.close()
        scores[name], per_rec[name] = s, dt / len(recs)
        line = f"{name:12s} n {len(recs)} load_s {load:.1f} score_s {dt:.1f} per_record_s {dt / len(recs):.3f}"
        line += f" ifd>=1 {int((s >= 1).sum())} median {float(np.median(s)):.3f}"
        if name != "hf":
            ref = scores["hf"]
            ok = np.isfinite(ref) & np.isfinite(s)
            rho = float(np.corrcoef(_ranks(ref[ok]), _ranks(s[ok]))[0, 1])
            line += (f" speedup {per_rec['hf'] / per_rec[name]:.2f}x max_abs_diff {float(np.abs(ref[ok] - s[ok]).max()):.4f}"
                     f" decisions_agree {float(((ref >= 1) == (s >= 1)).mean()):.3f} spearman {rho:.4f}")
        print(line, flush=True)
    print(f"ct2-int8/hf = {per_rec['hf'] / per_rec['ct2-int8']:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48)
