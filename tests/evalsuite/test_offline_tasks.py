"""Each offline task scores known-correct answers as right and known-wrong ones as wrong."""
import importlib.util
import json

import pytest

from evalsuite.suite import TASKS_DIR


def _utils(task: str):
    path = TASKS_DIR / task / "utils.py"
    spec = importlib.util.spec_from_file_location(f"test_utils_{task}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def math_utils():
    return _utils("math_offline")


@pytest.fixture(scope="module")
def ifeval_utils():
    return _utils("ifeval_offline")


@pytest.fixture(scope="module")
def humaneval_utils():
    return _utils("humaneval_offline")


def _score_math(u, doc, response):
    extracted = u.extract_answers([[response]], [doc])[0][0]
    return u.process_results(doc, [extracted])["exact_match"]


def test_math_known_right_and_wrong(math_utils):
    docs = math_utils.load_docs()["test"]
    assert len(docs) == 300
    doc = docs[0]
    # the worked solution itself ends with the answer; the question's first number is not it
    assert _score_math(math_utils, doc, doc["solution"]) == 1.0
    assert _score_math(math_utils, doc, f"{doc['question']}\nThe answer is {doc['answer']}.") == 1.0
    assert _score_math(math_utils, doc, "The answer is 123456789.") == 0.0
    assert _score_math(math_utils, doc, "I am not sure.") == 0.0


def test_every_math_solution_scores_correct(math_utils):
    docs = math_utils.load_docs()["test"]
    assert all(_score_math(math_utils, d, d["solution"]) == 1.0 for d in docs)


def test_ifeval_known_right_and_wrong(ifeval_utils):
    doc = {"prompt": "Describe bees.", "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"],
           "kwargs": [{}, {}]}
    good = "bees are small insects that make honey and live in large colonies with a single queen."
    bad = "Bees, which are insects, make honey."
    assert ifeval_utils.process_results(doc, [good])["prompt_level_strict_acc"] is True
    res = ifeval_utils.process_results(doc, [bad])
    assert res["prompt_level_strict_acc"] is False and res["inst_level_strict_acc"] == [False, False]


def test_ifeval_nltk_checkers_work_offline(ifeval_utils):
    """number_sentences and capital_word_frequency need NLTK data upstream; here they never crash."""
    check = ifeval_utils.check_instructions
    ids = ["length_constraints:number_sentences"]
    assert check("One. Two. Three.", ids, [{"num_sentences": 3, "relation": "at least"}]) == [True]
    assert check("One. Two.", ids, [{"num_sentences": 3, "relation": "at least"}]) == [False]
    caps = ["change_case:capital_word_frequency"]
    assert check("I LOVE BIG CATS", caps, [{"capital_frequency": 3, "capital_relation": "at least"}]) == [True]
    assert check("i love cats", caps, [{"capital_frequency": 1, "capital_relation": "at least"}]) == [False]


def test_every_ifeval_prompt_is_checkable(ifeval_utils):
    docs = ifeval_utils.load_docs()["test"]
    ids = {i for d in docs for i in d["instruction_id_list"]}
    assert ids <= set(ifeval_utils.INSTRUCTION_DICT) and len(ids) >= 15
    for d in docs:  # every doc's kwargs build a checker and a check runs without error
        ifeval_utils.process_results(d, ["A short answer. It has two sentences."])


def _humaneval(u, n=3):
    return list(u.load_docs()["test"].select(range(n)))


def _pass(u, doc, completion):
    program = u.build_predictions([[completion]], [doc])[0]
    return u.pass_at_1([doc["test"] + f"\ncheck({doc['entry_point']})"], [program])


def test_humaneval_canonical_passes_and_wrong_fails(humaneval_utils):
    docs = _humaneval(humaneval_utils)
    for d in docs:
        assert _pass(humaneval_utils, d, d["canonical_solution"]) == 1.0
        assert _pass(humaneval_utils, d, "    return None\n") == 0.0
    # a whole function in a fence (a chat answer) is accepted as well
    d = docs[0]
    fenced = f"```python\ndef {d['entry_point']}" + d["prompt"].split(f"def {d['entry_point']}")[1] + d["canonical_solution"] + "```"
    assert _pass(humaneval_utils, d, fenced) == 1.0


@pytest.mark.parametrize("body", [
    "    while True:\n        pass\n",                                               # loops forever
    "    x = []\n    while True:\n        x.append(bytearray(10**8))\n",             # eats memory
    "    import socket\n    socket.create_connection(('8.8.8.8', 53), timeout=2)\n", # opens a socket
    "    import os\n    os.system('echo hacked')\n",                                 # spawns a shell
])
def test_hostile_humaneval_code_scores_zero(humaneval_utils, body):
    d = _humaneval(humaneval_utils, 1)[0]
    assert _pass(humaneval_utils, d, body) == 0.0


def test_humaneval_docs_have_stable_ids(humaneval_utils):
    docs = humaneval_utils.load_docs()["test"]
    assert len(docs) == 164 and docs[0]["id"] == "HumanEval/0" and json.dumps(docs[163]["id"]) == '"HumanEval/163"'


def test_math_prompt_carries_three_worked_examples_as_chat_turns():
    """lm-eval builds the math prompt from the few-shot split: shots are earlier user/assistant turns
    whose answers are worked solutions, and the question asked last is the test item."""
    from evalsuite.harness import EvalConfig, load_tasks, task_manager
    from evalsuite.suite import load_suite

    suite = load_suite("offline")
    suite.tasks = [t for t in suite.tasks if t.name == "math_offline"]
    (_, task), = load_tasks(suite, task_manager(suite), EvalConfig()).values()
    doc = task.test_docs()[0]
    msgs = task.fewshot_context(doc, num_fewshot=task.get_config("num_fewshot"), apply_chat_template=True,
                                fewshot_as_multiturn=True,
                                chat_template=lambda m, add_generation_prompt: json.dumps(m))
    msgs = json.loads(msgs)
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3 + ["user"]
    solutions = {d["solution"] for d in task.fewshot_docs()}
    assert all(m["content"].strip() in solutions for m in msgs[1:-1:2])
    assert msgs[-1]["content"].startswith(doc["question"])
    # every item gets the same shots (first_n): one shared prompt prefix for the whole batch
    other = json.loads(task.fewshot_context(task.test_docs()[7], num_fewshot=3, apply_chat_template=True,
                                            fewshot_as_multiturn=True,
                                            chat_template=lambda m, add_generation_prompt: json.dumps(m)))
    assert other[:-1] == msgs[:-1] and other[-1] != msgs[-1]
    first = [task.fewshot_docs()[i] for i in range(3)]  # first_n: the split's first three, levels 1-3
    assert [d["level"] for d in first] == [1, 2, 3]
    assert [m["content"].strip() for m in msgs[1:-1:2]] == [d["solution"].strip() for d in first]
