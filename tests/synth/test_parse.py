"""Tolerant parsers: JSON anywhere, Key: value lines, lists, labels, numbers, refusals."""
from synth import parse


def test_parse_json_finds_objects_and_arrays_in_prose():
    assert parse.parse_json('Sure! {"a": 1, "b": "x}"} done') == {"a": 1, "b": "x}"}
    assert parse.parse_json("```json\n[1, 2]\n```") == [1, 2]
    assert parse.parse_json('noise [1, 2] then {"k": [3]}', dict) == {"k": [3]}
    assert parse.parse_json("{not json}") is None and parse.parse_json("") is None


def test_key_values_tolerate_bold_case_and_continuations():
    text = "**Ability**: long\ndivision of numbers\nerror - nope\nERROR: wrong carry\nAbility: second"
    kv = parse.parse_key_values(text, ["Ability", "Error"])
    assert kv == {"Ability": "long division of numbers error - nope", "Error": "wrong carry"}
    assert parse.parse_key_values("nothing here", ["Ability"]) is None
    assert parse.parse_key_values("Ability:", ["Ability"]) is None  # empty value is no value


def test_lists_tags_labels():
    assert parse.parse_list("Here:\n1. one\n2) two\n- three\n* four\nnot") == ["one", "two", "three", "four"]
    assert parse.parse_list("no list") is None
    assert parse.split_tags("a, b; 'c' ,, d.") == ["a", "b", "c", "d"]
    assert parse.split_tags(["x", " y "]) == ["x", "y"]
    assert parse.strip_label('Question: "What is 2+2?"', ["Question"]) == "What is 2+2?"
    assert parse.strip_label("plain", ["Question"]) == "plain"


def test_refusal():
    assert parse.is_refusal("I'm sorry, but I can't help with that.")
    assert parse.is_refusal("As an AI language model, I cannot")
    assert not parse.is_refusal("Sorry is a word with five letters.")


def test_looks_like_label_rejects_chat_and_answers():
    assert parse.looks_like_label("multi-step arithmetic", 5)
    assert not parse.looks_like_label("I will answer instead", 5)
    assert not parse.looks_like_label("Sure, the answer is 7.", 12)
    assert not parse.looks_like_label("one two three four five six", 5)
    assert not parse.looks_like_label("42", 5)
