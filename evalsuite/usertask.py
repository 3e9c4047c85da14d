"""Your own benchmark from a local JSONL: rows -> an lm-eval task config (a plain dict).

Rows: ``{"question": str, "answer": ..., "id": optional}`` plus, per metric,
* ``numeric``:        answer is a number; the model's final number is compared numerically;
* ``exact_match``:    answer is text; compared after normalisation (case, punctuation, articles);
* ``multiple_choice``: ``"choices": [str, ...]``, answer is the right choice's text, index or letter;
                       scored by lm-eval's log-likelihood ranking (``acc``);
* ``code_exec``:      ``"test": "assert f(1) == 2 ..."``; the model's code plus the test runs in the sandbox.
No lm-eval import here: the harness passes the dict to lm-eval's TaskManager.
"""
from __future__ import annotations

import functools
import string
from pathlib import Path

from evalsuite import metrics
from evalsuite.records import RecordError, iter_jsonl

DEFAULT_PROMPTS = {
    "numeric": "{{question}}\nSolve it step by step, then write the final answer as: The answer is <number>.",
    "exact_match": "{{question}}\nReply with the answer only, as: Answer: <answer>",
    "multiple_choice": "Question: {{question}}\nAnswer:",
    "code_exec": "{{question}}\nWrite the Python solution in a single ```python code block.",
}
DEFAULT_MAX_GEN_TOKS = {"numeric": 256, "exact_match": 32, "code_exec": 256}


def load_rows(path: str | Path, metric: str) -> list[dict]:
    """Validated rows, each with a stable string ``id`` (given, or the line number)."""
    rows = []
    for i, row in enumerate(iter_jsonl(path), 1):
        where = f"{path}:{i}"
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise RecordError(f"{where}: each row needs a string 'question'")
        need = "test" if metric == "code_exec" else "answer"
        if row.get(need) is None:
            raise RecordError(f"{where}: a {metric} row needs {need!r}")
        out = {"id": str(row.get("id", f"line{i}")), "question": row["question"]}
        if metric == "numeric":
            if metrics.to_fraction(row["answer"]) is None:
                raise RecordError(f"{where}: 'answer' {row['answer']!r} is not a number")
            out["answer"] = str(row["answer"])
        elif metric == "exact_match":
            out["answer"] = str(row["answer"])
        elif metric == "multiple_choice":
            choices = row.get("choices")
            if not isinstance(choices, list) or len(choices) < 2:
                raise RecordError(f"{where}: a multiple_choice row needs a 'choices' list of 2 or more")
            out["choices"] = [str(c) for c in choices]
            out["gold"] = _gold_index(row["answer"], out["choices"], where)
            out["answer"] = out["choices"][out["gold"]]
        else:
            out["test"] = row["test"]
            out["answer"] = str(row.get("answer", ""))
        rows.append(out)
    if not rows:
        raise RecordError(f"{path}: no rows")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise RecordError(f"{path}: duplicate 'id' values")
    return rows


def _gold_index(answer, choices: list[str], where: str) -> int:
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return answer
    if isinstance(answer, str):
        if answer in choices:
            return choices.index(answer)
        letters = string.ascii_uppercase[:len(choices)]
        if len(answer.strip()) == 1 and answer.strip().upper() in letters:
            return letters.index(answer.strip().upper())
    raise RecordError(f"{where}: 'answer' {answer!r} is not one of the choices, an index or a letter")


def _dataset(path: str, metric: str, **_):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(load_rows(path, metric))})


def _extract_numbers(resps, docs):
    return [[metrics.extract_number(r) or "" for r in resp] for resp in resps]


def _extract_short(resps, docs):
    return [[metrics.first_line_answer(r) for r in resp] for resp in resps]


def _extract_code(resps, docs):
    return [[metrics.extract_code(r) for r in resp] for resp in resps]


def _score_numeric(doc, results):
    return {"exact_match": float(metrics.numbers_equal(results[0], doc["answer"]))}


def _score_exact(doc, results):
    return {"exact_match": float(metrics.exact_match(results[0], doc["answer"]))}


def _score_code(doc, results):
    return {"pass_at_1": metrics.pass_at_1([doc["test"]], [results[0]])}


def task_config(name: str, data: str, metric: str, prompt: str | None = None) -> dict:
    """The lm-eval task config (as TaskManager.load takes inline) for a local JSONL benchmark."""
    load_rows(data, metric)  # fail early, naming the file and line
    cfg = {
        "task": name,
        "custom_dataset": functools.partial(_dataset, data, metric),
        "test_split": "test",
        "num_fewshot": 0,
        "doc_to_text": prompt or DEFAULT_PROMPTS[metric],
        "metadata": {"version": 1.0, "data": data, "metric_type": metric},
    }
    if metric == "multiple_choice":
        return {**cfg, "output_type": "multiple_choice", "doc_to_target": "gold", "doc_to_choice": "choices",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    extract, score, metric_name = {
        "numeric": (_extract_numbers, _score_numeric, "exact_match"),
        "exact_match": (_extract_short, _score_exact, "exact_match"),
        "code_exec": (_extract_code, _score_code, "pass_at_1"),
    }[metric]
    return {**cfg, "output_type": "generate_until",
            "doc_to_target": "{{answer}}" if metric != "code_exec" else "{{test}}",
            "unsafe_code": metric == "code_exec",
            "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": DEFAULT_MAX_GEN_TOKS[metric]},
            "filter_list": [{"name": "extract", "filter": [{"function": "custom", "filter_fn": extract},
                                                          {"function": "take_first"}]}],
            "process_results": score,
            "metric_list": [{"metric": metric_name, "aggregation": "mean", "higher_is_better": True}]}
