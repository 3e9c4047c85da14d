"""Retrieval: right neighbours, weights, token budget, max_records, cached index, output records.

These test the kNN part alone (``dsir_share=0``); tests/synth/test_select.py covers the
quotas, DSIR, KL, length, content-rule and diversity gates."""
from __future__ import annotations

import pytest

from evalsuite.records import make_record, read_records
from synth.retrieve import RetrieveConfig, retrieve

TOPICS = {
    "math": ["How do I add the fractions 1/2 and 1/3?", "Solve the equation 3x + 5 = 20 for x.",
             "What is 15 percent of 80?", "Compute the derivative of x^2 + 3x."],
    "code": ["Write a Python function that reverses a list.", "How do I read a CSV file in pandas?",
             "Fix this JavaScript loop that never ends.", "Explain recursion with a Python example."],
    "cooking": ["How long should I boil an egg?", "Give me a recipe for banana bread.",
                "What spices go well with lentil soup?", "How do I make fresh pasta dough?"],
    "history": ["Who was the first Roman emperor?", "What caused the French Revolution?",
                "When did the Berlin Wall fall?", "Summarise the causes of World War I."],
}


def pool_records(answer_len: int = 40) -> list[dict]:
    return [make_record([{"role": "user", "content": q}, {"role": "assistant", "content": "x" * answer_len}],
                        "pool:test", id=f"pool:test:{topic}{i}")
            for topic, qs in TOPICS.items() for i, q in enumerate(qs)]


@pytest.fixture()
def pool():
    return pool_records()


def test_queries_retrieve_their_topic_with_metadata(pool, tmp_path):
    cfg = RetrieveConfig(k_per_query=3, min_similarity=0.3, max_records=0, token_budget=0, dsir_share=0)
    out = tmp_path / "retrieved.jsonl"
    stats = retrieve(pool, ["solve 2x - 4 = 10", "write a python function to sort a dict"], cfg,
                     tmp_path / "cache", out)
    recs = read_records(out)
    assert stats["selected"] == len(recs) > 0 and stats["n_queries"] == 2 and stats["n_pool"] == 16
    assert {r["id"][len("pool:test:"):-1] for r in recs} <= {"math", "code"}
    by_q = {r["meta"]["retrieval"]["query_idx"] for r in recs}
    assert by_q == {0, 1}
    scores = [r["meta"]["retrieval"]["score"] for r in recs]
    assert all(s >= 0.3 for s in scores) and [r["meta"]["retrieval"]["rank"] for r in recs] == list(range(len(recs)))
    assert stats["mean_similarity"] == pytest.approx(sum(scores) / len(scores), abs=1e-3)
    assert "retrieval" not in pool[0]["meta"]          # the pool itself is not modified
    for key in ("candidates", "tokens", "wall_s", "index_cached"):
        assert key in stats


def test_weights_order_the_selection(pool, tmp_path):
    cfg = RetrieveConfig(k_per_query=4, min_similarity=0.0, max_records=4, token_budget=0, dsir_share=0)
    queries = ["how to cook an egg", "which emperor ruled Rome first"]
    out = tmp_path / "r.jsonl"
    retrieve(pool, queries, cfg, tmp_path / "c", out, weights=[1.0, 3.0])
    got = read_records(out)
    assert got[0]["id"].startswith("pool:test:history")
    # quotas: 4 records shared 3:1 by weight (the heavier query takes first), not 4:0 by weighted score
    assert [r["meta"]["retrieval"]["query_idx"] for r in got] == [1, 0, 1, 1]
    retrieve(pool, queries, cfg, tmp_path / "c", out, weights=[3.0, 1.0])
    assert read_records(out)[0]["id"].startswith("pool:test:cooking")


def test_token_budget_and_max_records_are_respected(tmp_path):
    pool = pool_records(answer_len=400)  # ~110 approx tokens per record
    queries = ["fractions and equations", "python code", "cooking recipes", "history of wars"]
    base = dict(k_per_query=16, min_similarity=-1.0, dsir_share=0)
    s = retrieve(pool, queries, RetrieveConfig(**base, max_records=0, token_budget=350), tmp_path / "c", tmp_path / "a.jsonl")
    assert s["tokens"] <= 350 and s["selected"] == 3 and s["candidates"] == 16
    assert s["tokens"] == sum(sum(len(m["content"]) for m in r["messages"]) // 4 for r in read_records(tmp_path / "a.jsonl"))
    s = retrieve(pool, queries, RetrieveConfig(**base, max_records=5, token_budget=0), tmp_path / "c", tmp_path / "b.jsonl")
    assert s["selected"] == 5


def test_min_similarity_filters_everything_when_high(pool, tmp_path):
    s = retrieve(pool, ["quantum chromodynamics lattice"], RetrieveConfig(min_similarity=0.95), tmp_path / "c", tmp_path / "o.jsonl")
    assert s["selected"] == 0 and read_records(tmp_path / "o.jsonl") == []


def test_index_is_persisted_and_grown_only_by_new_records(pool, tmp_path):
    cfg = RetrieveConfig(k_per_query=2, min_similarity=0.0)
    a = retrieve(pool, ["boil an egg"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    b = retrieve(pool, ["boil an egg"], cfg, tmp_path / "c", tmp_path / "o2.jsonl")
    assert (a["index_cached"], a["index_added"], a["index_kind"]) == (False, 16, "flat")
    assert (b["index_cached"], b["index_added"], b["index_vectors"]) == (True, 0, 16)
    assert read_records(tmp_path / "o.jsonl") == read_records(tmp_path / "o2.jsonl")
    # a smaller pool searches only its own rows of the same index
    c = retrieve(pool[8:], ["boil an egg"], cfg, tmp_path / "c", tmp_path / "o3.jsonl")
    assert c["index_cached"] is True and c["n_pool"] == 8
    assert {r["id"] for r in read_records(tmp_path / "o3.jsonl")} <= {r["id"] for r in pool[8:]}
    # an added pool embeds and adds only its new records
    extra = [make_record([{"role": "user", "content": f"How do I poach an egg, method {i}?"},
                          {"role": "assistant", "content": "x" * 40}], "pool:more", id=f"pool:more:{i}") for i in range(3)]
    d = retrieve(pool + extra, ["poach an egg"], cfg, tmp_path / "c", tmp_path / "o4.jsonl")
    assert (d["index_cached"], d["index_added"], d["index_vectors"]) == (False, 3, 19)
    assert read_records(tmp_path / "o4.jsonl")[0]["id"].startswith("pool:more:")
    assert len(list((tmp_path / "c" / "embeddings").rglob("index-*.npz"))) == 1


def test_ivf_and_auto_switch_give_the_flat_neighbours(pool, tmp_path):
    flat = retrieve(pool, ["boil an egg", "roman emperor"], RetrieveConfig(k_per_query=3, min_similarity=0.0),
                    tmp_path / "c", tmp_path / "f.jsonl")
    # auto with a tiny flat_max: the 16 vectors outgrow flat and become IVF (nprobe = every cell: exact)
    ivf = retrieve(pool, ["boil an egg", "roman emperor"],
                   RetrieveConfig(k_per_query=3, min_similarity=0.0, index_flat_max=8, index_nprobe=64),
                   tmp_path / "c2", tmp_path / "i.jsonl")
    assert flat["index_kind"] == "flat" and ivf["index_kind"] == "ivf"
    assert [r["id"] for r in read_records(tmp_path / "f.jsonl")] == [r["id"] for r in read_records(tmp_path / "i.jsonl")]


def test_hnsw_index_and_tokenizer_counts(pool, tmp_path, tiny_model_path):
    cfg = RetrieveConfig(k_per_query=2, min_similarity=0.3, index="hnsw", tokenizer=tiny_model_path, ifd_max=0)
    s = retrieve(pool, ["boil an egg"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    (top, *_) = read_records(tmp_path / "o.jsonl")
    assert top["id"] == "pool:test:cooking0"
    assert 0 < s["tokens"] != sum(len(m["content"]) for r in read_records(tmp_path / "o.jsonl") for m in r["messages"]) // 4


def test_bad_arguments_are_named(pool, tmp_path):
    with pytest.raises(ValueError, match="2 weights for 1 queries"):
        retrieve(pool, ["q"], RetrieveConfig(), tmp_path, tmp_path / "o.jsonl", weights=[1, 2])
    with pytest.raises(ValueError, match="retrieve.index"):
        retrieve(pool, ["q"], RetrieveConfig(index="annoy"), tmp_path, tmp_path / "o.jsonl")
    s = retrieve(pool, [], RetrieveConfig(), tmp_path, tmp_path / "o.jsonl")
    assert s["selected"] == 0 and (tmp_path / "o.jsonl").exists()


def test_repeated_prompts_are_taken_once(pool, tmp_path):
    twins = [make_record([{"role": "user", "content": "How long should I boil an egg??"},
                          {"role": "assistant", "content": f"answer {i}"}], "pool:test", id=f"pool:test:twin{i}")
             for i in range(3)]
    cfg = RetrieveConfig(k_per_query=8, min_similarity=0.5, max_records=0, token_budget=0, dsir_share=0)
    s = retrieve(pool + twins, ["boil an egg"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    texts = [r["messages"][0]["content"].rstrip("?") for r in read_records(tmp_path / "o.jsonl")]
    assert texts.count("How long should I boil an egg") == 1 and s["skipped_same_prompt"] == 3
    cfg.distinct_prompts, cfg.diversity_threshold = False, 0.0   # both gates off: every twin is taken
    retrieve(pool + twins, ["boil an egg"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    texts = [r["messages"][0]["content"].rstrip("?") for r in read_records(tmp_path / "o.jsonl")]
    assert texts.count("How long should I boil an egg") == 4
