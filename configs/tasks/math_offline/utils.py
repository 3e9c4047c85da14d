"""lm-eval hooks for math_offline (loaded by lm-eval through `!function`)."""
from pathlib import Path

import datasets

from evalsuite.metrics import extract_number, numbers_equal

HERE = Path(__file__).parent
SPLITS = {"test": HERE / "math_offline.jsonl", "fewshot": HERE / "math_offline_fewshot.jsonl"}


def load_docs(**_):
    return datasets.DatasetDict({split: datasets.Dataset.from_json(str(path)) for split, path in SPLITS.items()})


def extract_answers(resps, docs):
    # "" rather than None so the logged sample stays a string
    return [[extract_number(r) or "" for r in resp] for resp in resps]


def process_results(doc, results):
    return {"exact_match": float(numbers_equal(results[0], doc["answer"]))}
