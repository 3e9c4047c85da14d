"""Content rules that keep a pool record out of the training data, each a named regex.

The seed's source heuristics: a conversation whose code does network or file I/O
(``requests.get``, ``urllib``, ``socket``, ``open(..., 'w')``, ``os.remove``, ``subprocess``)
teaches the student to emit side-effecting code for tasks that need none, and cannot be
verified in the sandbox. Two more drop ShareGPT rows with an export banner as a turn, or
whose opening request is empty ("continue", a lone number): embedded by that turn, they match
anything.
Rules are data (``RetrieveConfig.drop_rules``: a list of ``{name, pattern, where}``), searched
in every message or only user / assistant / the first user turn; a record is counted under
the first rule it matches, so the per-rule counts add up to the records dropped.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal


@dataclass
class DropRule:
    name: str      # the key it is counted under in the retrieve summary
    pattern: str   # Python regex (multi-line mode; (?i) for case-insensitive)
    where: Literal["any", "user", "assistant", "first_user"] = "any"  # which messages it is searched in

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern, re.MULTILINE)
        except re.error as exc:
            raise ValueError(f"drop rule {self.name!r}: bad regex {self.pattern!r} ({exc})") from None


def default_rules() -> list[DropRule]:
    """Code doing network or file I/O, or starting processes."""
    return [
        DropRule("http_requests", r"\brequests\.(?:get|post|put|patch|delete|head|request|Session)\b"),
        DropRule("urllib", r"\burllib\d?\.|\b(?:import|from)\s+urllib\b"),
        DropRule("socket", r"\bsocket\.socket\(|^\s*(?:import|from)\s+socket\b"),
        DropRule("file_write", r"""\bopen\([^)\n]*,\s*(?:mode\s*=\s*)?['"](?=[rbt]*[wax+])[rwaxbt+]{1,4}['"]"""),
        DropRule("file_delete", r"\bos\.(?:remove|unlink|rmdir|removedirs)\(|\bshutil\.rmtree\("),
        DropRule("subprocess", r"\bsubprocess\.\w+\(|^\s*(?:import|from)\s+subprocess\b|\bos\.(?:system|popen)\("),
        # ShareGPT rows with an export banner as a turn, or whose opening request is empty ("continue", a number)
        DropRule("share_banner", r"^\W*This conversation is shared from"),
        DropRule("no_request", r"(?i)\A\W*(?:\w{1,3}|continue|go on|keep going|continue writing(?: please)?)\W*\Z",
                 where="first_user"),
    ]


def _texts(rec: dict, where: str) -> list[str]:
    msgs = rec["messages"]
    if where == "first_user":
        return [next((m["content"] for m in msgs if m["role"] == "user"), "")]
    return [m["content"] for m in msgs if where == "any" or m["role"] == where]


class RuleSet:
    def __init__(self, rules: list[DropRule]):
        self.rules = [(r.name, re.compile(r.pattern, re.MULTILINE), r.where) for r in rules]

    def first_match(self, rec: dict) -> str | None:
        """The name of the first rule that matches ``rec``, else None."""
        for name, rx, where in self.rules:
            if any(rx.search(t) for t in _texts(rec, where)):
                return name
        return None

    def apply(self, pool: list[dict]) -> tuple[list[bool], dict[str, int]]:
        """(kept mask over ``pool``, records dropped per rule name, every rule listed)."""
        counts: Counter = Counter()
        keep = []
        for rec in pool:
            hit = self.first_match(rec) if self.rules else None
            keep.append(hit is None)
            if hit:
                counts[hit] += 1
        return keep, {name: counts[name] for name, _, _ in self.rules}
