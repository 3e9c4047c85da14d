"""The pool's vector index (the only faiss user): persisted, grown incrementally, flat or IVF.

A ``VectorIndex`` holds one vector per *key* (the content hash of the embedder and the embedded
text, the embedding cache's key), in insertion order, inside one FAISS inner-product index.
It is saved as one ``.npz`` (the serialised index, the keys and its settings) written to a temp
name and renamed, so a reader never sees an index without its keys. For a pool, ``pool_index``
loads the index of the embedder, embeds only the records whose key it lacks (those come from
the embedding cache when embedded before) and adds them: a new round, an added pool or an
edited record costs only its new texts, never a rebuild.

Kinds (``retrieve.index``):

* ``flat`` — exact search, every query against every vector (``IndexFlatIP``).
* ``ivf`` — ``IndexIVFFlat``: k-means cells (``nlist`` ≈ √N, a power of two, trained on up to
  40 × nlist vectors), a query scans its ``nprobe`` nearest cells. New vectors join the cells
  they fall in; when the index has grown to ``RETRAIN_GROWTH`` × the size it was trained at,
  the cells are trained again from the stored vectors.
* ``hnsw`` — ``IndexHNSWFlat`` (graph; grows by itself, no training).
* ``auto`` (default) — flat up to ``flat_max`` vectors (100k), IVF beyond; an index that
  outgrows ``flat_max`` is converted once.

An index may hold vectors of records that are not in the current pool (another pool used with
the same cache, a record since dropped); a search is then restricted to the pool's rows with an
``IDSelectorBatch``. ``benchmarks/retrieval_scale.py`` measures build, save, load, incremental
add and search from 10k to 1M vectors.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "hnsw")
FLAT_MAX = 100_000      # auto: flat up to this many vectors, IVF beyond
RETRAIN_GROWTH = 2.0    # IVF: train the cells again once the index holds this x the vectors it was trained on
TRAIN_PER_CELL = 40     # IVF: training vectors per cell (faiss warns below 39)
HNSW_M, HNSW_EF_SEARCH = 32, 128
VERSION = 1


def _faiss():
    import faiss

    return faiss


def ivf_cells(n: int) -> int:
    """IVF cell count for ``n`` vectors: the power of two nearest √n (at most 65536, at most n)."""
    return int(min(max(n, 1), 2 ** np.clip(round(np.log2(max(n, 1)) / 2), 0, 16)))


class VectorIndex:
    """Unit vectors keyed by content, searched by inner product (= cosine)."""

    def __init__(self, dim: int, kind: str = "auto", flat_max: int = FLAT_MAX, nprobe: int = 32):
        if kind not in KINDS:
            raise ValueError(f"retrieve.index: {kind!r} is not one of {KINDS}")
        self.dim, self.kind, self.flat_max, self.nprobe = dim, kind, flat_max, nprobe
        self.keys: list[str] = []
        self.row: dict[str, int] = {}
        self.trained_on = 0
        self.index = self._empty(self._target_kind(0))
        self.built = self._target_kind(0)

    # ------------------------------------------------------------ kinds
    def _target_kind(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "ivf" if n > self.flat_max else "flat"

    def _empty(self, kind: str, n: int = 0):
        faiss = _faiss()
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = HNSW_EF_SEARCH
            return index
        if kind == "ivf":
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, ivf_cells(n), faiss.METRIC_INNER_PRODUCT)
            index.nprobe = self.nprobe
            return index
        return faiss.IndexFlatIP(self.dim)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def vectors(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.ntotal if stop is None else stop
        if stop <= start:
            return np.zeros((0, self.dim), np.float32)
        return self.index.reconstruct_n(start, stop - start)

    def _rebuild(self, kind: str, vecs: np.ndarray) -> None:
        """A new index of ``kind`` over ``vecs`` (IVF: cells trained on a seeded sample of them)."""
        t0 = time.time()
        index = self._empty(kind, len(vecs))
        if kind == "ivf":
            n_train = min(len(vecs), TRAIN_PER_CELL * index.nlist)
            sample = np.random.default_rng(0).choice(len(vecs), size=n_train, replace=False)
            index.train(np.ascontiguousarray(vecs[np.sort(sample)]))
            index.make_direct_map()           # reconstruct(row): a selected record's vector
            self.trained_on = len(vecs)
        index.add(np.ascontiguousarray(vecs))
        self.index, self.built = index, kind
        log.info("built a %s index of %d vectors in %.1f s", kind, len(vecs), time.time() - t0)

    # ------------------------------------------------------------ growth
    def add(self, keys: list[str], vecs: np.ndarray) -> int:
        """Add the vectors whose key is new (the first of repeated keys); returns how many."""
        vecs = np.asarray(vecs, dtype=np.float32)
        new = {}
        for i, k in enumerate(keys):
            if k not in self.row and k not in new:
                new[k] = i
        if not new:
            return 0
        add_vecs = vecs[list(new.values())]
        total = self.ntotal + len(new)
        kind = self._target_kind(total)
        if kind == "ivf" and (self.built != "ivf" or not self.index.is_trained
                              or total >= RETRAIN_GROWTH * max(self.trained_on, 1)):
            self._rebuild("ivf", np.concatenate([self.vectors(), add_vecs]))   # convert or retrain
        elif kind != self.built:
            self._rebuild(kind, np.concatenate([self.vectors(), add_vecs]))
        else:
            self.index.add(np.ascontiguousarray(add_vecs))
        for k in new:
            self.row[k] = len(self.keys)
            self.keys.append(k)
        return len(new)

    # ------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows) of each query's ``k`` nearest vectors, -1 where none; ``rows``
        restricts the search to those rows."""
        faiss = _faiss()
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.ntotal if rows is None else len(rows))
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        kw = {}
        if self.built == "ivf":
            kw["nprobe"] = self.nprobe
        elif self.built == "hnsw":
            kw["efSearch"] = max(HNSW_EF_SEARCH, k)
        if rows is not None and len(rows) < self.ntotal:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(rows, dtype=np.int64))
            kw["sel"] = sel
        if kw:
            params = {"ivf": faiss.SearchParametersIVF, "hnsw": faiss.SearchParametersHNSW}.get(
                self.built, faiss.SearchParameters)(**kw)
            return self.index.search(q, k, params=params)
        return self.index.search(q, k)

    def reconstruct(self, row: int) -> np.ndarray:
        return self.index.reconstruct(int(row))

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"version": VERSION, "dim": self.dim, "kind": self.kind, "built": self.built,
                "flat_max": self.flat_max, "trained_on": self.trained_on}
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, index=_faiss().serialize_index(self.index), keys=np.asarray(self.keys, dtype="U"),
                 meta=np.asarray(json.dumps(meta)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, kind: str = "auto", flat_max: int = FLAT_MAX,
             nprobe: int = 32) -> "VectorIndex | None":
        """The index saved at ``path``, or None when there is none (or it is unreadable, or was made
        by another version or for another dimension)."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                keys = z["keys"].tolist()
                index = _faiss().deserialize_index(z["index"])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("unreadable index %s (%s): building anew", path, exc)
            return None
        if meta.get("version") != VERSION or index.ntotal != len(keys):
            log.warning("index %s is from another version or inconsistent: building anew", path)
            return None
        self = cls(meta["dim"], kind, flat_max, nprobe)
        self.index, self.built, self.trained_on = index, meta["built"], meta.get("trained_on", 0)
        self.keys, self.row = keys, {k: i for i, k in enumerate(keys)}
        if self.built == "ivf":
            index.nprobe = nprobe
            index.make_direct_map()
        return self


class PoolIndex:
    """A pool's view of a ``VectorIndex``: search results as pool positions (records sharing an
    embedded text share a row; each is returned), vectors by pool position."""

    def __init__(self, vindex: VectorIndex, pool_rows: np.ndarray):
        self.vindex = vindex
        self.pool_rows = np.asarray(pool_rows, dtype=np.int64)
        self.rows = np.unique(self.pool_rows)
        self.pids_of_row: dict[int, list[int]] = {}
        for pid, r in enumerate(self.pool_rows.tolist()):
            self.pids_of_row.setdefault(r, []).append(pid)

    @property
    def ntotal(self) -> int:
        return len(self.pool_rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, pool positions), shape (queries, k), -1 past the last match."""
        sims, rows = self.vindex.search(queries, k, None if len(self.rows) == self.vindex.ntotal else self.rows)
        k = min(k, self.ntotal)
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_p = np.full((len(queries), k), -1, dtype=np.int64)
        for q in range(len(queries)):
            j = 0
            for s, r in zip(sims[q].tolist(), rows[q].tolist()):
                if r < 0 or j >= k:
                    break
                for pid in self.pids_of_row.get(r, ()):
                    if j >= k:
                        break
                    out_s[q, j], out_p[q, j] = s, pid
                    j += 1
        return out_s, out_p

    def vec(self, pid: int) -> np.ndarray:
        return self.vindex.reconstruct(self.pool_rows[pid])


def index_path(folder: str | os.PathLike, kind: str) -> Path:
    return Path(folder) / f"index-{kind}.npz"


def pool_index(texts: list[str], keys: list[str], embed, folder: str | os.PathLike, kind: str = "auto",
               flat_max: int = FLAT_MAX, nprobe: int = 32) -> tuple[PoolIndex, dict]:
    """The pool's index: the persisted one of ``folder`` (one per embedder and kind) with the texts
    whose ``keys`` it lacks embedded (``embed(texts) -> vectors``) and added, saved again when it grew.
    Returns the pool's view and what it cost (vectors added, seconds)."""
    t0 = time.time()
    path = index_path(folder, kind)
    vi = VectorIndex.load(path, kind, flat_max, nprobe)
    loaded = vi is not None
    todo = {}
    for i, k in enumerate(keys):
        if (vi is None or k not in vi.row) and k not in todo:
            todo[k] = i
    t_load = time.time() - t0
    added = 0
    if todo:
        t1 = time.time()
        vecs = embed([texts[i] for i in todo.values()])
        t_embed = time.time() - t1
        if vi is None:
            vi = VectorIndex(vecs.shape[1], kind, flat_max, nprobe)
        t1 = time.time()
        added = vi.add(list(todo), vecs)
        vi.save(path)
        log.info("index %s: %d vectors added (embedded in %.1f s, indexed and saved in %.1f s), %d in all",
                 path, added, t_embed, time.time() - t1, vi.ntotal)
    view = PoolIndex(vi, np.asarray([vi.row[k] for k in keys], dtype=np.int64))
    return view, {"index_kind": vi.built, "index_vectors": vi.ntotal, "index_added": added,
                  "index_loaded": loaded, "index_cached": loaded and not added,
                  "index_load_s": round(t_load, 3), "index_s": round(time.time() - t0, 3)}
