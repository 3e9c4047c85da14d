"""Instruction following: the scorer's IFEval checkers decide, deterministic repair, the catalogue."""
import json
import random
from collections import Counter

from synth import verify_if
from synth.decontam import EvalIndex
from synth.verify_if import catalogue, check, known_constraints, verify

TEXT = "Bees live in hives and make honey. They dance to show where flowers are. The queen lays eggs."


def _c(iid, **kwargs):
    return known_constraints([iid], [kwargs], catalogue())[0]


def test_passing_response_is_kept_as_is_and_failing_one_rejected():
    lower = [_c("change_case:english_lowercase")]
    kept, chk = verify([TEXT.lower()], lower, {})
    assert kept == TEXT.lower() and chk.verifies and chk.details["repaired"] == []
    assert chk.details["passed_unrepaired"] == 1 and chk.method == "ifeval_checkers"
    kept, chk = verify([TEXT], [_c("keywords:existence", keywords=["volcano", "lava"])], {})
    assert kept is None and not chk.passed and chk.reason == "constraint_failed"


def test_repair_turns_a_failing_response_into_a_passing_one():
    cases = [("change_case:english_lowercase", {}, "lowercase"), ("change_case:english_capital", {}, "uppercase"),
             ("startend:quotation", {}, "quote"), ("punctuation:no_comma", {}, "no_comma"),
             ("startend:end_checker", {"end_phrase": "Any other questions?"}, "end_phrase"),
             ("detectable_content:postscript", {"postscript_marker": "P.S."}, "postscript"),
             ("detectable_format:json_format", {}, "json"), ("detectable_format:title", {}, "title"),
             ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "bullets"),
             ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "paragraphs"),
             ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "truncate_sentences"),
             ("detectable_format:multiple_sections", {"num_sections": 2, "section_spliter": "SECTION"}, "sections")]
    text = "Bees live in hives, and they make honey. They dance to show where flowers are. The queen lays eggs."
    for iid, kw, name in cases:
        cons = [_c(iid, **kw)]
        assert check(text, cons) == [False], iid
        kept, chk = verify([text], cons, {"topic": "honeybees"})
        assert chk.verifies and chk.details["repaired"] == [name], iid
        assert check(kept, cons) == [True]
    # two responses: joined from two different samples
    kept, chk = verify([TEXT, "Honeybees are insects that live together in large colonies."],
                       [_c("combination:two_responses")], {})
    assert chk.verifies and kept.count("******") == 1


def test_repair_is_rejected_when_the_checker_still_fails():
    # two words of four letters or more: upper-casing them cannot reach three capital words
    cons = [_c("change_case:capital_word_frequency", capital_frequency=3, capital_relation="at least")]
    text = "I saw a big cat and a red hen on the farm by the sea. It was a fun day out for me."
    assert verify_if.repair(text, cons, [0], {}) is not None
    kept, chk = verify([text], cons, {})
    assert kept is None and chk.reason == "constraint_failed"
    # a structural repair that has too few sentences to work with
    kept, chk = verify(["Only one sentence here about bees and honey."], [_c("detectable_format:number_bullet_lists",
                                                                             num_bullets=3)], {})
    assert kept is None
    # no repair exists for a missing keyword, and repair can be switched off
    assert verify([TEXT], [_c("keywords:existence", keywords=["lava", "ash"])], {})[0] is None
    assert verify([TEXT], [_c("change_case:english_lowercase")], {}, allow_repair=False)[0] is None


def test_the_verifier_runs_the_scorers_own_checkers():
    from synth.verify_if import _scorer

    rows = [json.loads(line) for line in verify_if.IFEVAL_UTILS.with_name("ifeval_offline.jsonl").read_text().splitlines()[:40]]
    for row in rows:
        cons = known_constraints(row["instruction_id_list"], row["kwargs"], catalogue())
        for resp in (TEXT, TEXT.lower(), '"' + TEXT + '"'):
            assert all(check(resp, cons, row["prompt"])) == _scorer().process_results(row, [resp])["prompt_level_strict_acc"]


def test_catalogue_entries_render_and_share_no_13_gram_with_the_eval_prompts():
    cat = catalogue()
    rows = [json.loads(line) for line in verify_if.IFEVAL_UTILS.with_name("ifeval_offline.jsonl").read_text().splitlines()]
    index = EvalIndex([r["prompt"] for r in rows], n=13)
    from evalsuite.builders.ifeval_prompts import FORMS, TOPICS
    rng = random.Random(0)
    for entry in cat.entries:
        assert entry["id"] in verify_if._scorer().INSTRUCTION_DICT
        for _ in range(5):
            c = verify_if._make(entry, rng, cat)
            # worst case: the teacher's request ends like an eval task sentence; every 13-gram
            # checked here holds at least one word of the constraint
            task = rng.choice(FORMS).format(t=rng.choice(TOPICS)).split()[-12:]
            text = verify_if.render_instruction(" ".join(task), [c])
            assert index.match(text) is None, text


def test_constraints_prefer_the_failed_items_checkers():
    cat = catalogue()
    targets = {"ifeval_offline/ifeval-0001": json.dumps([{"id": "startend:quotation", "kwargs": {}}]),
               "ifeval_offline/ifeval-0002": json.dumps([{"id": "startend:quotation", "kwargs": {}},
                                                         {"id": "language:response_language", "kwargs": {}}])}
    d = {"ability": "wrapping", "examples": list(targets)}
    prefer = verify_if.failed_ids(d, targets)
    assert prefer == Counter({"startend:quotation": 2, "language:response_language": 1})
    # the scorer's evidence (what the items actually failed) wins over every checker they carried
    ev = {**d, "evidence": {"key": "checker:startend:quotation", "checks": [{"id": "startend:quotation", "kwargs": {}}]}}
    assert verify_if.failed_ids(ev, targets) == Counter({"startend:quotation": 1})
    for seed in range(10):
        cons = verify_if.draw_constraints(d, random.Random(seed), cat, prefer, max_constraints=3)
        assert cons[0]["id"] == "startend:quotation"          # language is not in the catalogue
        fams = [c["family"] for c in cons]
        assert len(set(fams)) == len(fams)
        assert not any((a, b) in cat.conflicts for a in fams for b in fams)
    # no failed items: the ability's words point to the checker
    cons = verify_if.draw_constraints({"ability": "writing in lowercase letters"}, random.Random(1), cat, Counter(), 1)
    assert cons[0]["id"].startswith("change_case:")
