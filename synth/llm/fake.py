"""Deterministic scripted backend for tests and the lead's end-to-end runs (no model).

``model: <path.json>`` loads a script ``{"rules": [{"match": "<regex or substring>",
"responses": ["...", ...]}], "default": "..."}``: the first rule whose pattern occurs in a
prompt (all turns joined) answers, cycling through its responses. ``model: builtin``
recognises which synthloop template it got (``synth.prompts.MARKERS``) and returns a
valid, parseable answer that varies deterministically with the prompt; a prompt without
a marker (a synthesized instruction) gets a short answer ending in a number derived
from the prompt, so two samples of it agree. The verification templates answer consistently:
a worked solution (``solve``) and a program (``pot``) for the same question state the same
number; a code solution (``solve_code``) and its tests (``code_tests``) implement and check the
task's ``name(x)`` "returns x plus N"; judge and evolution-check prompts answer with a pass.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

from synth.llm.base import LLMConfig, Messages, Sampling


def _h(*parts) -> int:
    return int(hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12], 16)


def _joined(prompt: Messages) -> str:
    return "\n".join(str(m.get("content", "")) for m in prompt)


_CATEGORIES = {
    "Math Reasoning": ["arithmetic", "word problem solving", "multi-step reasoning", "percentage calculation"],
    "Coding": ["python programming", "string manipulation", "algorithm design", "debugging"],
    "Instruction Following": ["format constraint", "length constraint", "lowercase writing", "keyword inclusion"],
    "Knowledge QA": ["world knowledge", "science fact", "history fact", "geography"],
}
_ABILITIES = [
    ("multi-step arithmetic", "The student stopped after the first step of the calculation.",
     "The student reported the first intermediate result as the answer."),
    ("following formatting constraints", "The student ignored the required output format.",
     "The student answered in its usual style without reading the format rules."),
    ("reading the question carefully", "The student answered a different question than the one asked.",
     "The student matched a familiar question pattern instead of reading this one."),
    ("factual recall", "The student gave a plausible but wrong fact.",
     "The student guessed a related name instead of recalling the fact."),
    ("writing correct python code", "The student's function returns the wrong value for edge cases.",
     "The student coded only the common case and skipped empty or boundary inputs."),
]
_TOPICS = ["a bakery", "a school trip", "a garden", "a bookshop", "a football team", "a train journey"]
_FOLLOWUPS = ["Can you explain the second step in more detail?", "What would change if the numbers were doubled?",
              "Can you give another example like this one?", "Why is that the right approach?"]
_DIMENSION_TAILS = {
    "breadth": "Answer it for {topic} instead.",
    "depth": "Explain each step of your reasoning before giving the final answer.",
    "difficulty": "Also handle the case where every quantity is three times larger.",
    "complexity": "Give the answer in exactly two sentences and end with the final result.",
}


def _last_user(prompt: Messages) -> str:
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")


def _question(last: str) -> str:
    """The question a solve/pot prompt asks: the text after its last 'Question:' line."""
    parts = re.split(r"(?m)^Question:[ \t]*", last)
    return parts[-1].strip() if len(parts) > 1 else last.strip()


def _code_task(text: str) -> tuple[str, int]:
    """(function name, N) of the most recent builtin-style code task in the prompt."""
    hits = re.findall(r"`(\w+)\(x\)` that returns x plus (\d+)", text)
    return (hits[-1][0], int(hits[-1][1])) if hits else ("solve", 0)


def _builtin(prompt: Messages, occurrence: int) -> str:
    from synth.prompts import which_prompt

    text, last = _joined(prompt), _last_user(prompt)
    h = _h(last, occurrence)
    kind = which_prompt(text)
    if kind == "tag":
        low = last.lower()
        if re.search(r"\bdef |python|function|code", low):
            cat = "Coding"
        elif re.search(r"\d", low):
            cat = "Math Reasoning"
        elif re.search(r"words|letters|format|lowercase|capital|sentence", low):
            cat = "Instruction Following"
        else:
            cat = "Knowledge QA"
        pool = _CATEGORIES[cat]
        fine = [pool[h % len(pool)], pool[(h // 7 + 1) % len(pool)]]
        return f"Tags: {', '.join(dict.fromkeys(fine))}\nCategory: {cat}"
    if kind == "diagnose":
        ability, error, shortcut = _ABILITIES[_h(last) % len(_ABILITIES)]
        return f"Ability: {ability}\nError: {error}\nShortcut: {shortcut}"
    if kind == "ability":
        return f"Ability: {_ABILITIES[_h(last) % len(_ABILITIES)][0]}"
    if kind == "instruct":
        skill = re.search(r"Skill:\s*(.+)", last)
        skill = skill.group(1).strip() if skill else "reasoning"
        a, b = 3 + h % 40, 2 + (h // 41) % 30
        return (f"Question: In {_TOPICS[h % len(_TOPICS)]}, a task needs {skill}. There are {a} boxes "
                f"with {b} items each. How many items are there in total?")
    if kind == "evolve":
        q = re.search(r"Question:\s*(.+)", last, re.S)
        q = q.group(1).strip() if q else last.strip()
        dim = next((d for d in _DIMENSION_TAILS if d in text.lower()), "depth")
        return "New question: " + q + " " + _DIMENSION_TAILS[dim].format(topic=_TOPICS[h % len(_TOPICS)])
    if kind == "followup":
        return "User: " + _FOLLOWUPS[h % len(_FOLLOWUPS)]
    if kind == "request":
        topic = re.search(r"Topic:\s*(.+)", last)
        return f"Request: Write a short note to a friend about {topic.group(1).strip() if topic else 'the weekend'}."
    if kind == "instruct_code":
        skill = re.search(r"Skill:\s*(.+)", last)
        a = 2 + h % 50
        return (f"Task: Write a Python function `add_{a}(x)` that returns x plus {a} "
                f"(practising {skill.group(1).strip() if skill else 'python'}).")
    if kind in ("solve", "pot"):
        n = _h(_question(last)) % 997  # the same number by both routes
        if kind == "pot":
            return f"```python\nanswer = {n}\nprint(answer)\n```"
        return f"Let me work through this step by step.\nCombining the quantities gives the result.\nThe answer is {n}."
    if kind == "solve_code":
        name, a = _code_task(text)
        return f"```python\ndef {name}(x):\n    return x + {a}\n```"
    if kind == "code_tests":
        name, a = _code_task(text)
        return "```python\n" + "\n".join(f"assert {name}({x}) == {x + a}" for x in (1, 0, 10)) + "\n```"
    if kind == "judge":
        return "Score: 4"
    if kind == "evolve_check":
        return "Verdict: yes"
    n = _h(last) % 997  # seed-independent, so two samples of one instruction agree
    return f"Let me work through this step by step. Combining the quantities gives the result. The answer is {n}."


class FakeBackend:
    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self.calls = 0      # generate() calls, for tests
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}   # whitespace words
        self.prompts_seen = 0
        self.rules: list[tuple[re.Pattern, list[str]]] = []
        self.default = ""
        self._cursor: dict[int, int] = {}
        if cfg.model != "builtin":
            self._load_script(Path(cfg.model))

    def _load_script(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"fake backend: script {path} not found (LLMConfig.model must be "
                                    f"'builtin' or a JSON script path)")
        try:
            script = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: invalid JSON in fake script ({exc.msg})") from None
        if not isinstance(script, dict) or not isinstance(script.get("rules", []), list):
            raise ValueError(f"{path}: fake script must be an object with a 'rules' list")
        for i, rule in enumerate(script.get("rules", [])):
            if not isinstance(rule, dict) or "match" not in rule or not isinstance(rule.get("responses"), list) \
                    or not rule["responses"]:
                raise ValueError(f"{path}: rules[{i}] needs 'match' and a non-empty 'responses' list")
            try:
                pat = re.compile(rule["match"], re.S)
            except re.error:
                pat = re.compile(re.escape(rule["match"]))
            self.rules.append((pat, [str(r) for r in rule["responses"]]))
        self.default = str(script.get("default", ""))

    def _scripted(self, prompt: Messages) -> str:
        text = _joined(prompt)
        for k, (pat, responses) in enumerate(self.rules):
            if pat.search(text):
                i = self._cursor.get(k, 0)
                self._cursor[k] = i + 1
                return responses[i % len(responses)]
        return self.default

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]:
        from synth.llm.hf import trim_at_stop

        self.calls += 1
        self.prompts_seen += len(prompts)
        out, seen = [], {}
        for p in prompts:
            key = _joined(p)
            seen[key] = seen.get(key, -1) + 1  # identical prompts in one call answer differently
            text = _builtin(p, seen[key] + 1000 * sampling.seed) if not self.rules and self.cfg.model == "builtin" \
                else self._scripted(p)
            out.append(trim_at_stop(text, sampling.stop).strip())
        self.usage["requests"] += len(prompts)
        self.usage["prompt_tokens"] += sum(len(_joined(p).split()) for p in prompts)
        self.usage["completion_tokens"] += sum(len(o.split()) for o in out)
        return out

    def close(self) -> None:
        pass
