"""tag stage: normalisation, category snapping, parse failures counted, content-hash cache."""
import json

from evalsuite.records import read_jsonl
from synth.llm import LLMConfig, load_llm
from synth.tagging import OTHER, TagConfig, normalize_tag, parse_tags, snap_category, tag_texts


def test_normalize_and_snap():
    assert normalize_tag("  Arithmetic Calculations! ") == "arithmetic calculation"
    assert normalize_tag("Knowledge of Biologies") == "knowledge of biology"
    assert normalize_tag("class") == "class" and normalize_tag("analysis") == "analysis"
    cats = TagConfig().categories
    assert snap_category("math", cats) == "Math Reasoning"
    assert snap_category("Programming / coding", cats) == "Coding"
    assert snap_category("Natural language processing.", cats) == "Natural Language Processing"
    assert snap_category("zzzz qqq", cats) == OTHER and snap_category(None, cats) == OTHER


def test_parse_tags_lines_json_and_failure():
    cfg = TagConfig(max_fine=2)
    t = parse_tags("Tags: Fractions, word problems, extra one\nCategory: math, arithmetic\nCategory: Science", cfg)
    assert t == {"fine": ["fraction", "word problem"], "macro": ["Math Reasoning"]}
    t = parse_tags('{"tags": ["Python"], "category": "Coding"}', cfg)
    assert t == {"fine": ["python"], "macro": ["Coding"]}
    assert parse_tags("The capital of Australia is Canberra.", cfg) is None


def _script(tmp_path):
    p = tmp_path / "script.json"
    p.write_text(json.dumps({"rules": [{"match": "Request: broken", "responses": ["I will answer instead."]},
                                       {"match": "Request: write python", "responses": ["Tags: python\nCategory: Coding"]}],
                             "default": "Tags: arithmetic\nCategory: Math"}))
    return load_llm(LLMConfig(backend="fake", model=str(p)))


def test_tag_texts_counts_failures_and_reuses_cache(tmp_path):
    llm = _script(tmp_path)
    cache = tmp_path / "tags.jsonl"
    texts = {"a": "What is 2+2?", "b": "broken item", "c": "write python code", "d": "What is 2+2?"}
    tags, stats = tag_texts(llm, texts, TagConfig(), cache)
    assert tags["a"] == tags["d"] == {"fine": ["arithmetic"], "macro": ["Math Reasoning"]}
    assert tags["b"] == {"fine": [], "macro": [OTHER]}
    assert tags["c"]["macro"] == ["Coding"]
    assert stats["unique"] == 3 and stats["prompted"] == 3
    assert stats["parse_failures"] == 1 and stats["parsed"] == 2
    assert {r["ok"] for r in read_jsonl(cache)} == {True, False}

    seen = llm.prompts_seen
    tags2, stats2 = tag_texts(llm, {**texts, "e": "a new question"}, TagConfig(), cache)
    assert llm.prompts_seen == seen + 1  # only the new text reaches the teacher
    assert stats2["cached"] == 3 and stats2["prompted"] == 1
    assert {k: tags2[k] for k in texts} == tags


# ------------------------------------------------------------------ pool sample, vocabulary, statistics
def test_vocabulary_merges_near_synonyms_by_embedding_and_applies_the_floor():
    from synth.embed import embed_texts
    from synth.tagging import tag_vocabulary

    lists = [["python programming", "arithmetic"], ["python coding"], ["python programming"],
             ["percentage calculation"], ["percent computation"], ["geography"]]
    vocab, st = tag_vocabulary(lists, embed_texts, merge_threshold=0.85, min_count=2)
    # the packaged MiniLM: 'python coding' is 0.91 from 'python programming' (the more frequent), the
    # two percent tags 0.93 apart; arithmetic and geography stand alone, seen once: below the floor
    assert vocab["python coding"] == vocab["python programming"] == "python programming"
    assert vocab["percent computation"] == vocab["percentage calculation"] is not None
    assert vocab["arithmetic"] is None and vocab["geography"] is None
    assert st["merged"] == 2 and st["kept_tags"] == 2 and st["dropped_below_floor"] == 2
    assert st["merges"]["python coding"] == "python programming"
    # no merging, no floor: the vocabulary is the identity
    vocab, st = tag_vocabulary(lists, None, merge_threshold=0.85, min_count=1)
    assert all(k == v for k, v in vocab.items()) and st["merged"] == 0 and st["raw_tags"] == 6


def test_canonical_tags_stats_and_a_stable_pool_sample():
    from evalsuite.records import make_record
    from synth.tagging import canonical_tags, pool_sample_of, tag_stats

    vocab = {"python coding": "python programming", "python programming": "python programming", "rare": None}
    assert canonical_tags({"fine": ["Python Coding", "rare", "new tags"], "macro": ["Coding"]}, vocab) == \
        ["macro:Coding", "fine:python programming", "fine:new tag"]
    st = tag_stats({"pool:a": [{"fine": ["python coding", "rare"], "macro": ["Coding"]},
                               {"fine": ["python programming"], "macro": ["Coding"]}]}, vocab)
    assert st["pool:a"] == {"texts": 2, "distinct_fine": 1, "fine_per_text": 1.0,
                            "top_fine": {"python programming": 2}, "macro_counts": {"Coding": 2}}
    recs = [make_record([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}], "pool:a")
            for i in range(50)]
    first = pool_sample_of(recs, 10)
    assert len(first) == 10 and pool_sample_of(list(reversed(recs)), 10) == first
    grown = pool_sample_of(recs + [make_record([{"role": "user", "content": f"n{i}"}, {"role": "assistant", "content": "a"}],
                                               "pool:a") for i in range(5)], 10)
    assert len({r["id"] for r in grown} & {r["id"] for r in first}) >= 5    # most of the sample persists


def test_snowball_stems_match_inflected_tags_and_keep_a_readable_form():
    from synth.tagging import canonical_tags, tag_key, tag_vocabulary

    assert tag_key("percentage calculation") == tag_key("Percentage calculations") == "percentag calcul"
    assert tag_key("running") == tag_key("runs") and tag_key("coding") != tag_key("cooking")
    lists = [["arithmetic operation"], ["arithmetical operation"], ["arithmetic operating"], ["geography"]]
    vocab, st = tag_vocabulary(lists, None, merge_threshold=0.0, min_count=2)
    # three surface forms, one key: one tag of count 3, named by a surface form (not the stem)
    assert st["stem_merged"] == 2 and st["kept_tags"] == 1 and vocab["geography"] is None
    assert vocab["arithmetic operating"] == vocab["arithmetical operation"] == vocab["arithmetic operation"]
    assert vocab["arithmetic operation"] in {"arithmetic operation", "arithmetical operation", "arithmetic operating"}
    # a surface form the vocabulary never saw still finds its tag by stem key
    assert canonical_tags({"fine": ["Arithmetic Operated"], "macro": []}, vocab) == [f"fine:{vocab['arithmetic operation']}"]
