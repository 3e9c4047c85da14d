"""IFEval scoring that works offline (loaded by lm-eval through `!function`).

lm-eval's checkers (``lm_eval.tasks.ifeval``) are used as they are, except two that need
NLTK's punkt data, which cannot be downloaded offline: when it is missing, sentence counting
falls back to lm-eval's own regex splitter and capital-word counting to a regex tokenizer
(logged once). The strict/loose logic is IFEval's.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import datasets
import langdetect
from lm_eval.tasks.ifeval import instructions, instructions_registry, instructions_util

log = logging.getLogger(__name__)
DATA = Path(__file__).with_name("ifeval_offline.jsonl")
langdetect.DetectorFactory.seed = 0  # langdetect is random unless seeded


def load_docs(**_):
    return datasets.DatasetDict({"test": datasets.Dataset.from_json(str(DATA))})


class _RegexSentences(instructions.NumberOfSentences):
    def check_following(self, value):
        n = len(instructions_util.split_into_sentences(value))
        if self._comparison_relation == "less than":
            return n < self._num_sentences_threshold
        return n >= self._num_sentences_threshold


_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


class _RegexCapitalWords(instructions.CapitalWordFrequencyChecker):
    def check_following(self, value):
        n = sum(1 for w in _WORD.findall(value) if w.isupper())
        if self._comparison_relation == "less than":
            return n < self._frequency
        return n >= self._frequency


def _works(fn) -> bool:
    try:
        fn()
        return True
    except LookupError:
        return False


def _registry() -> dict:
    reg = dict(instructions_registry.INSTRUCTION_DICT)
    if not _works(lambda: instructions_util.count_sentences("One. Two.")):
        log.warning("NLTK punkt data missing (offline): number_sentences uses lm-eval's regex sentence splitter")
        reg["length_constraints:number_sentences"] = _RegexSentences
    if not _works(lambda: instructions_util.nltk.word_tokenize("One TWO")):
        log.warning("NLTK punkt_tab data missing (offline): capital_word_frequency uses a regex tokenizer")
        reg["change_case:capital_word_frequency"] = _RegexCapitalWords
    return reg


INSTRUCTION_DICT = _registry()


def _loose_variants(response: str) -> list[str]:
    r = response.split("\n")
    first, last, both = "\n".join(r[1:]).strip(), "\n".join(r[:-1]).strip(), "\n".join(r[1:-1]).strip()
    base = [response, first, last, both]
    return base + [x.replace("*", "") for x in base]


def check_instructions(response: str, instruction_ids: list[str], kwargs: list, prompt: str = "",
                       loose: bool = False) -> list[bool]:
    """One bool per instruction: does ``response`` follow it? (also used to verify synthesized data)"""
    kwargs = json.loads(kwargs) if isinstance(kwargs, str) else kwargs
    candidates = _loose_variants(response) if loose else [response]
    out = []
    for iid, kw in zip(instruction_ids, kwargs):
        if iid not in INSTRUCTION_DICT:
            raise KeyError(f"unknown IFEval instruction id {iid!r}")
        inst = INSTRUCTION_DICT[iid](iid)
        inst.build_description(**{k: v for k, v in (kw or {}).items() if v})
        args = inst.get_instruction_args()
        if args and "prompt" in args:
            inst.build_description(prompt=prompt)
        out.append(any(c.strip() and inst.check_following(c) for c in candidates))
    return out


def process_results(doc, results):
    response = results[0]
    ids, kws = doc["instruction_id_list"], doc["kwargs"]
    strict = check_instructions(response, ids, kws, doc.get("prompt", ""))
    loose = check_instructions(response, ids, kws, doc.get("prompt", ""), loose=True)
    return {
        "prompt_level_strict_acc": all(strict),
        "inst_level_strict_acc": strict,
        "prompt_level_loose_acc": all(loose),
        "inst_level_loose_acc": loose,
    }


def agg_inst_level_acc(items):
    flat = [x for sub in items for x in sub]
    return sum(flat) / len(flat) if flat else float("nan")
