"""The synthesize stage's pool seeds: the glue picks them from the converted pool by the tag
stage's tags, else by embedding similarity to the failed dev items; its fingerprint covers the pool."""
from __future__ import annotations

from evalsuite.records import make_record, write_json, write_jsonl
from loop.config import load_config
from loop.run import _pool_seeds, stage_inputs
from synth.pools import load_union

POOL = ["Add the prices of three books bought in a shop and give the total.",
        "Write a short poem about the rain, all in lowercase letters.",
        "Explain how a python function returns a value to its caller.",
        "How many wheels do seven bicycles and two tricycles have together?"]


def _setup(tmp_path):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, [make_record([{"role": "user", "content": t}, {"role": "assistant", "content": "Sure: ..."}],
                                   "pool:t") for t in POOL])
    cfg = load_config(None, [f"retrieve.pool.source={pool}", f"cache_dir={tmp_path / 'cache'}"])
    recs = load_union(cfg.retrieve.pool, cfg.retrieve.pools, tmp_path / "cache").records
    tags = tmp_path / "tag"
    tags.mkdir()
    write_json(tags / "vocab.json", {"vocab": {"lowercase writing": "lowercase writing"}})
    write_jsonl(tags / "pool_tags.jsonl", [{"id": r["id"], "source": r["source"],
                                            "fine": ["lowercase writing"] if "poem" in r["messages"][0]["content"]
                                            else ["explanation"], "macro": []} for r in recs])
    samples = tmp_path / "samples.jsonl"
    write_jsonl(samples, [{"task": "math", "doc_id": 1, "split": "dev", "correct": False, "target": "20",
                           "prompt": "How many wheels do four bicycles and four tricycles have?", "response": "8"}])
    return cfg, recs, tags, samples, pool


def test_seeds_by_tags_else_by_embedding_of_the_failed_items(tmp_path):
    cfg, recs, tags, samples, _ = _setup(tmp_path)
    by_text = {r["messages"][0]["content"]: r["id"] for r in recs}
    defs = [{"id": "if", "ability": "lowercase", "tags": ["Lowercase writing"], "examples": []},
            {"id": "math", "ability": "counting", "tags": [], "examples": ["math/1"]}]
    seeds = _pool_seeds(cfg, defs, samples, tags)
    assert seeds["if"][0] == {"id": by_text[POOL[1]], "instruction": POOL[1], "match": "tags", "score": 1.0}
    assert all(s["match"] == "tags" for s in seeds["if"])       # no failed items given: tags alone
    assert seeds["math"][0]["id"] == by_text[POOL[3]] and seeds["math"][0]["match"] == "embedding"
    off = load_config(None, [f"retrieve.pool.source={cfg.retrieve.pool.source}", "synthesize.pool_seed_share=0"])
    assert _pool_seeds(off, defs, samples, tags) is None


def test_synthesize_fingerprint_covers_the_pool_when_it_seeds(tmp_path):
    cfg, _, _, _, pool = _setup(tmp_path)
    before = stage_inputs(cfg)["synthesize"]
    with pool.open("a") as f:
        f.write('{"messages": [{"role": "user", "content": "One more request for the pool."}, '
                '{"role": "assistant", "content": "ok"}]}\n')
    assert stage_inputs(cfg)["synthesize"] != before
    off = load_config(None, [f"retrieve.pool.source={pool}", "synthesize.pool_seed_share=0"])
    assert stage_inputs(off)["synthesize"][-1] is None
