"""Embeddings with the real packaged MiniLM: normalised, semantically sensible, cached per text."""
from __future__ import annotations

import numpy as np

from synth import embed as embedmod
from synth.embed import cache_folder, embed_texts, record_text, resolve_embedder

TEXTS = ["How do I add two fractions?", "What is 1/2 plus 1/3?", "Write a poem about the sea.",
         "Compose verses about the ocean.", "Explain how a TCP handshake works."]


def test_packaged_model_resolves_to_a_local_folder():
    path = resolve_embedder("all-MiniLM-L6-v2")
    assert path.endswith("model") and (__import__("pathlib").Path(path) / "config.json").exists()
    assert resolve_embedder("some/other-model") == "some/other-model"


def test_embeddings_are_normalised_float32_and_meaningful():
    v = embed_texts(TEXTS)
    assert v.dtype == np.float32 and v.shape == (5, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 4]   # paraphrases are closer


def test_cache_returns_identical_vectors_without_reencoding(tmp_path, monkeypatch):
    folder = cache_folder(tmp_path)
    first = embed_texts(TEXTS[:3], cache_path=folder)
    calls = []
    real = embedmod._encode
    monkeypatch.setattr(embedmod, "_encode", lambda m, t, b: calls.append(list(t)) or real(m, t, b))
    again = embed_texts(list(reversed(TEXTS)), cache_path=folder)
    assert calls == [[TEXTS[3], TEXTS[4]]] or calls == [[TEXTS[4], TEXTS[3]]]   # only the new texts
    np.testing.assert_allclose(again[::-1][:3], first, atol=1e-6)
    calls.clear()
    embed_texts(TEXTS, cache_path=folder)
    assert calls == []


def test_interrupted_shards_are_kept_and_many_shards_merge(tmp_path, monkeypatch):
    monkeypatch.setattr(embedmod, "SHARD_ROWS", 1)
    monkeypatch.setattr(embedmod, "MAX_SHARDS", 3)
    folder = tmp_path / "emb"
    base = embed_texts(TEXTS, batch_size=1, cache_path=folder)   # 5 shards, then merged into 1
    assert len(list(folder.glob("shard-*.npz"))) == 1
    (folder / "shard-garbage.npz").write_bytes(b"not a zip")       # unreadable shard: skipped
    np.testing.assert_allclose(embed_texts(TEXTS, cache_path=folder), base, atol=1e-6)


def test_record_text_is_the_first_user_turn():
    rec = {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "u" * 3000},
                        {"role": "assistant", "content": "a"}]}
    assert record_text(rec) == "u" * 2000
