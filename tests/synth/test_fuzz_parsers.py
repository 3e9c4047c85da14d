"""Property tests (hypothesis) for every parser of teacher output.

The contract (``synth/parse.py``'s docstring, DESIGN "parsing is tolerant and counted"): for any
text a parser returns its documented type or None and never raises; a value that feeds a record
is a non-empty string without surrounding whitespace. Inputs are arbitrary unicode (control
characters, surrogates, long runs of one character) and near-misses built from the real formats:
``Key: value`` lines, numbered lists, JSON fragments, markdown bold, fences.
A failing example found by the fuzzer stays here as an explicit ``@example``.
"""
from __future__ import annotations

import json
import keyword
import time

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from synth import judge, parse, verify, verify_code, verify_math
from synth.diagnose import _error_of, parse_diagnosis
from synth.evolve import eliminate, parse_evolved, parse_verdict
from synth.propose import parse_instruction
from synth.multiturn import parse_followup
from synth.prompts import with_prefill
from synth.tagging import MACRO_CATEGORIES, OTHER, TagConfig, normalize_tag, parse_tags, snap_category

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ strategies
# any code point, surrogates and control characters included
any_char = st.characters(codec=None, categories=None)
raw_text = st.text(any_char, max_size=300)

KEYS = ["Tags", "Tag", "Category", "Categories", "Ability", "Missing ability", "Skill", "Error", "Mistake",
        "Question", "New question", "Rewritten question", "User", "Follow-up", "Assistant", "Answer",
        "Solution", "Topic", "Correct answer", "Student answer", "Note", "tags", "ERROR", "ability"]
MAIN_KEYS = ["Tags", "Category", "Ability", "Error", "Question", "New question", "User"]
key_name = st.one_of(st.sampled_from(MAIN_KEYS), st.sampled_from(KEYS))
SEPS = [":", ": ", "=", "：", "**:", ":**", " : ", "::", ""]
WORDS = ["math", "arithmetic", "long division", "I'm sorry", "the answer is 7", "48 + 24 = 62", "python",
         "knowledge of biology", "As an AI language model", "What is 2+2?", '"quoted"', "'x'", "*bold*",
         "Coding", "Other", "", " ", "\t", "…", "数学", "e\u0301", "\u200b", "\x00", "\ud800", "12", "x" * 40]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
# Strategies take named functions, never lambdas: to describe a lambda Hypothesis re-parses this
# file's source, and on CI that parse once raised SystemError inside ast.parse (a FlakyFailure).
def _json_containers(kids):
    key = st.sampled_from(["tags", "fine", "category", "macro", "ability", "missing_ability", "error", "x"])
    return st.lists(kids, max_size=4) | st.dictionaries(key | st.text(max_size=5), kids, max_size=4)


json_value = st.recursive(json_leaf, _json_containers, max_leaves=12)


@st.composite
def json_fragment(draw):
    """A JSON value as text, maybe cut short or wrapped in a fence."""
    s = json.dumps(draw(json_value), ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        s = s[: draw(st.integers(0, len(s)))]
    if draw(st.booleans()):
        s = draw(st.sampled_from(["```json\n", "```\n", "```JSON", "`"])) + s + draw(st.sampled_from(["\n```", "", "``"]))
    return s


value_text = st.one_of(st.sampled_from(WORDS), st.text(any_char, max_size=30),
                       st.lists(st.sampled_from(WORDS), max_size=5).map(", ".join))


@st.composite
def line(draw):
    kind = max(0, draw(st.integers(-2, 7)))  # key lines are the most common
    if kind == 0:  # Key: value, maybe bold, maybe indented or bulleted
        bold = draw(st.sampled_from(["", "**", "*", "__"]))
        pre = draw(st.sampled_from(["", " ", "- ", "# ", "> ", "\t", "* ", "1. "]))
        return f"{pre}{bold}{draw(key_name)}{bold}{draw(st.sampled_from(SEPS))}{draw(value_text)}"
    if kind == 1:  # list item
        mark = draw(st.sampled_from(["1.", "2)", "(3)", "-", "*", "•", "10.", "1000.", "a)"]))
        indent, gap = draw(st.sampled_from(["", " ", "  "])), draw(st.sampled_from([" ", "", "  ", "\t"]))
        return f"{indent}{mark}{gap}{draw(value_text)}"
    if kind == 2:
        return draw(json_fragment())
    if kind == 3:
        return draw(st.sampled_from(["```", "```json", "", " ", "**", "---", "=== user ===", "Assistant:", "\r"]))
    if kind == 4:  # a long run of one character (a degenerate tiny teacher)
        return draw(st.sampled_from([" ", "\t", "*", "{", "[", "-", ":", "1", "\u3000"])) * draw(st.integers(50, 600))
    if kind == 5:
        return draw(st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join))
    return draw(raw_text)


structured = st.lists(line(), max_size=12).map("\n".join)
teacher_text = st.one_of(raw_text, structured)


def _stripped_str(x) -> bool:
    return isinstance(x, str) and x != "" and x == x.strip()


# ------------------------------------------------------------------ synth/parse.py
@FUZZ
@given(teacher_text, st.sampled_from([None, dict, list]))
@example("[" * 5000 + "]" * 5000, None)   # RecursionError escaped json.loads
@example("```\n42\n```", None)             # a fenced scalar was returned as 'object or array'
def test_parse_json(text, want):
    val = parse.parse_json(text, want)
    event(f"parsed: {val is not None}")
    assert val is None or isinstance(val, want or (dict, list))


prose = st.text(st.characters(codec=None, categories=None, exclude_characters='{}[]"`'), max_size=40)


def _any_key_containers(kids):
    return st.lists(kids, max_size=4) | st.dictionaries(st.text(any_char, max_size=8), kids, max_size=4)


def _is_container(v) -> bool:
    return isinstance(v, (dict, list))


json_container = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(any_char, max_size=20)),
    _any_key_containers, max_leaves=12).filter(_is_container)


@FUZZ
@given(prose, json_container, prose, st.booleans())
@example("Sure: ", {"q": 'say "}" twice', "tags": ["x"]}, "", True)  # an escaped quote ended the string scan
@example("", [{}], "", False)  # objects were tried before arrays, so the inner {} came back
def test_parse_json_finds_an_object_in_prose(before, value, after, ascii_only):
    """Any JSON object or array written inside prose comes back as written."""
    assert parse.parse_json(before + json.dumps(value, ensure_ascii=ascii_only) + after) == value


@FUZZ
@given(teacher_text, st.lists(key_name, min_size=1, max_size=5))
def test_parse_key_values(text, keys):
    kv = parse.parse_key_values(text, keys)
    event(f"parsed: {kv is not None}")
    assert kv is None or (isinstance(kv, dict) and kv)
    for k, v in (kv or {}).items():
        assert k in keys and _stripped_str(v)


@FUZZ
@given(teacher_text)
def test_parse_list(text):
    items = parse.parse_list(text)
    event(f"parsed: {items is not None}")
    assert items is None or (isinstance(items, list) and items)
    for it in items or []:
        assert _stripped_str(it) and "\n" not in it


@FUZZ
@given(st.one_of(teacher_text, json_value))
def test_split_tags(value):
    tags = parse.split_tags(value)
    assert isinstance(tags, list) and all(_stripped_str(t) for t in tags)


@FUZZ
@given(teacher_text, st.lists(st.sampled_from(KEYS), max_size=3), st.integers(0, 20))
def test_strip_label_looks_like_label_is_refusal(text, labels, max_words):
    out = parse.strip_label(text, labels)
    assert isinstance(out, str) and out == out.strip()
    assert isinstance(parse.looks_like_label(text, max_words), bool)
    assert isinstance(parse.is_refusal(text), bool)


PREFILLS = ["Tags:", "Error: The student", "Ability:", "Question:", "New question:", "User:", "", "Tags: "]


@FUZZ
@given(st.sampled_from(PREFILLS), teacher_text, st.booleans())
def test_with_prefill(prefill, answer, has_prefill):
    msgs = [{"role": "user", "content": "q"}] + ([{"role": "assistant", "content": prefill}] if has_prefill else [])
    out = with_prefill(msgs, answer)
    assert isinstance(out, str) and out.endswith(answer)
    assert out == answer or out.startswith(prefill)


# ------------------------------------------------------------------ stage parsers
def _answers(prefill: str, keys: list[str]):
    """What a stage parses: the prefill joined to an arbitrary or near-miss continuation; near
    misses use the stage's own keys (bold, other separators, values that are chat or numbers)."""
    def key_line(t):
        return f"{t[0]}{t[1]}{t[0].strip()}{t[2]}{t[3]}"

    def prefilled(t):
        return with_prefill(msgs, t)

    own_line = st.tuples(st.sampled_from(["", "**", " ", "- "]), st.sampled_from(keys), st.sampled_from(SEPS),
                         value_text).map(key_line)
    own = st.lists(st.one_of(own_line, own_line, line()), min_size=1, max_size=6).map("\n".join)
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": prefill}]
    return st.one_of(teacher_text, own).map(prefilled) | teacher_text


@FUZZ
@given(_answers("Tags:", ["Tags", "Category", "Categories", "Tag"]))
@example('{"tags": [{"a": 1}], "category": [[]]}')  # nested values where strings are expected
@example("Tags: long division, carrying\nCategory: math")
def test_parse_tags(answer):
    cfg = TagConfig()
    tags = parse_tags(answer, cfg)
    event(f"parsed: {tags is not None}")
    if tags is None:
        return
    assert set(tags) == {"fine", "macro"}
    assert 0 < len(tags["fine"]) <= cfg.max_fine and len(set(tags["fine"])) == len(tags["fine"])
    assert all(_stripped_str(t) for t in tags["fine"])
    assert len(tags["macro"]) == 1 and tags["macro"][0] in cfg.categories + [OTHER]


@FUZZ
@given(st.one_of(value_text, teacher_text))
def test_tag_normalisation_and_category_snapping(answer):
    n = normalize_tag(answer)
    assert isinstance(n, str) and n == n.strip()
    assert snap_category(answer, MACRO_CATEGORIES) in MACRO_CATEGORIES + [OTHER]


@FUZZ
@given(_answers("Error: The student", ["Ability", "Error", "Skill", "Mistake", "Missing ability", "Shortcut"]))
@example('{"ability": "\'\\tlong division"}')  # ability kept a leading tab
@example('Ability: ".\u3000carrying digits"')
@example("Error: The student added instead of multiplying.\nAbility: multi-step multiplication")
def test_parse_diagnosis_and_error_of(answer):
    d = parse_diagnosis(answer)
    event(f"parsed: {d is not None}")
    if d is not None:
        assert set(d) == {"ability", "error", "shortcut"}
        assert isinstance(d["shortcut"], str) and d["shortcut"] == d["shortcut"].strip()
        assert _stripped_str(d["ability"]) and isinstance(d["error"], str) and d["error"] == d["error"].strip()
    err = _error_of(answer)
    assert err is None or (_stripped_str(err) and len(err.split()) >= 3)


@FUZZ
@given(_answers("Question:", ["Question", "Answer", "Solution", "Topic"]))
def test_parse_instruction(answer):
    ins = parse_instruction(answer)
    event(f"parsed: {ins is not None}")
    assert ins is None or _stripped_str(ins)


@FUZZ
@given(_answers("New question:", ["New question", "Question", "Rewritten question"]), st.one_of(raw_text, structured))
def test_parse_evolved_and_eliminate(answer, original):
    ev = parse_evolved(answer)
    assert ev is None or (_stripped_str(ev) and "\n\n" not in ev)
    reason = eliminate(original, ev)
    event(f"eliminated: {reason}")
    assert reason in (None, "empty", "refusal", "too_short", "copy", "leaked_prompt")
    assert reason is not None or ev is not None


@FUZZ
@given(_answers("User:", ["User", "Assistant", "Follow-up", "Question"]))
def test_parse_followup(answer):
    q = parse_followup(answer)
    event(f"parsed: {q is not None}")
    assert q is None or (_stripped_str(q) and len(q) >= 5 and "\n\n" not in q and not parse.is_refusal(q))


# ------------------------------------------------------------------ synth/verify.py (teacher answers)
def _nines(n: int) -> str:
    return "9" * n


def _answer_line(t) -> str:
    return t[0] + t[1] + ("}" if t[0] == "\\boxed{" else "") + " " + t[2]


number = st.one_of(st.integers().map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
                   st.integers(1, 700).map(_nines), st.sampled_from(["1/0", "$1,000.", "-0", "1e5", "3/4"]))
numeric_answer = st.one_of(teacher_text, st.tuples(st.sampled_from(["The answer is ", "#### ", "\\boxed{", "Answer: ",
                                                                    "x = ", ""]), number, teacher_text)
                           .map(_answer_line))


@FUZZ
@given(numeric_answer, numeric_answer, st.integers(0, 50))
@example("The answer is " + "1" * 400, "The answer is " + "2" * 400, 20)  # OverflowError in numbers_equal
def test_verify_checks_of_teacher_answers(a, b, min_chars):
    assert verify.basic_check(a, min_chars) in (None, "empty", "refusal", "too_short")
    assert verify.numbers_agree(a, b) in (None, True, False)
    assert isinstance(verify_math.trim_solution(a), str)
    for parsed in (verify_code.parse_solution(a), verify_code.parse_tests(a), verify_math.parse_program(a),
                   verify_code.function_name(a)):
        assert parsed is None or isinstance(parsed, str)
    assert parse_verdict(a) in (None, True, False)


# ------------------------------------------------------------------ huge and degenerate inputs
def _all_parsers(text: str) -> None:
    parse.parse_json(text)
    parse.parse_key_values(text, ["Ability", "Error", "Tags", "Category"])
    parse.parse_list(text)
    parse.split_tags(text)
    parse.strip_label(text, ["Question", "New question"])
    parse.looks_like_label(text, 5)
    parse.is_refusal(text)
    parse_tags(text, TagConfig())
    parse_diagnosis(text)
    _error_of(text)
    parse_instruction(text)
    parse_evolved(text)
    parse_followup(text)
    verify.basic_check(text)
    verify.numbers_agree(text, text)  # evalsuite's extractor: data is judged by the student's rules
    verify_math.trim_solution(text)
    verify_math.parse_program(text)
    verify_code.parse_solution(text)
    verify_code.parse_tests(text)
    verify_code.function_name(text)
    parse_verdict(text)


# Each degenerate answer at size n (a unit repeated n times, alone or around a real token).
DEGENERATE = [lambda n, c=c: c * n for c in (" ", "\t", "\n", " \n", "*", "{", "[", '{"', "-", ":", "1.", "```",
                                             "Question:")] + [
    lambda n: " " * n + "x", lambda n: "Ability:" + " " * n + "x", lambda n: "Ability: a" + " " * n + "b",
    lambda n: "- " + " " * n, lambda n: "1." + " " * n, lambda n: '{"a": ' * (n // 3), lambda n: "\n" * n + "Question: q",
    lambda n: "\n" * n + "def f(x):", lambda n: "[" * (n // 2) + "]" * (n // 2)]


def _seconds(text: str) -> float:
    best = float("inf")
    for _ in range(2):  # the faster of two: a stray process on 2 cores must not decide it
        t0 = time.perf_counter()
        _all_parsers(text)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.timeout(300)
def test_huge_degenerate_inputs_parse_in_linear_time():
    """A tiny teacher degenerates into long runs of one character; no parser may backtrack on them
    (a line of 2,000 spaces took parse_key_values 15 s; 30,000 newlines took a (?m)^\\s* search 7 s).
    Growth, not a wall-clock bound, decides: 4x the input may cost about 4x, not 16x, on any machine."""
    for make in DEGENERATE:
        small, big = _seconds(make(7_500)), _seconds(make(30_000))
        assert big < 8 * small + 0.25, f"{make(12)!r}: x7,500 took {small:.2f} s, x30,000 {big:.2f} s"


@settings(max_examples=20, deadline=None)
@given(st.lists(line(), min_size=50, max_size=200).map("\n".join))
def test_long_structured_answers(text):
    _all_parsers(text)


# ------------------------------------------------------------------ synth/judge.py, synth/verify_code.py
score_words = st.sampled_from(["Score", "score", "SCORE", "**Score**", "Score:", "Rating", "score=", "Score :"])
score_answer = st.one_of(teacher_text, st.tuples(st.sampled_from(["", " ", "**", "Final ", "The "]), score_words,
                                                  st.sampled_from(["", ":", " ", "=", ": **", "**:"]),
                                                  st.sampled_from(["0", "1", "3", "5", "6", "10", "4.5", "-2", "５", ""]),
                                                  teacher_text).map("".join))


@FUZZ
@given(score_answer)
def test_judge_parse_score(answer):
    score = judge.parse_score(answer)
    event(f"parsed: {score is not None}")
    assert score is None or (type(score) is int and 1 <= score <= 5)


def _no_score_word(t: str) -> bool:
    return "score" not in t.lower()


@FUZZ
@given(st.text(st.characters(codec=None, categories=None, exclude_categories=["Nd"]), max_size=60)
       .filter(_no_score_word), st.integers(1, 5), st.sampled_from(["", "\n", " out of 5", ".", "/5"]))
def test_judge_parse_score_reads_the_score_line(prefix, k, suffix):
    """Whatever comes before it, ``Score: k`` is the score."""
    assert judge.parse_score(f"{prefix}\nScore: {k}{suffix}") == k


def _not_keyword(n: str) -> bool:
    return not keyword.iskeyword(n)


identifier = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z").filter(_not_keyword)
test_lines = st.lists(st.one_of(line(), st.tuples(st.sampled_from(["assert ", "  assert ", "def ", "", "print("]),
                                                   st.sampled_from(["{n}(", "{n} (", "x{n}(", "{n}_2(", "{n}"]),
                                                   value_text, st.sampled_from([")", ") == 1", ") != [", ")) in x", ""]))
                                .map("".join)), max_size=10)
# strings made of what the call-text scan looks at: spaces, brackets, quotes
tricky = st.text(st.sampled_from(" ()[]'\"x,\\\n\t"), max_size=6)
arg = st.one_of(st.integers(), st.text(any_char, max_size=12), tricky, tricky, st.booleans(), st.none(),
                st.lists(st.integers(-9, 9), max_size=3), st.tuples(st.text(max_size=3), st.integers()))


@FUZZ
@given(test_lines, identifier, st.integers(0, 5))
def test_verify_code_why_invalid(lines, name, min_asserts):
    tests = "\n".join(ln.replace("{n}", name) for ln in lines)
    why = verify_code.why_invalid(tests, name, min_asserts)
    event(f"why: {why}")
    assert why in (None, "tests_define_function", "tests_never_call_function", "too_few_asserts")


@FUZZ
@given(st.lists(arg, min_size=1, max_size=6, unique_by=repr), identifier, st.integers(0, 6))
def test_verify_code_why_invalid_accepts_enough_comparisons(values, name, min_asserts):
    tests = "\n".join(f"assert {name}({v!r}) == {i}" for i, v in enumerate(values))
    assert verify_code.why_invalid(tests, name, min_asserts) == (None if min_asserts <= len(values) else "too_few_asserts")
    assert verify_code.why_invalid(f"def {name}(x):\n    return x\n{tests}", name, 0) == "tests_define_function"


@FUZZ
@given(st.lists(st.one_of(teacher_text, test_lines.map("\n".join)), max_size=8), identifier)
def test_verify_code_distinct_calls_shape(asserts, name):
    asserts = [a.replace("{n}", name) for a in asserts]
    n = verify_code.distinct_calls(asserts, name)
    assert type(n) is int and 0 <= n <= len(asserts)


@FUZZ
@given(st.lists(arg, min_size=1, max_size=6, unique_by=repr), identifier,
       st.lists(st.sampled_from(["", " ", "  "]), min_size=6, max_size=6))
@example(["("], "A", [""] * 6)        # a bracket inside a literal ended the text scan: one input counted twice
@example(["a b", "ab"], "f", [""] * 6)   # spaces inside literals were dropped: two inputs counted once
def test_verify_code_distinct_calls_counts_inputs(values, name, gaps):
    """Different inputs are different calls, however they are spaced; the same input twice is one."""
    spaced = [f"assert {name}({gap}{v!r}) == {i}" for i, (v, gap) in enumerate(zip(values, gaps))]
    assert verify_code.distinct_calls(spaced, name) == len(values)
    again = [f"assert {name}( {v!r} ) != None" for v in values]
    assert verify_code.distinct_calls(spaced + again, name) == len(values)
