"""Tolerant parsers for teacher output. Each returns None when nothing usable is found.

A 135M teacher rarely writes clean JSON, so the prompts ask for ``Key: value`` lines
and numbered lists; JSON anywhere in the text is accepted too. Parsers never raise on
model output: the caller counts a None as a parse failure and skips the item.
"""
from __future__ import annotations

import itertools
import json
import re

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
# No two adjacent quantifiers may match the same character (``\s*\**\s*`` on a line of spaces
# backtracks cubically: 2,000 spaces took 15 s); values are captured whole and trimmed in code.
_KEY_LINE = re.compile(r"^[-*#>\s]*([A-Za-z][A-Za-z _-]{0,30}?)[\s*]*[:=](.*)$")
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•]|\(\d{1,3}\))\s(.*)$")
_JSON_CHARS = re.compile(r'[\\"{}\[\]]')
_OPEN = re.compile(r"[{\[]")
MAX_JSON_STARTS = 32  # opening brackets tried as the start of a JSON value (bounds the cost)
_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:'|no)t (?:help|assist|provide|answer|do that)|"
    r"as an ai(?: language model)?|i'?m (?:just )?an ai|i am (?:just )?an ai|i'?m unable to|i am unable to|"
    r"i (?:do not|don't) have (?:access|the ability))\b", re.I)


def _json_candidates(text: str):
    for m in _FENCE.finditer(text):
        yield m.group(1)
    # balanced {...} or [...] spans in the order they open (outermost first), from the first
    # MAX_JSON_STARTS opening brackets: each scan may run to the end, so 'x{{{{...' is quadratic
    for start in itertools.islice((m.start() for m in _OPEN.finditer(text)), MAX_JSON_STARTS):
        open_ch = text[start]
        close_ch = "}" if open_ch == "{" else "]"
        depth, in_str, escaped_at = 0, False, -1
        for m in _JSON_CHARS.finditer(text, start):  # only quotes, backslashes, brackets matter
            ch = m.group()
            if in_str:
                if m.start() == escaped_at:  # the character right after a backslash
                    continue
                if ch == "\\":
                    escaped_at = m.end()
                elif ch == '"':
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == open_ch:
                depth += 1
            elif ch == close_ch:
                depth -= 1
                if depth == 0:
                    yield text[start:m.end()]
                    break


def parse_json(text: str, want: type | None = None):
    """First JSON object or array (of type ``want`` if given) found anywhere in ``text``."""
    if not text:
        return None
    for cand in _json_candidates(text):
        try:
            val = json.loads(cand)
        except (ValueError, RecursionError):  # JSONDecodeError, too many digits, nesting too deep
            continue
        if isinstance(val, want or (dict, list)):
            return val
    return None


def parse_key_values(text: str, keys: list[str]) -> dict[str, str] | None:
    """``Key: value`` lines for the given keys (case-insensitive, markdown bold tolerated).

    A value may continue on following lines until the next known key. Returns the
    keys found (at least one), first occurrence winning, or None.
    """
    if not text:
        return None
    wanted = {k.lower(): k for k in keys}
    found: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = _KEY_LINE.match(line)
        key = m.group(1).strip().lower() if m else None
        if key in wanted:
            current = wanted[key] if wanted[key] not in found else None
            if current:
                found[current] = m.group(2).strip().lstrip("*").strip().strip('"').strip()
            continue
        if m and key not in wanted and current and found.get(current):
            current = None  # another key ends the value
        elif current and line.strip():
            found[current] = (found[current] + " " + line.strip()).strip()
    found = {k: v for k, v in found.items() if v}
    return found or None


def parse_list(text: str) -> list[str] | None:
    """Items of a numbered or bulleted list (``1. x``, ``2) y``, ``- z``), or None."""
    if not text:
        return None
    items = [m.group(1).strip() for m in map(_LIST_ITEM.match, text.splitlines()) if m]
    items = [i for i in items if i]
    return items or None


def split_tags(value) -> list[str]:
    """A tag answer (``a, b; c`` or a JSON list) as a list of non-empty strings."""
    if isinstance(value, list):
        parts = [str(v) for v in value]
    else:
        parts = re.split(r"[,;|\n]", str(value or ""))
    return [p.strip().strip("\"'`.*[]").strip() for p in parts if p.strip().strip("\"'`.*[]").strip()]


def strip_label(text: str, labels: list[str]) -> str:
    """Text after a leading ``Label:`` (e.g. 'Question:'), unquoted and trimmed; '' if empty."""
    text = (text or "").strip()
    for lab in labels:
        # [^\S\n]*, not \s*: a \s* at every line start rescans all later blank lines (quadratic)
        m = re.search(rf"(?im)^[^\S\n]*\**{re.escape(lab)}\**\s*[:：]\s*", text)
        if m:
            text = text[m.end():]
            break
    text = text.strip().strip("*").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


_CHATTY = re.compile(r"(?i)(\b(i|i'm|i'll|me|my|you|your|we|our)\b|\banswer is\b|^(sure|okay|ok|yes|no|here|hello|hi)\b)")


def looks_like_label(text: str, max_words: int) -> bool:
    """A short descriptive phrase (a tag, an ability) rather than chat or an answer.

    With a prefilled ``Tags:`` any continuation 'parses', so the value itself is checked:
    at most ``max_words`` words, no first/second person, no 'answer is', no 'Sure, ...'.
    """
    text = (text or "").strip()
    return bool(text) and len(text.split()) <= max_words and not _CHATTY.search(text) \
        and bool(re.search(r"[A-Za-z]{2,}", text))


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text or ""))
