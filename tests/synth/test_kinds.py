"""The kind of a deficiency follows from its tasks: by task name, else by the task's scorer."""
import pytest

from evalsuite import typedconfig
from synth.generate import SynthConfig
from synth.kinds import DEFAULT_TASK_KINDS, kind_of, task_kind


def test_task_kind_by_name_then_scorer():
    assert task_kind("math_offline", DEFAULT_TASK_KINDS) == "math"
    assert task_kind("ifeval_offline", DEFAULT_TASK_KINDS) == "instruction"
    assert task_kind("humaneval_offline", DEFAULT_TASK_KINDS) == "code"
    scorers = {"my_physics": "numeric", "my_code": "code_exec", "my_he": "humaneval_offline", "my_qa": "exact_match"}
    assert task_kind("my_physics", DEFAULT_TASK_KINDS, scorers) == "math"
    assert task_kind("my_code", DEFAULT_TASK_KINDS, scorers) == "code"
    assert task_kind("my_he", DEFAULT_TASK_KINDS, scorers) == "code"       # scoring_from a code task
    assert task_kind("my_qa", DEFAULT_TASK_KINDS, scorers) == "other"
    assert task_kind("mmlu", DEFAULT_TASK_KINDS) == "other"


def test_deficiency_kind_follows_most_of_its_impact():
    d = {"tasks": ["ifeval_offline", "math_offline"], "impact_by_task": {"ifeval_offline": 0.1, "math_offline": 0.3}}
    assert kind_of(d, DEFAULT_TASK_KINDS) == "math"
    assert kind_of({"tasks": ["ifeval_offline", "math_offline"]}, DEFAULT_TASK_KINDS) == "instruction"  # tie: KINDS order
    assert kind_of({"tasks": []}, DEFAULT_TASK_KINDS) == "other"
    assert kind_of({"tasks": ["mine"]}, {"mine": "code"}) == "code"


def test_task_kinds_is_a_checked_config_field():
    cfg = typedconfig.load(SynthConfig, None, ["task_kinds={my_task: math}"])
    assert cfg.task_kinds == {"my_task": "math"}
    with pytest.raises(typedconfig.ConfigError, match="must be one of"):
        typedconfig.load(SynthConfig, None, ["task_kinds={my_task: maths}"])
    with pytest.raises(typedconfig.ConfigError, match="train_unverified"):
        typedconfig.load(SynthConfig, None, ["train_unverified=sometimes"])
