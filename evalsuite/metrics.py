"""Answer extraction and per-item metrics shared by the suite's tasks (no lm-eval import here).

Task ``utils.py`` files (loaded by lm-eval through ``!function``) and user tasks call these, and
``synth.verify`` judges synthesized answers with the same functions: data is checked by the rules
that score the student.
"""
from __future__ import annotations

import re
import string
from fractions import Fraction

from evalsuite.sandbox import run_code

_NUM = r"-?\$?\d[\d,]*(?:\.\d+)?"
# Cues after which the final answer is stated, strongest first. The last number anywhere is
# the fallback: the first number of a response is usually the question being echoed.
_CUES = [
    re.compile(r"####\s*(" + _NUM + ")"),
    re.compile(r"\\boxed\{\s*(" + _NUM + r")\s*\}"),
    re.compile(r"(?:final answer|the answer)\s*(?:is|:|=)?\s*[:=]?\s*\**\s*(" + _NUM + ")", re.I),
    re.compile(r"^[ \t]*\**answer\**\s*[:=]\s*\**\s*(" + _NUM + ")", re.I | re.M),
]
_ANY_NUM = re.compile(_NUM)


def _clean_number(s: str) -> str:
    return s.replace("$", "").replace(",", "").rstrip(".")


def extract_number(text: str) -> str | None:
    """The model's final numeric answer as a plain string ('12.5'), or None if there is none."""
    if not text:
        return None
    for cue in _CUES:
        hits = list(cue.finditer(text))
        if hits:
            last = hits[-1]
            # "The answer is 10 * 5 = 50.": the value after the last "=" on that line is the answer
            rest = text[last.start(1):].split("\n", 1)[0]
            if "=" in rest:
                after = _ANY_NUM.findall(rest.rsplit("=", 1)[1])
                if after:
                    return _clean_number(after[0])
            return _clean_number(last.group(1))
    hits = _ANY_NUM.findall(text)
    return _clean_number(hits[-1]) if hits else None


def to_fraction(s) -> Fraction | None:
    if s is None:
        return None
    try:
        return Fraction(_clean_number(str(s).strip()))
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(pred, gold, rel_tol: float = 1e-6) -> bool:
    """Numeric equality of two answers given as strings or numbers ('1,200' == 1200.0)."""
    p, g = to_fraction(pred), to_fraction(gold)
    if p is None or g is None:
        return False
    if p == g:
        return True
    try:
        return abs(float(p) - float(g)) <= rel_tol * max(1.0, abs(float(g)))
    except OverflowError:   # beyond float range and not exactly equal: different answers
        return False


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(s: str) -> str:
    """SQuAD-style normalisation for exact match: lowercase, no punctuation/articles/extra spaces."""
    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(pred: str, gold: str) -> bool:
    return normalize_text(pred) == normalize_text(gold)


def first_line_answer(text: str) -> str:
    """For exact-match tasks: the text after an 'answer:' cue, else the first non-empty line."""
    m = re.search(r"answer\s*(?:is|:)\s*(.+)", text or "", re.I)
    if m:
        return m.group(1).strip().splitlines()[0].strip()
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.S)


def code_block(text: str) -> str | None:
    """The first fenced code block of a response (an unclosed fence runs to the end), or None."""
    m = _FENCE.search(text or "")
    return m.group(1) if m else None


def extract_code(text: str) -> str:
    """What the code tasks run: the first fenced block, else the whole response."""
    block = code_block(text)
    return block if block is not None else (text or "")


def code_passes(program: str, timeout_s: float = 5.0, memory_mb: int = 512) -> bool:
    """Run a full program (solution + tests) in the sandbox; True when it exits cleanly."""
    return run_code(program, timeout_s=timeout_s, memory_mb=memory_mb).passed


def pass_at_1(references, predictions, timeout_s: float = 5.0, memory_mb: int = 512) -> float:
    """lm-eval metric signature (``metric: !function ...``): predictions[0] is the program,
    references[0] the test code appended to it. A replacement for lm-eval's ``code_eval``
    path, which loads its metric from the hub."""
    ref = references[0] if isinstance(references, (list, tuple)) else references
    pred = predictions[0] if isinstance(predictions, (list, tuple)) else predictions
    if isinstance(pred, (list, tuple)):  # humaneval's filter yields one list per doc
        pred = pred[0]
    return float(code_passes(f"{pred}\n\n{ref}\n", timeout_s=timeout_s, memory_mb=memory_mb))
