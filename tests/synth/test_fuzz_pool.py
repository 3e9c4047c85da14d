"""Property tests (hypothesis) for the pool converters (``synth/pool.py``).

The contract: any row, in any of the accepted formats (chat ``messages``, ShareGPT
``conversations``, Alpaca, prompt/response) or malformed (missing keys, wrong types, None,
empty conversations, unknown roles, non-string content, nested garbage), either becomes one
record that passes ``evalsuite.records.validate_record`` and can be written as UTF-8 JSON, or is
dropped with a counted reason, or raises ``RecordError`` naming where the row came from. Whole
files (JSON lines with broken lines, streamed JSON arrays cut anywhere, Parquet) give records or a
``RecordError`` naming the file (and its line for JSON lines), never another exception.
A failing example found by the fuzzer stays here as an explicit ``@example``.
"""
from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from evalsuite.records import RecordError, read_jsonl, validate_record, write_jsonl
from synth.pool import PoolConfig, convert_rows, load_pool

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ strategies
any_text = st.text(st.characters(codec=None, categories=None), max_size=30)  # surrogates, controls
text = st.one_of(st.sampled_from(["", " ", "hi", "What is 2+2?", "4.", "\n\t", "\ud83d", "é" * 5]), any_text)
words = st.one_of(st.sampled_from(["What is 2+2?", "4.", "Write a haiku.", "Sure: ...", "数学", " padded  "]),
                  st.text(st.characters(codec=None, categories=None), min_size=1, max_size=25))
leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text)
# Strategies take named functions, never lambdas: to describe a lambda Hypothesis re-parses this
# file's source, and on CI such a parse once raised SystemError inside ast.parse (a FlakyFailure).
def _containers(kids):
    return st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3)


def _sharegpt(turns) -> dict:
    return {"conversations": turns}


def _sharegpt_x(turns) -> dict:
    return {"conversations": turns, "id": "x"}


garbage = st.recursive(leaf, _containers, max_leaves=8)
USERS = ["human", "user", "Human", "USER"]
ASSISTANTS = ["gpt", "assistant", "chatgpt", "bing", "bard", "model", "GPT"]
UNKNOWN = ["narrator", "tool", "", "function", "system"]


@st.composite
def conversation(draw, names: tuple[str, str], garbage_ok: bool = True, texts=words):
    """A valid alternating chat in ``names`` keys, then up to three mutations of the kinds seen in
    real pools (and, with ``garbage_ok``, of the kinds never seen: wrong types, nested junk)."""
    turns = [{names[0]: "system", names[1]: draw(texts)}] if draw(st.integers(0, 4)) == 0 else []
    for _ in range(draw(st.integers(1, 3))):
        turns.append({names[0]: draw(st.sampled_from(USERS)), names[1]: draw(texts)})
        turns.append({names[0]: draw(st.sampled_from(ASSISTANTS)), names[1]: draw(texts)})
    ops = ["drop_turn", "trailing_user", "empty_text", "none_text", "unknown_role", "none_role", "swap", "dup"]
    if garbage_ok:
        ops += ["garbage_text", "garbage_role", "garbage_turn", "missing_key"]
    for op in draw(st.lists(st.sampled_from(ops), max_size=3)):
        i = draw(st.integers(0, max(0, len(turns) - 1)))
        if not turns or not isinstance(turns[i], dict):
            continue
        t = turns[i] = dict(turns[i])
        if op == "drop_turn":
            del turns[i]
        elif op == "trailing_user":
            turns.append({names[0]: "human", names[1]: draw(texts)})
        elif op in ("empty_text", "none_text", "garbage_text"):
            t[names[1]] = {"empty_text": " \n", "none_text": None}.get(op) if op != "garbage_text" else draw(garbage)
        elif op in ("unknown_role", "none_role", "garbage_role"):
            t[names[0]] = {"unknown_role": draw(st.sampled_from(UNKNOWN)), "none_role": None}.get(op) \
                if op != "garbage_role" else draw(garbage)
        elif op == "swap" and i + 1 < len(turns):
            turns[i], turns[i + 1] = turns[i + 1], turns[i]
        elif op == "dup":
            turns.insert(i, dict(t))
        elif op == "garbage_turn":
            turns[i] = draw(garbage)
        elif op == "missing_key":
            t.pop(draw(st.sampled_from(names)), None)
    return turns


extras = st.fixed_dictionaries({}, optional={
    "id": st.one_of(words, st.integers(), st.none(), garbage),
    "tags": st.one_of(st.fixed_dictionaries({}, optional={"fine": st.lists(words, max_size=3),
                                                         "macro": st.lists(words, max_size=2)}),
                      st.fixed_dictionaries({"fine": garbage}), garbage),
    "meta": st.one_of(st.dictionaries(text, garbage, max_size=3), garbage),
    "scores": st.one_of(st.dictionaries(text, st.floats(), max_size=2), garbage),
    "source": garbage,
})
maybe_text = st.one_of(words, words, words, st.none(), garbage)


@st.composite
def row(draw):
    kind = draw(st.sampled_from(["messages", "conversations", "alpaca", "prompt", "garbage"]))
    if kind == "messages":
        r = {kind: draw(st.one_of(conversation(("role", "content")), conversation(("role", "content")), garbage))}
    elif kind == "conversations":
        names = draw(st.sampled_from([("from", "value"), ("from", "value"), ("role", "content"), ("from", "content")]))
        r = {kind: draw(st.one_of(conversation(names), conversation(names), garbage))}
    elif kind == "alpaca":
        r = {k: draw(maybe_text) for k in ("instruction", "input", "output") if draw(st.integers(0, 9))}
    elif kind == "prompt":
        r = {k: draw(maybe_text) for k in ("prompt", draw(st.sampled_from(["response", "completion"])))
             if draw(st.integers(0, 9))}
    else:
        return draw(garbage)
    return {**draw(extras), **r}


configs = st.builds(PoolConfig, source=st.just("fuzz.jsonl"), max_records=st.sampled_from([0, 0, 2]),
                    min_turns=st.integers(0, 3), max_turns=st.sampled_from([0, 2, 4]),
                    max_chars=st.sampled_from([0, 12000, 20]), min_ascii_ratio=st.sampled_from([0.0, 0.9]),
                    trim_trailing_user=st.booleans())


def _check_record(rec) -> None:
    validate_record(rec, where="fuzz")
    json.dumps(rec, ensure_ascii=False).encode("utf-8")  # what write_jsonl does
    assert all(isinstance(t, str) for k in ("fine", "macro") for t in rec["tags"][k])
    assert all(m["content"] == m["content"].strip() and m["content"] for m in rec["messages"])


# ------------------------------------------------------------------ one row at a time
@FUZZ
@given(row(), configs)
@example({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
          "tags": {"fine": 5}}, PoolConfig(source="fuzz.jsonl"))       # TypeError in make_record
@example({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
          "tags": {"fine": "math"}}, PoolConfig(source="fuzz.jsonl"))  # became ['m', 'a', 't', 'h']
@example({"prompt": "q\ud83d", "response": "a"}, PoolConfig(source="fuzz.jsonl"))  # UnicodeEncodeError
@example({"prompt": "q", "response": "a", "id": "\udc00"}, PoolConfig(source="fuzz.jsonl"))
@example({"prompt": "q", "response": "a", "meta": {"at": b"\x00"}}, PoolConfig(source="fuzz.jsonl"))  # Parquet binary
def test_each_row_is_a_valid_record_a_counted_drop_or_a_named_error(r, cfg):
    stats: Counter = Counter()
    try:
        out = list(convert_rows([("fuzz.jsonl:7", r)], cfg, stats))
    except RecordError as exc:
        assert str(exc).startswith("fuzz.jsonl:7: ")
        event("RecordError")
        return
    drops = {k: v for k, v in stats.items() if k.startswith("drop_")}
    event("record" if out else f"{sorted(drops)}")
    if out:
        (rec,) = out
        _check_record(rec)
        assert stats["kept"] == 1 and not drops
    else:
        assert sum(drops.values()) == 1 and stats["kept"] == 0


# rows that mostly convert, with few distinct ids: same id with other content, same content twice
def _row_with_id(turns, rid) -> dict:
    return {"conversations": turns, **({"id": rid} if rid else {})}


def _insert_row(t) -> list:
    return t[0] if t[1] is None else t[0][:t[2]] + [t[1]] + t[0][t[2]:]


clean_row = st.builds(_row_with_id,
                      conversation(("from", "value"), garbage_ok=False,
                                   texts=st.sampled_from(["What is 2+2?", "4.", "Hi", "Write a haiku.", ""])),
                      st.sampled_from([None, "a", "b", "a:0", ""]))


@FUZZ
@given(st.tuples(st.lists(clean_row, max_size=8), st.one_of(st.none(), row()), st.integers(0, 8))
       .map(_insert_row), configs)
def test_many_rows_ids_unique_and_every_row_accounted_for(rows, cfg):
    stats: Counter = Counter()
    out = []
    try:
        for rec in convert_rows([(f"fuzz.jsonl:{i}", r) for i, r in enumerate(rows, 1)], cfg, stats):
            out.append(rec)
    except RecordError as exc:
        assert re.match(r"fuzz\.jsonl:\d+: ", str(exc))
        event("RecordError")
        return
    event(f"{min(len(out), 3)}+ records, {sum(v for k, v in stats.items() if k.startswith('drop_'))} dropped")
    for rec in out:
        _check_record(rec)
    assert len({r["id"] for r in out}) == len(out)
    handled = stats["kept"] + sum(v for k, v in stats.items() if k.startswith("drop_"))
    assert handled == len(rows) or stats["stopped_at_max_records"]


# ------------------------------------------------------------------ whole files
@st.composite
def jsonl_lines(draw):
    """The lines of a JSON lines file: rows, blank lines, cut-off or corrupted JSON, raw bytes."""
    good = st.one_of(conversation(("from", "value"), garbage_ok=False).map(_sharegpt), row())
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 9))
        if kind <= 5:
            lines.append(json.dumps(draw(good), ensure_ascii=draw(st.booleans())).encode("utf-8", "backslashreplace"))
        elif kind == 6:
            lines.append(draw(st.sampled_from([b"", b"   ", b"\t"])))
        elif kind == 7:  # a cut-off or corrupted JSON line
            full = json.dumps(draw(good)).encode()
            lines.append(full[: draw(st.integers(0, max(0, len(full) - 1)))]
                         + draw(st.sampled_from([b"", b"}", b"\xff", b"\x00"])))
        elif kind == 8:
            lines.append(draw(st.sampled_from([b"\xff\xfe{}", b'{"a": \xc3}', b"[" * 3000, b"9" * 5000, b"nan",
                                               b'{"prompt": "q", "response": 1e999}', b'\r{"prompt": "q"}'])))
        else:
            lines.append(draw(st.binary(max_size=40)).replace(b"\n", b" "))
    return lines


def _not_json(line: bytes) -> bool:
    """A non-blank line that is not UTF-8 JSON (what the reader must report, never skip)."""
    try:
        text = line.decode("utf-8")
        if text.strip():
            json.loads(text)
    except (ValueError, RecursionError):
        return True
    return False


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here


@FILES
@given(jsonl_lines())
@example([b'{"prompt": "q", "response": "a"}', b"9" * 5000])       # ValueError (int digits) escaped
@example([b'{"prompt": "q", "response": "a"}', b"[" * 3000])       # RecursionError escaped
@example([b'{"prompt": "q", "response": "a"}', b"\xff\xfe{}"])     # UnicodeDecodeError escaped
@example([b'{"prompt": "q\\ud83d", "response": "a"}', b'{"prompt": "p", "response": "r"}'])  # cache write failed
def test_jsonl_file_gives_records_or_a_record_error_naming_file_and_line(lines):
    broken = [i + 1 for i, line in enumerate(lines) if _not_json(line)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pool.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        try:
            recs = load_pool(PoolConfig(source=str(path)), Path(d) / "cache")
        except RecordError as exc:
            event("RecordError")
            m = re.match(re.escape(str(path)) + r"(?::(\d+))?: ", str(exc))
            assert m, exc
            if m.group(1) is None:  # only an empty pool is reported without a line
                assert "pool is empty" in str(exc) and not broken
            else:  # the line named is the first broken line or an earlier row of an unknown format
                assert 1 <= int(m.group(1)) <= min(broken, default=len(lines)), (exc, broken)
            return
        assert not broken  # a broken line is never skipped silently
        event(f"{min(len(recs), 2)}+ records")
        for rec in recs:
            _check_record(rec)
        assert _same(read_jsonl(next((Path(d) / "cache" / "pool").glob("*.jsonl"))), recs)  # cache reads back


@st.composite
def json_array_file(draw):
    items = draw(st.lists(st.one_of(conversation(("from", "value"), garbage_ok=False).map(_sharegpt_x),
                                     row()), max_size=6))
    blob = json.dumps(items, indent=draw(st.sampled_from([None, 2]))).encode()
    cut = draw(st.sampled_from(["whole", "cut", "garbage"]))
    if cut == "cut":
        blob = blob[: draw(st.integers(1, len(blob)))]
    elif cut == "garbage":
        i = draw(st.integers(1, len(blob)))
        blob = blob[:i] + draw(st.binary(min_size=1, max_size=8)) + blob[i:]
    return blob


@FILES
@given(json_array_file())
@example(b'[{"prompt": "q", "response": "a", "meta": {"score": 0.5}}]')  # Decimal: write_jsonl TypeError
@example(b'[{"prompt": "q", "response": "a", "id": ' + b"9" * 5000 + b"}]")  # segfault in ijson (yajl2_c)
@example(b'[{"prompt": "q", "response": "a", "id": "\\ud83d"}]')
@example(b'[{"tags": {"fine": "\\udc00"}}]')  # UnicodeDecodeError from inside ijson
def test_streamed_json_array_gives_records_or_a_record_error_naming_the_file(blob):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pool.json"
        path.write_bytes(blob)
        try:
            recs = load_pool(PoolConfig(source=str(path)), Path(d) / "cache")
        except RecordError as exc:
            assert str(exc).startswith(str(path)), exc
            event("RecordError")
            return
        event(f"{min(len(recs), 2)}+ records")
        for rec in recs:
            _check_record(rec)
        assert _same(read_jsonl(next((Path(d) / "cache" / "pool").glob("*.jsonl"))), recs)


utf8_words = st.one_of(st.sampled_from(["What is 2+2?", "4.", "数学", " padded  ", ""]),
                       st.text(st.characters(codec="utf-8"), min_size=1, max_size=25))


def _parquet_rows(list_key: str, names: tuple[str, str], **extra):
    """Rows of one schema (Parquet columns have one type, strings are UTF-8): real-world mutations."""
    return st.lists(st.fixed_dictionaries({list_key: conversation(names, garbage_ok=False, texts=utf8_words),
                                           **extra}), min_size=1, max_size=5)


PARQUET_ROWS = st.one_of(
    _parquet_rows("conversations", ("from", "value"), id=st.one_of(st.none(), st.text(max_size=5))),
    _parquet_rows("messages", ("role", "content"), meta=st.fixed_dictionaries({"score": st.one_of(st.none(), st.floats())}),
                  tags=st.fixed_dictionaries({"fine": st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=2))})),
    st.lists(st.fixed_dictionaries({k: st.one_of(st.none(), utf8_words) for k in ("instruction", "input", "output")}),
             min_size=1, max_size=5),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PARQUET_ROWS)
def test_parquet_rows_give_records_or_a_record_error(rows):
    import datasets

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pool.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(path))
        try:
            recs = load_pool(PoolConfig(source=str(path)), Path(d) / "cache")
        except RecordError as exc:
            assert str(exc).startswith(str(path)), exc
            event("RecordError")
            return
        event(f"{min(len(recs), 2)}+ records")
        for rec in recs:
            _check_record(rec)
        write_jsonl(Path(d) / "out.jsonl", recs)
