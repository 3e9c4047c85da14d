"""Which verifier serves a deficiency: its kind follows from the eval tasks it came from.

A task maps to a kind by its name (``math_offline``, ``gsm8k``, ...) or, for a task the map
does not name, by its scorer: a user task's metric (``numeric``, ``code_exec``) or the task
it takes its scoring from (``scoring_from: humaneval_offline``). Both maps are one config
field (``SynthConfig.task_kinds``); anything unmapped is ``other`` (judge score, never
verified). A deficiency spanning tasks of several kinds takes the kind carrying most of its
impact (``impact_by_task``; item count per task when absent), ties in ``KINDS`` order.
"""
from __future__ import annotations

from typing import Literal, Mapping, get_args

Kind = Literal["instruction", "code", "math", "other"]
KINDS: tuple[str, ...] = get_args(Kind)
VERIFIABLE = ("instruction", "code", "math")   # kinds with a named check; "other" gets a judge score

# task name or scorer name -> kind (the shipped suites' tasks and the user-task metrics)
DEFAULT_TASK_KINDS = {
    "math_offline": "math", "gsm8k": "math", "numeric": "math",
    "ifeval_offline": "instruction", "ifeval": "instruction",
    "humaneval_offline": "code", "humaneval": "code", "mbpp": "code", "code_exec": "code",
}


def check_kinds(task_kinds: Mapping[str, str]) -> None:
    bad = {k: v for k, v in task_kinds.items() if v not in KINDS}
    if bad:
        k, v = next(iter(bad.items()))
        raise ValueError(f"task_kinds[{k!r}]: must be one of {list(KINDS)}, got {v!r}")


def task_kind(task: str, task_kinds: Mapping[str, str], task_scorers: Mapping[str, str] | None = None) -> str:
    """The kind of one eval task: by its name, else by its scorer, else ``other``."""
    if task in task_kinds:
        return task_kinds[task]
    scorer = (task_scorers or {}).get(task)
    return task_kinds.get(scorer, "other") if scorer else "other"


def kind_of(deficiency: dict, task_kinds: Mapping[str, str], task_scorers: Mapping[str, str] | None = None) -> str:
    """The kind of a deficiency (``deficiencies.json`` entry) from its ``tasks``."""
    tasks = list(deficiency.get("tasks") or [])
    if not tasks:
        return "other"
    weight = deficiency.get("impact_by_task") or {}
    votes: dict[str, float] = {}
    for t in tasks:
        k = task_kind(t, task_kinds, task_scorers)
        votes[k] = votes.get(k, 0.0) + float(weight.get(t, 1.0) or 1e-9)
    return max(KINDS, key=lambda k: (votes.get(k, -1.0), -KINDS.index(k)))
