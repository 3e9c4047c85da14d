"""The persisted vector index: incremental growth by key, flat -> IVF, IVF retraining, restricted
search, pool views over shared rows, and unreadable files."""
from __future__ import annotations

import numpy as np
import pytest

from synth.vindex import PoolIndex, VectorIndex, index_path, ivf_cells, pool_index


def _vecs(n, dim=32, seed=0, centers=8):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim))
    v = c[rng.integers(0, centers, n)] + 0.3 * rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_growth_by_key_conversion_retraining_and_persistence(tmp_path):
    v = _vecs(1200)
    keys = [f"k{i}" for i in range(1200)]
    vi = VectorIndex(32, "auto", flat_max=500, nprobe=1024)
    assert vi.add(keys[:400], v[:400]) == 400 and vi.built == "flat"
    assert vi.add(keys[:400] + ["k0"], np.concatenate([v[:400], v[:1]])) == 0      # nothing new
    assert vi.add(keys[300:600], v[300:600]) == 200 and vi.built == "ivf" and vi.trained_on == 600
    assert vi.add(keys[600:1000], v[600:1000]) == 400 and vi.trained_on == 600    # joins the cells
    assert vi.add(keys[1000:], v[1000:]) == 200 and vi.trained_on == 1200         # grown 2x: trained again
    assert vi.index.nlist == ivf_cells(1200) == 32
    exact = np.argsort(-(v[:20] @ v.T), axis=1)[:, :5]
    assert (vi.search(v[:20], 5)[1] == exact).all()        # nprobe covers every cell: exact
    np.testing.assert_allclose(vi.reconstruct(1100), v[1100])
    path = index_path(tmp_path, "auto")
    vi.save(path)
    back = VectorIndex.load(path, "auto", 500, 1024)
    assert back.built == "ivf" and back.keys == keys and (back.search(v[:20], 5)[1] == exact).all()
    path.write_bytes(b"not an npz")
    assert VectorIndex.load(path) is None


def test_restricted_search_and_shared_rows(tmp_path):
    v = _vecs(50, seed=1)
    for kind in ("flat", "ivf", "hnsw"):
        vi = VectorIndex(32, kind, nprobe=64)
        vi.add([f"k{i}" for i in range(50)], v)
        sims, rows = vi.search(v[:3], 4, rows=np.arange(10, 50))
        assert (rows >= 10).all() and rows[0, 0] != 0
        # a pool of 4 records over rows 5, 5, 7, 9: the records sharing row 5 both come back
        view = PoolIndex(vi, np.array([5, 5, 7, 9]))
        s, pids = view.search(v[5:6], 3)
        assert sorted(pids[0, :2].tolist()) == [0, 1] and pids[0, 2] in (2, 3) and s[0, 0] == pytest.approx(1.0)
        np.testing.assert_allclose(view.vec(2), v[7])


def test_pool_index_embeds_only_what_the_index_lacks(tmp_path):
    v = _vecs(30, seed=2)
    table = {f"t{i}": v[i] for i in range(30)}
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.stack([table[t] for t in texts])

    texts = [f"t{i}" for i in range(20)]
    view, st = pool_index(texts, texts, embed, tmp_path, "flat")
    assert (st["index_added"], st["index_cached"], len(calls[0])) == (20, False, 20)
    view, st = pool_index(texts[5:] + ["t25", "t5"], texts[5:] + ["t25", "t5"], embed, tmp_path, "flat")
    assert calls[-1] == ["t25"] and st["index_vectors"] == 21 and view.ntotal == 17
    assert view.search(v[25:26], 1)[1][0, 0] == 15
    _, st = pool_index(texts, texts, embed, tmp_path, "flat")
    assert st["index_cached"] and len(calls) == 2
