"""Selection (issue 12): per-query quotas instead of count-weighted scores, DSIR matching visible
as KL, nothing longer than max_seq_len, content rules, the diversity filter, tag preferences.

Small pools written here, the real MiniLM embedder, SmolLM2's real tokenizer (tiny model)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from evalsuite.records import make_record, read_records
from synth import select
from synth.embed import embed_texts
from synth.heuristics import DropRule, RuleSet, default_rules
from synth.retrieve import RetrieveConfig, eval_targets, quota_order, retrieve


def rec(user: str, answer: str = "Sure, here it is.", rid: str | None = None, turns: list[str] | None = None) -> dict:
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    for i, t in enumerate(turns or []):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return make_record(msgs, "pool:test", id=rid or f"pool:test:{zlib.crc32(user.encode())}")


FORMATTING = ["Format this paragraph as a bulleted list.", "Convert this text into a numbered list, please.",
              "Rewrite my notes using markdown headings and bullet points.", "Put this answer in a table format.",
              "Reformat the following email so it follows a formal layout.", "Format the output as JSON with two keys.",
              "Turn these sentences into a neatly formatted outline.", "Please format this list alphabetically with dashes."]
MATH = ["What is the derivative of x^3 + 2x?", "Integrate 3x^2 from 0 to 2.", "Solve the equation 4x - 7 = 9.",
        "What is 15 percent of 240?", "Find the area of a circle with radius 3 cm.",
        "A train travels 120 km in 2 hours. What is its average speed?", "Simplify the fraction 18/24.",
        "How many apples are left if Tom has 12 and gives away 5?", "Compute 7 times 8 plus 6.",
        "If a shirt costs 20 dollars and is 25 percent off, what is the price?"]
OTHER = ["Give me a recipe for banana bread with walnuts.", "How long should I boil an egg for a runny yolk?",
         "What spices go well with lentil soup?", "Who was the first Roman emperor?",
         "What caused the French Revolution?", "When did the Berlin Wall fall?",
         "Plan a three day trip to Lisbon on a budget.", "Which plants grow well in shade in a small garden?",
         "Write a poem about autumn leaves falling.", "Recommend three science fiction novels for a teenager.",
         "How do I care for a sourdough starter?", "What are the rules of cricket in simple terms?",
         "Describe the life cycle of a butterfly.", "What is the capital of Australia and why not Sydney?",
         "Suggest names for a golden retriever puppy.", "How do I remove a red wine stain from a carpet?"]


def test_failure_best_neighbour_wins_over_a_high_count_deficiency(tmp_path):
    """A failed item's nearest record is selected even when a deficiency with a high count has
    many neighbours: its phrase gets a quota, not a multiplier on its similarities."""
    pool = [rec(t) for t in FORMATTING + MATH + OTHER]
    failure = "Differentiate f(x) = x^3 + 2x with respect to x."
    deficiency = {"ability": "following formatting instructions", "count": 6}
    t = eval_targets([{"task": "m", "doc_id": 1, "prompt": failure, "correct": False}], [
        {"task": "m", "doc_id": 1, "prompt": failure, "correct": False}], [deficiency], RetrieveConfig())
    assert t.weights == [1.0, 3.0] and t.queries == [failure, deficiency["ability"]]
    # the scenario is real: with score = weight x cosine the deficiency's neighbours would fill 3 slots
    q = embed_texts(t.queries)
    v = embed_texts([r["messages"][0]["content"] for r in pool])
    best_failure = float((v @ q[0]).max())
    assert sum(3.0 * float(s) > best_failure for s in v @ q[1]) >= 3
    cfg = RetrieveConfig(k_per_query=8, min_similarity=0.1, max_records=3, token_budget=0, dsir_share=0)
    s = retrieve(pool, t.queries, cfg, tmp_path / "c", tmp_path / "o.jsonl", weights=t.weights)
    got = [r["messages"][0]["content"] for r in read_records(tmp_path / "o.jsonl")]
    assert "What is the derivative of x^3 + 2x?" in got and s["selected"] == 3
    assert sum(g in FORMATTING for g in got) == 2   # 3 records shared 1 : 3 by weight -> 1 and 2
    assert s["queries_matched"] == 2


def test_eval_targets_weights():
    dev = [{"task": "t", "doc_id": i, "prompt": f"question {i}", "correct": i % 2 == 0} for i in range(4)]
    failures = [d for d in dev if not d["correct"]]
    defs = [{"ability": "a", "count": 4}, {"ability": "b", "count": 1}]
    t = eval_targets(dev, failures, defs, RetrieveConfig(deficiency_share=0.5, passed_weight=0.25))
    assert t.queries == ["question 1", "question 3", "a", "b"] and t.weights == [1, 1, 2.0, 0.5]
    assert t.target == ["question 0", "question 1", "question 2", "question 3", "a", "b"]
    assert t.target_weights == [0.25, 1.0, 0.25, 1.0, 2.0, 0.5]
    t = eval_targets(dev, [], [], RetrieveConfig())   # nothing failed: every dev item, equally
    assert t.weights == [1.0] * 4 and t.target_weights == [1.0] * 4


def test_quota_order_shares_by_weight():
    lists = [list(range(0, 100)), list(range(100, 200)), list(range(200, 300))]
    taken = []

    def take(pid, q):
        if len(taken) >= 40:
            return -1
        taken.append(q)
        return True
    quota_order(lists, [1.0, 3.0, 0.0], take)
    assert taken.count(1) == 30 and taken.count(0) == 10 and taken.count(2) == 0 and taken[0] == 1
    # a budget smaller than the number of equal queries: the first picks go in a seeded random
    # order, not to the first queries (in the loop: the first task's failed items)
    firsts = []
    for seed in (0, 1):
        taken.clear()
        lists = [[i] for i in range(100)]
        quota_order(lists, [1.0] * 100, lambda pid, q: -1 if len(taken) >= 10 else taken.append(q) or True, seed=seed)
        assert len(set(taken)) == 10 and max(taken) > 20
        firsts.append(list(taken))
    assert firsts[0] != firsts[1]


def test_dsir_matches_the_target_better_than_random(tmp_path):
    pool = [rec(t, rid=f"pool:test:{i}") for i, t in enumerate(FORMATTING + MATH + OTHER)]
    dev = [{"task": "math", "doc_id": i, "prompt": p, "correct": False} for i, p in enumerate([
        "Tom has 14 apples and gives away 6. How many apples are left?",
        "What is 30 percent of 150?", "Solve 3x + 4 = 19 for x.",
        "A car travels 90 km in 1.5 hours. What is its average speed in km per hour?",
        "Compute the area of a circle with radius 5 cm."])]
    t = eval_targets(dev, dev, [], RetrieveConfig())
    for share in (1.0, 0.5):
        cfg = RetrieveConfig(k_per_query=3, min_similarity=0.2, max_records=6, token_budget=0, dsir_share=share)
        s = retrieve(pool, t.queries, cfg, tmp_path / "c", tmp_path / "o.jsonl", weights=t.weights,
                     target=t.target, target_weights=t.target_weights)
        got = [r["messages"][0]["content"] for r in read_records(tmp_path / "o.jsonl")]
        assert s["kl_target_selected"] < s["kl_target_random"], s
        if share == 1.0:   # DSIR takes only records likelier under the target than the pool: 4 math ones here
            assert 4 <= s["selected"] < 6 and all(g in MATH for g in got), got
            assert s["by_part"] == {"knn": 0, "dsir": s["selected"]}
    # half and half: what DSIR cannot fill goes back to the kNN quotas
    assert s["selected"] == 6 and sum(g in MATH for g in got) >= 5, got
    dsir = [r for r in read_records(tmp_path / "o.jsonl") if r["meta"]["retrieval"]["via"] == "dsir"]
    assert dsir and all(r["meta"]["retrieval"]["log_importance"] > 0 for r in dsir)
    assert all(r["meta"]["retrieval"]["score"] >= 0.2 for r in dsir)     # dsir_scope "near": within min_similarity
    assert s["by_part"]["knn"] >= 3 and s["by_part"]["dsir"] >= 1


def test_kl_and_importance_on_hashed_ngrams():
    grams = select.HashedNgrams(64)
    a = grams.features("Solve the equation")
    assert len(a) == 3 + 2 and (a == select.HashedNgrams(64).features("solve, THE equation!")).all()  # the one normaliser
    target = select.target_counts(grams.matrix(["apples and pears", "apples"]), [1.0, 1.0])
    pool = grams.matrix(["apples and pears", "cars and trucks", "apples"])
    lw = select.log_importance(pool, target)
    assert lw[0] > 0 and lw[2] > 0 and lw[1] < 0
    assert select.kl_to(target, pool, [0, 2]) < select.kl_to(target, pool, [1])
    assert select.kl(select.smoothed(target, 0.01), select.smoothed(target, 0.01)) == pytest.approx(0.0)


def test_no_record_is_longer_than_max_seq_len(tmp_path, tiny_model_path):
    from transformers import AutoTokenizer

    from train.format import encode

    long_answer = "This is a long explanation of cooking. " * 60           # ~500 tokens
    pool = [rec(f"Recipe question {i}: how do I cook dish number {i}?", "Short answer.", rid=f"pool:test:s{i}")
            for i in range(6)]
    pool += [rec(f"Recipe question long {i}: how do I cook a big feast {i}?", long_answer, rid=f"pool:test:l{i}")
             for i in range(3)]
    multi = rec("Recipe chat: how do I cook rice?", "Rinse it, then simmer it.", rid="pool:test:multi",
                turns=["And pasta?", long_answer, "And soup?", "Simmer it too."])
    pool.append(multi)
    cfg = RetrieveConfig(k_per_query=20, min_similarity=-1, max_records=0, token_budget=0, dsir_share=0,
                         diversity_threshold=0, ifd_max=0)   # the tiny model's IFD would drop at random
    s = retrieve(pool, ["how do I cook food"], cfg, tmp_path / "c", tmp_path / "o.jsonl",
                 student=tiny_model_path, max_seq_len=200)
    got = read_records(tmp_path / "o.jsonl")
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    for r in got:
        encode(tok, r, 200)            # the trainer's own encoder: raises SkipRecord if too long
        assert r["meta"]["retrieval"]["tokens"] <= 200
    ids = {r["id"] for r in got}
    assert s["skipped_too_long"] == 3 and not any(i.startswith("pool:test:l") for i in ids)
    kept = next(r for r in got if r["id"] == "pool:test:multi")
    assert kept["messages"] == multi["messages"][:2] and kept["meta"]["retrieval"]["kept_messages"] == 2
    assert s["kept_prefix"] == 1 and s["selected"] == 7 and s["tokenizer"] == tiny_model_path
    cfg.split_long = False
    s = retrieve(pool, ["how do I cook food"], cfg, tmp_path / "c", tmp_path / "o.jsonl",
                 student=tiny_model_path, max_seq_len=200)
    assert s["skipped_too_long"] == 4 and s["selected"] == 6


CODE = {
    "http_requests": "import requests\nr = requests.get('https://example.com')\nprint(r.text)",
    "urllib": "from urllib.request import urlopen\nprint(urlopen('https://example.com').read())",
    "socket": "import socket\ns = socket.socket()\ns.connect(('example.com', 80))",
    "file_write": "with open('out.txt', 'w') as f:\n    f.write('hello')",
    "file_delete": "import os\nos.remove('data.csv')",
    "subprocess": "import subprocess\nsubprocess.run(['ls', '-l'])",
}


def test_content_rules_drop_and_count(tmp_path):
    pool = [rec(f"Write Python code for task {name}.", f"```python\n{code}\n```", rid=f"pool:test:{name}")
            for name, code in CODE.items()]
    pool += [rec("Write Python code that reads a file and counts lines.",
                 "```python\nwith open('data.txt') as f:\n    print(sum(1 for _ in f))\n```", rid="pool:test:read"),
             rec("Write Python code to sum a list.", "```python\nprint(sum([1, 2, 3]))\n```", rid="pool:test:sum"),
             rec("Which python library makes HTTP requests easy?", "The requests library.", rid="pool:test:prose")]
    cfg = RetrieveConfig(k_per_query=20, min_similarity=-1, max_records=0, token_budget=0, dsir_share=0,
                         diversity_threshold=0)
    s = retrieve(pool, ["write python code"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    assert s["dropped_by_rule"] == {**{name: 1 for name in CODE}, "share_banner": 0, "no_request": 0}
    assert {r["id"] for r in read_records(tmp_path / "o.jsonl")} == {"pool:test:read", "pool:test:sum", "pool:test:prose"}
    cfg.drop_rules = [DropRule("no_sum", r"\bsum\(")]       # rules are configurable data
    s = retrieve(pool, ["write python code"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    assert s["dropped_by_rule"] == {"no_sum": 2} and s["selected"] == len(pool) - 2
    rules = RuleSet(default_rules())
    assert rules.first_match(pool[0]) == "http_requests"
    assert rules.first_match(rec("Continue writing please")) == "no_request" and rules.first_match(rec("5")) == "no_request"
    assert rules.first_match(rec("Write a story", "continue")) is None          # only the first user turn
    assert RuleSet([DropRule("x", "story", where="assistant")]).first_match(rec("Write a story")) is None


def test_rules_and_shares_in_the_config_are_checked():
    from loop.config import ConfigError, load_config

    cfg = load_config(None, ['retrieve.drop_rules=[{name: eval_call, pattern: "\\\\beval\\\\("}]', "retrieve.dsir_share=1"])
    assert cfg.retrieve.drop_rules == [DropRule("eval_call", r"\beval\(")] and cfg.retrieve.dsir_share == 1.0
    with pytest.raises(ConfigError, match="drop rule 'x': bad regex"):
        load_config(None, ["retrieve.drop_rules=[{name: x, pattern: '(('}]"])
    with pytest.raises(ConfigError, match=r"retrieve\.dsir_share must be in \[0, 1\]"):
        load_config(None, ["retrieve.dsir_share=1.5"])


def test_diversity_filter_skips_near_copies(tmp_path):
    eggs = ["How do I boil an egg?", "How can I boil an egg?", "How should I boil an egg?"]
    pool = [rec(t, rid=f"pool:test:egg{i}") for i, t in enumerate(eggs)]
    pool += [rec("How long should I poach an egg for breakfast?", rid="pool:test:poach"),
             rec("Give me a recipe for scrambled eggs with cheese.", rid="pool:test:scramble")]
    v = embed_texts(eggs)
    assert float(v[0] @ v[1]) > 0.9 and float(v[0] @ v[2]) > 0.9     # near copies in words the dedup would miss
    cfg = RetrieveConfig(k_per_query=5, min_similarity=0.0, max_records=3, token_budget=0, dsir_share=0,
                         diversity_threshold=0.9)
    s = retrieve(pool, ["boil an egg"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    ids = [r["id"] for r in read_records(tmp_path / "o.jsonl")]
    assert sum(i.startswith("pool:test:egg") for i in ids) == 1 and s["skipped_diversity"] == 2 and len(ids) == 3
    cfg.diversity_threshold = 0.0
    retrieve(pool, ["boil an egg"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    assert sum(r["id"].startswith("pool:test:egg") for r in read_records(tmp_path / "o.jsonl")) == 3
    f = select.DiversityFilter(0.9)
    assert f.admits(v[1])
    f.add(v[0])
    assert not f.admits(v[1]) and select.DiversityFilter(0.0).admits(v[1])


def test_informative_bonus_favours_multi_ability_and_rare_tags():
    """Multi-ability is fine tags spanning >= 2 macro categories (each fine tag's majority macro),
    not merely several tags; rare tags gain too; untagged records get nothing."""
    def tagged(macro, *fine):
        r = rec("x")
        r["tags"] = {"fine": list(fine), "macro": [macro]}
        return r
    pool = [tagged("Math Reasoning", "arithmetic"), tagged("Math Reasoning", "arithmetic"),
            tagged("Math Reasoning", "arithmetic", "algebra"), tagged("Coding", "python"), tagged("Coding", "python"),
            tagged("Math Reasoning", "arithmetic", "python"),      # math + coding: two categories
            tagged("Math Reasoning", "algebra", "arithmetic"),     # two tags, one category
            rec("untagged")]
    feats = select.record_tag_features(pool)
    assert select.fine_macros(feats) == {"fine:arithmetic": "Math Reasoning", "fine:algebra": "Math Reasoning",
                                         "fine:python": "Coding"}
    multi = select.informative_bonus(feats, multi_weight=0.5, tail_weight=0.0)
    assert multi[5] == pytest.approx(0.5 * np.log(2)) and multi[6] == 0 and multi[2] == 0 and multi[7] == 0
    b = select.informative_bonus(feats, multi_weight=0.5, tail_weight=1.0)
    assert b[5] > b[6] and b[2] > b[0] and b[7] == 0.0          # algebra is rarer than arithmetic
    assert not select.informative_bonus(feats, 0.0, 0.0).any()


def test_knn_order_prefers_informative_records_among_the_neighbours(tmp_path):
    """The kNN lists rank by cosine + knn_tag_weight x the informative bonus: a multi-ability record
    overtakes a slightly closer single-ability one; knn_tag_weight 0 keeps cosine order."""
    pool = [rec("Solve the equation 4x - 7 = 9.", rid="pool:test:single"),
            rec("Solve the equation 4x - 7 = 9 with Python code.", rid="pool:test:multi")]
    pool[0]["tags"] = {"fine": ["equation"], "macro": ["Math Reasoning"]}
    pool[1]["tags"] = {"fine": ["equation", "python"], "macro": ["Coding"]}
    extra = [rec(f"Unrelated chat {i}", rid=f"pool:test:x{i}") for i in range(3)]
    for i, r in enumerate(extra):
        r["tags"] = {"fine": ["equation" if i < 2 else "python"], "macro": ["Math Reasoning" if i < 2 else "Coding"]}
    cfg = RetrieveConfig(k_per_query=2, min_similarity=0.3, max_records=1, token_budget=0, dsir_share=0,
                         diversity_threshold=0, ifd_max=0, knn_tag_weight=0.0)
    retrieve(pool + extra, ["Solve the equation 4x - 7 = 9."], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    assert [r["id"] for r in read_records(tmp_path / "o.jsonl")] == ["pool:test:single"]
    cfg.knn_tag_weight, cfg.multi_tag_weight, cfg.long_tail_weight = 1.0, 1.0, 0.0
    s = retrieve(pool + extra, ["Solve the equation 4x - 7 = 9."], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    got = read_records(tmp_path / "o.jsonl")
    assert [r["id"] for r in got] == ["pool:test:multi"] and s["informative_records"] == 1
    assert got[0]["meta"]["retrieval"]["score"] < 1.0      # the reported score is still the cosine


def test_ifd_gate_drops_answers_the_instruction_does_not_help(tmp_path, tiny_model_path):
    """Mechanics on the tiny random model (IFD is meaningless there): scores recorded, the gate
    drops at the threshold and is counted and listed, the scores come from the cache on a rerun.
    The real SmolLM2 gives a matched answer IFD 0.15 and an unrelated one 2.3 (README_data)."""
    pool = [rec(f"Question {i}: how do I cook dish {i}?", f"Answer {i}: simmer it.", rid=f"pool:test:{i}") for i in range(4)]
    cfg = RetrieveConfig(k_per_query=4, min_similarity=-1, max_records=0, token_budget=0, dsir_share=0,
                         diversity_threshold=0, ifd_max=100.0)
    s = retrieve(pool, ["cook"], cfg, tmp_path / "c", tmp_path / "o.jsonl", student=tiny_model_path)
    got = read_records(tmp_path / "o.jsonl")
    assert s["selected"] == 4 and s["skipped_ifd"] == 0 and all(r["meta"]["retrieval"]["ifd"] > 0 for r in got)
    assert s["ifd"]["scored"] == 4 and s["ifd"]["forward_batches"] >= 1 and s["ifd"]["scorer"] == tiny_model_path
    worst = max(got, key=lambda r: r["meta"]["retrieval"]["ifd"])
    cfg.ifd_max = worst["meta"]["retrieval"]["ifd"] - 5e-5   # IFD >= max is dropped (meta rounds to 4 places)
    s = retrieve(pool, ["cook"], cfg, tmp_path / "c", tmp_path / "o.jsonl", student=tiny_model_path)
    assert s["selected"] == 3 and s["skipped_ifd"] == 1 and [d["id"] for d in s["ifd"]["dropped"]] == [worst["id"]]
    assert s["ifd"]["scored"] == 0 and s["ifd"]["cached"] == 4          # a later round reuses the scores
    assert worst["id"] not in {r["id"] for r in read_records(tmp_path / "o.jsonl")}
    # no model to score with: the gate is off and says so
    s = retrieve(pool, ["cook"], cfg, tmp_path / "c", tmp_path / "o.jsonl")
    assert s["ifd"]["scorer"] is None and s["selected"] == 4


def test_batched_ifd_matches_one_record_at_a_time(tmp_path, tiny_model_path):
    """Padded batches (conditioned and unconditioned sequences of several records together) give
    the scores of an unpadded, one-sequence-per-forward reference computation."""
    import math

    import torch

    from synth.ifd import IFDScorer, exchange

    recs = [rec(f"Question {i}: " + "tell me more " * i, "Answer: " + "words " * (3 * i + 1), rid=f"pool:test:{i}")
            for i in range(5)] + [rec("an empty answer", "", rid="pool:test:x")]
    scorer = IFDScorer(tiny_model_path, batch_tokens=256, cache_dir=tmp_path, engine="hf")
    got = scorer.score_many(recs)
    assert scorer.stats["forward_batches"] > 1 and math.isinf(got[-1])

    def nll_alone(prefix, ans):
        ids = torch.tensor([prefix + ans])
        with torch.no_grad():
            logp = torch.log_softmax(scorer.model(input_ids=ids).logits[0, :-1].float(), -1)
        return -float(logp[torch.arange(len(prefix) - 1, len(prefix) + len(ans) - 1), ids[0, len(prefix):]].mean())

    for r, g in zip(recs[:-1], got):
        user, answer = exchange(r)
        cond, alone = scorer._prefixes(user)
        ans = scorer._ids(answer)
        assert g == pytest.approx(math.exp(nll_alone(cond, ans) - nll_alone(alone, ans)), rel=1e-4)
    again = IFDScorer(tiny_model_path, cache_dir=tmp_path, engine="hf")   # a new process: scores from the cache
    assert again.score_many(recs) == got and again.stats["scored"] == 0 and again.stats["cached"] == 6

    # the engine the stage uses by default: CTranslate2's score_batch over its replicas gives the
    # same scores at float32, close ones at int8; each engine keeps a cache file of its own
    for quantization, rel in (("float32", 1e-4), ("int8", 0.1)):
        ct2 = IFDScorer(tiny_model_path, batch_tokens=256, cache_dir=tmp_path, engine="ct2", quantization=quantization)
        assert ct2.cache_path != scorer.cache_path and ct2.backend == f"ct2-{quantization}"
        assert ct2.score_many(recs)[:-1] == pytest.approx(got[:-1], rel=rel)
        assert ct2.stats["scored"] == 6 and ct2.stats["forward_batches"] > 1 and math.isinf(ct2.score(recs[-1]))
        ct2.close()
    with pytest.raises(ValueError, match="IFD engine must be"):
        IFDScorer(tiny_model_path, engine="onnx")


def test_tag_histogram_term_pulls_selection_toward_the_target_tags(tmp_path):
    """DSIR's tag term: with the target's tags all 'fine:fraction', records tagged so are drawn
    first and the selected records' tag KL beats random tagged subsets'."""
    from collections import Counter

    from synth.select import tag_histogram, tag_importance

    pool_tags = [["macro:Math Reasoning", "fine:fraction"], ["macro:Coding", "fine:python"], [], ["fine:python"]]
    target = tag_histogram([["macro:Math Reasoning", "fine:fraction"], ["fine:fraction"]], [1.0, 0.5])
    imp = tag_importance(pool_tags, target)
    assert imp[0] > 0 > imp[1] and imp[2] == 0 and imp[3] < 0
    assert tag_importance(pool_tags, Counter()).tolist() == [0, 0, 0, 0]

    recs = [make_record([{"role": "user", "content": f"Please help me with question number {i} today."},
                         {"role": "assistant", "content": "Sure, here it is."}], "pool:t", id=f"pool:t:{i}")
            for i in range(40)]
    tags = [["macro:Math Reasoning", "fine:fraction"] if i % 4 == 0 else ["macro:Coding", "fine:python"] for i in range(40)]
    target = tag_histogram([["macro:Math Reasoning", "fine:fraction"]] * 3)
    cfg = RetrieveConfig(dsir_share=1.0, dsir_scope="pool", max_records=8, token_budget=0, diversity_threshold=0,
                         distinct_prompts=False, min_similarity=0.0, tag_match_weight=5.0)
    out = tmp_path / "o.jsonl"
    st = retrieve(recs, ["help me with a question"], cfg, tmp_path / "c", out, pool_tags=tags, target_tags=target)
    got = [int(r["id"].split(":")[-1]) for r in read_records(out)]
    assert sum(i % 4 == 0 for i in got) >= 7, got
    assert st["tagged_selected"] == 8 and st["tagged_pool_records"] == 40
    assert st["kl_tags_selected"] < st["kl_tags_random"]
    # half kNN (blind to tags), half DSIR: without the tag term no record is likelier under the target,
    # so kNN fills everything and the selection's tags stay the pool's
    half = RetrieveConfig(**{**cfg.__dict__, "dsir_share": 0.5})
    on = retrieve(recs, ["help me with a question"], half, tmp_path / "c", out, pool_tags=tags, target_tags=target)
    on_ids = [int(r["id"].split(":")[-1]) for r in read_records(out)]
    off = retrieve(recs, ["help me with a question"], RetrieveConfig(**{**half.__dict__, "tag_match_weight": 0.0}),
                   tmp_path / "c", out, pool_tags=tags, target_tags=target)
    off_ids = [int(r["id"].split(":")[-1]) for r in read_records(out)]
    assert on["by_part"]["dsir"] >= 4 and off["by_part"]["dsir"] == 0
    assert sum(i % 4 == 0 for i in on_ids) > sum(i % 4 == 0 for i in off_ids)
    assert off["kl_tags_selected"] > on["kl_tags_selected"]


def test_dsir_features_cached_by_content_across_calls(tmp_path):
    """The n-gram rows of texts seen before are read from the store: same matrix, only new texts hashed;
    a torn store file is recomputed, not an error."""
    from synth.select import HashedNgrams, cached_matrix

    grams = HashedNgrams(500)
    texts = [f"how do I sort list number {i} in python" for i in range(20)]
    m1, s1 = cached_matrix(grams, texts, tmp_path)
    later = texts[5:][::-1] + ["a brand new question about rust", texts[0]]
    m2, s2 = cached_matrix(grams, later, tmp_path)
    assert s1 == {"cached": 0, "computed": 20} and s2 == {"cached": 16, "computed": 1}
    assert (m1 != grams.matrix(texts)).nnz == 0 and (m2 != grams.matrix(later)).nnz == 0
    store = next((tmp_path / "dsir").glob("*.npz"))
    store.write_bytes(store.read_bytes()[:100])
    m3, s3 = cached_matrix(grams, texts, tmp_path)
    assert s3["computed"] == 20 and (m3 != m1).nnz == 0
    m4, s4 = cached_matrix(HashedNgrams(300), texts, tmp_path)      # other buckets: another store
    assert s4["computed"] == 20 and m4.shape == (20, 300)


def test_ifd_with_a_template_without_an_assistant_header(tiny_model_path, tmp_path):
    """A chat template that adds no assistant header: the answer alone is conditioned on BOS/EOS, not
    scored from a slice at -1."""
    import math

    from synth.ifd import IFDScorer

    scorer = IFDScorer(tiny_model_path, cache_dir=tmp_path, engine="hf")
    scorer.tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    cond, alone = scorer._prefixes("Tell me about sorting.")
    start = scorer.tok.bos_token_id if scorer.tok.bos_token_id is not None else scorer.tok.eos_token_id
    assert alone == [start] and len(cond) > 1
    got = scorer.score_many([rec("Tell me about sorting.", "Sorting puts items in order.", rid="pool:t:1")])
    assert math.isfinite(got[0]) and got[0] > 0
