"""Every shipped suite loads, names real tasks, and bad suite files fail naming the key."""
from pathlib import Path

import pytest

from evalsuite.harness import task_manager
from evalsuite.suite import SUITES_DIR, SuiteError, load_suite

SUITES = sorted(SUITES_DIR.glob("*.yaml"))


def test_there_are_suites():
    assert {p.stem for p in SUITES} >= {"offline", "hub"}


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_every_suite_loads_and_its_tasks_exist(path):
    suite = load_suite(path)
    tm = task_manager(suite)
    for t in suite.tasks:
        if t.data or t.yaml:
            continue
        assert (t.task or t.name) in tm.task_index, f"{path.name}: {t.name} is not an lm-eval task"
        if t.scoring_from:
            assert t.scoring_from in tm.task_index


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, needle", [
    ("tasks:\n  - name: a\n    max_gen_tok: 3\n", "unknown key 'max_gen_tok'"),
    ("tasks:\n  - name: a\n    max_gen_toks: many\n", "'max_gen_toks' must be int"),
    ("tasks:\n  - name: a\n    data: missing.jsonl\n    metric: numeric\n", "does not exist"),
    ("tasks:\n  - name: a\n    data: s.yaml\n    metric: fuzzy\n", "'metric' must be one of"),
    ("tasks:\n  - a\n  - a\n", "duplicate task name"),
    ("tasks: []\n", "non-empty 'tasks'"),
    ("tasks:\n  - a\nextra: 1\n", "unknown top-level key"),
])
def test_bad_suite_files_name_the_problem(tmp_path, text, needle):
    with pytest.raises(SuiteError, match=needle) as exc:
        load_suite(_write(tmp_path, text))
    assert "s.yaml" in str(exc.value)


def test_unknown_suite_name_lists_the_known_ones():
    with pytest.raises(SuiteError, match="offline"):
        load_suite("no-such-suite")
