"""The synthesize stage's round budget: verified records and teacher tokens per deficiency.

``allocate`` splits the round's records by impact (1 each, the rest in proportion). ``Budget``
holds each deficiency's quota and token budget and, between attempts, follows yield: a
deficiency that has met its quota hands its unspent tokens on; one that kept nothing in
``dry_after`` attempts (a 135M teacher's math: 2 in 30 verified), or spent its tokens short of
its quota, hands on its unmet quota and unspent tokens — to the deficiencies that do yield, in proportion to their verified records per
prompt, so a round's tokens end up where they buy verified records. Nothing moves when no
deficiency yields (a lone dry deficiency keeps trying until ``max_attempts``). Each attempt's
prompts per deficiency are sized by its measured yield (``missing / yield``; ``oversample`` per
missing record before it has one), capped by ``max_prompts`` and by what its remaining tokens
buy at its measured tokens per prompt.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Mapping, Sequence


def split(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` in integer shares proportional to ``weights`` (largest remainder, ties to the
    earlier); equal shares when no weight is positive."""
    w = [max(float(x), 0.0) for x in weights]
    if not w:
        return []
    if sum(w) <= 0:
        w = [1.0] * len(w)
    raw = [total * x / sum(w) for x in w]
    share = [math.floor(x) for x in raw]
    for i in sorted(range(len(w)), key=lambda i: (-(raw[i] - share[i]), i))[: total - sum(share)]:
        share[i] += 1
    return share


def allocate(defs: list[dict], total: int) -> dict[str, int]:
    """``total`` records over ``defs`` by impact: 1 each (the floor), the rest in proportion to
    ``impact`` by largest remainder (ties to the higher-ranked); equal weights when no deficiency
    has a positive impact. Fewer records than deficiencies still give each its 1."""
    if not defs:
        return {}
    rest = split(max(total - len(defs), 0), [d.get("impact") or 0.0 for d in defs])
    return {d["id"]: 1 + k for d, k in zip(defs, rest)}


class Budget:
    def __init__(self, trainable: list[dict], n_served: int, per_deficiency: int, per_round: int = 0,
                 tokens_per_deficiency: int = 0):
        """Quotas: ``max(per_deficiency × n_served, per_round)`` records by impact over the
        trainable deficiencies; tokens: ``tokens_per_deficiency × n_served`` in the same shares
        (0 = no token limit)."""
        self.quota = allocate(trainable, max(per_deficiency * n_served, per_round))
        total = tokens_per_deficiency * n_served
        n = max(sum(self.quota.values()), 1)
        self.tokens = {k: math.ceil(total * q / n) for k, q in self.quota.items()}
        self.limited = total > 0
        self.planned = {k: (self.quota[k], self.tokens[k]) for k in self.quota}
        self.prompts: Counter = Counter()    # instruction prompts sent (proposals and pool seeds)
        self.attempts: Counter = Counter()
        self.dry: set[str] = set()

    def _left(self, k: str, spent: Mapping[str, int]) -> int | None:
        return max(self.tokens[k] - spent.get(k, 0), 0) if self.limited else None

    def wants(self, kept: Mapping[str, int], spent: Mapping[str, int], oversample: float,
              max_prompts: int = 0) -> dict[str, int]:
        """Instruction prompts for the next attempt, per deficiency still short of its quota with
        tokens left; deficiencies that want none are absent."""
        out = {}
        for k, q in self.quota.items():
            missing, left = q - kept.get(k, 0), self._left(k, spent)
            if missing <= 0 or k in self.dry or left == 0:
                continue
            y = kept.get(k, 0) / self.prompts[k] if self.prompts[k] else 0.0
            n = math.ceil(missing / y) if y > 0 else math.ceil(missing * oversample)
            if max_prompts:
                n = min(n, max_prompts)
            if left is not None and self.prompts[k]:   # what the remaining tokens buy at the measured rate
                n = min(n, max(1, math.ceil(left * self.prompts[k] / max(spent.get(k, 0), 1))))
            out[k] = max(n, 1)
        return out

    def sent(self, k: str, prompts: int) -> None:
        self.prompts[k] += prompts
        self.attempts[k] += 1

    def follow_yield(self, kept: Mapping[str, int], spent: Mapping[str, int], dry_after: int = 1) -> dict:
        """Move what dry and done deficiencies cannot use to those that yield; returns what moved
        in this call, ``{"quota": records, "tokens": tokens}``.

        Dry (nothing kept in ``dry_after`` attempts, or its tokens spent while short): its unmet
        quota and unspent tokens go. The
        quota goes to every deficiency that kept something (a done one too: it is the cheapest
        place to buy records), in proportion to verified records per prompt; the tokens of the
        dry and of those still done after that go to the ones still short, in the same proportion."""
        got = lambda k: kept.get(k, 0)  # noqa: E731
        dry = [k for k in self.quota if k not in self.dry and got(k) < self.quota[k] and self.attempts[k]
               and ((got(k) == 0 and self.attempts[k] >= dry_after) or self._left(k, spent) == 0)]
        takers = [k for k in self.quota if k not in self.dry and k not in dry and got(k) > 0]
        if not takers:
            return {"quota": 0, "tokens": 0}
        weight = {k: got(k) / max(self.prompts[k], 1) for k in takers}
        quota = sum(self.quota[k] - got(k) for k in dry)
        for k in dry:
            self.quota[k] = got(k)
            self.dry.add(k)
        for k, dq in zip(takers, split(quota, [weight[k] for k in takers])):
            self.quota[k] += dq
        tokens = 0
        needy = [k for k in takers if got(k) < self.quota[k]]
        if self.limited and needy:
            for k in dry + [k for k in takers if got(k) >= self.quota[k]]:
                left = self._left(k, spent)
                tokens += left
                self.tokens[k] -= left
            for k, dt in zip(needy, split(tokens, [weight[k] for k in needy])):
                self.tokens[k] += dt
        return {"quota": quota, "tokens": tokens}

    def report(self, k: str, kept: int, spent: int) -> dict:
        q0, t0 = self.planned.get(k, (0, 0))
        return {"quota": q0, "token_budget": t0,
                "final_quota": self.quota.get(k, 0), "final_token_budget": self.tokens.get(k, 0),
                "prompts": self.prompts[k], "attempts": self.attempts[k], "dry": k in self.dry,
                "yield_per_prompt": round(kept / self.prompts[k], 3) if self.prompts[k] else None,
                "tokens_per_kept_record": round(spent / kept, 1) if kept else None}
