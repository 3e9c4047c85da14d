"""The synthesize stage's accounting: every teacher step and every filter, counted.

``Ledger.generate`` is the one way the stage calls the teacher: one ``llm.generate`` per step
with all its prompts (all deficiencies, all items), counting prompts, parse failures and
teacher tokens per step and per deficiency. Tokens are estimated as characters / 4 of prompt
and output (the backends return text only); the estimate is the budget's unit too.
``Ledger.filter`` counts what a filter took in, let through and dropped by reason.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from synth.llm.base import LLM, Messages, Sampling


def est_tokens(x) -> int:
    if isinstance(x, list):
        return sum(est_tokens(m.get("content", "")) if isinstance(m, dict) else est_tokens(m) for m in x)
    return (len(str(x)) + 3) // 4


class Ledger:
    def __init__(self, llm: LLM):
        self.llm = llm
        self.steps: dict[str, dict] = {}
        self.filters: dict[str, dict] = {}
        self.tokens: Counter = Counter()       # deficiency id -> estimated teacher tokens spent

    def generate(self, step: str, prompts: Sequence[Messages], owners: Sequence[str], sampling: Sampling) -> list[str]:
        """All of one step's prompts in one call; ``owners[i]`` is the deficiency prompt i serves."""
        if not prompts:
            return []
        st = self.steps.setdefault(step, {"calls": 0, "prompts": 0, "parse_failures": 0, "tokens": 0})
        outs = self.llm.generate(list(prompts), sampling)
        st["calls"] += 1
        st["prompts"] += len(prompts)
        for p, o, owner in zip(prompts, outs, owners):
            t = est_tokens(p) + est_tokens(o)
            st["tokens"] += t
            self.tokens[owner] += t
        return outs

    def as_llm(self, step: str, owners: Sequence[str]) -> "_StepLLM":
        """An ``LLM`` for code written against the protocol (``synth.evolve``): its calls count as ``step``."""
        return _StepLLM(self, step, list(owners))

    def parse_failed(self, step: str, n: int = 1) -> None:
        self.steps.setdefault(step, {"calls": 0, "prompts": 0, "parse_failures": 0, "tokens": 0})
        self.steps[step]["parse_failures"] += n

    def filter(self, name: str, n_in: int, dropped: Counter | dict) -> None:
        """Count one pass of a filter: ``n_in`` items in, ``dropped`` by reason, the rest out."""
        f = self.filters.setdefault(name, {"in": 0, "out": 0, "dropped": {}})
        lost = sum(dropped.values())
        f["in"] += n_in
        f["out"] += n_in - lost
        for reason, c in dropped.items():
            if c:
                f["dropped"][reason] = f["dropped"].get(reason, 0) + c

    def total_tokens(self) -> int:
        return sum(s["tokens"] for s in self.steps.values())


class _StepLLM:
    def __init__(self, ledger: Ledger, step: str, owners: list[str]):
        self.ledger, self.step, self.owners = ledger, step, owners

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]:
        return self.ledger.generate(self.step, prompts, self.owners, sampling)

    def close(self) -> None:
        pass
