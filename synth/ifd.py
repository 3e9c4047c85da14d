"""IFD, the instruction-following difficulty of a record (Superfiltering; Li et al. 2024).

IFD = PPL(answer | instruction) / PPL(answer), the first exchange's answer scored by a small
causal LM (by default the student) with and without the user turn before it. Below 1 the
instruction helps the model produce the answer; at or above 1 it does not (an answer unrelated to
its instruction, or one the model would write anyway), and Superfiltering drops the record.
Both passes use the chat template: the conditioned one after the user turn and the assistant
header, the unconditioned one after the assistant header alone.

Scoring is batched: the conditioned and the unconditioned sequences of many records go through
the model together, right-padded, in batches of about ``batch_tokens`` tokens (sorted by length so
little is padding). Scores are cached in ``<cache_dir>/ifd/<scorer>.jsonl`` keyed by the content
hash of the scored exchange and the token limits, so a later round (or run) on the same pool
scores only records it has not seen.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from evalsuite.records import content_hash, iter_jsonl

CACHE_VERSION = 1


def exchange(rec: dict) -> tuple[str, str] | None:
    """(first user turn, the assistant answer after it), or None when the record lacks either."""
    msgs = rec["messages"]
    u = next((i for i, m in enumerate(msgs) if m["role"] == "user"), None)
    if u is None:
        return None
    a = next((m for m in msgs[u + 1:] if m["role"] == "assistant"), None)
    return None if a is None else (msgs[u]["content"], a["content"])


class IFDScorer:
    """IFD of records by ``model`` on ``engine``: "ct2" (evalsuite.engine: CTranslate2's
    ``score_batch`` at ``quantization``, on every replica) or "hf" (transformers, fp32)."""

    def __init__(self, model: str, max_prompt_tokens: int = 512, max_answer_tokens: int = 512,
                 batch_tokens: int = 8192, cache_dir: str | Path | None = None, engine: str = "ct2",
                 quantization: str = "int8"):
        from evalsuite.models import resolve_model

        path = resolve_model(model)
        self.engine, self.model = None, None
        if engine == "ct2":
            from evalsuite.engine import Engine

            self.engine = Engine(path, quantization=quantization, cache_dir=cache_dir)
            self.tok = self.engine.tok
            scorer = f"{model}|ct2-{quantization}"
        elif engine == "hf":
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.torch = torch
            self.tok = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            scorer = str(model)   # the fp32 reference keeps the cache file it always had
        else:
            raise ValueError(f"IFD engine must be 'ct2' or 'hf', got {engine!r}")
        self.max_prompt, self.max_answer, self.batch_tokens = max_prompt_tokens, max_answer_tokens, batch_tokens
        self.name = str(model)
        self.backend = "hf-float32" if engine == "hf" else f"ct2-{quantization}"
        self.scores: dict[str, float] = {}      # cache key -> IFD
        self.stats = {"scored": 0, "cached": 0, "forward_batches": 0, "score_s": 0.0}
        self.cache_path = None
        if cache_dir is not None:
            slug = re.sub(r"[^\w.-]+", "_", self.name).strip("_")[-80:] or "model"
            suffix = "" if engine == "hf" else f"-{self.backend}"
            self.cache_path = Path(cache_dir) / "ifd" / f"{slug}{suffix}-{content_hash(scorer)[:8]}.jsonl"
            if self.cache_path.exists():
                self.scores = {row["key"]: float(row["ifd"]) for row in iter_jsonl(self.cache_path)}
        self.on_disk = set(self.scores)          # scores an earlier run computed
        self.hits: set[str] = set()              # ... and read by this one

    def cached(self, key: str) -> float | None:
        """The score of ``key`` if known (counted as a cache hit when an earlier run computed it)."""
        if key in self.on_disk:
            self.hits.add(key)
            self.stats["cached"] = len(self.hits)
        return self.scores.get(key)

    def key(self, rec: dict) -> str:
        ex = exchange(rec)
        return content_hash(CACHE_VERSION, self.max_prompt, self.max_answer, *(ex or ("", "")))

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _prefixes(self, user: str) -> tuple[list[int], list[int]]:
        turn = [{"role": "user", "content": user}]
        with_prompt = self.tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        header = self._ids(with_prompt[len(self.tok.apply_chat_template(turn, tokenize=False)):])
        if not header:   # a template without an assistant header: the answer alone starts after BOS/EOS
            start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
            if start is None:
                raise ValueError(f"IFD scorer {self.name}: its chat template has no assistant header and "
                                 "the tokenizer no BOS/EOS token to condition the answer alone on")
            header = [start]
        return self._ids(with_prompt)[-self.max_prompt:], header

    def score_many(self, recs: list[dict]) -> list[float]:
        """IFD of each record's first exchange (inf without one); unseen ones scored in batches and cached."""
        keys = [self.key(r) for r in recs]
        todo: dict[str, dict] = {}
        for k, r in zip(keys, recs):
            if self.cached(k) is None and k not in todo:
                todo[k] = r
        if todo:
            t0 = time.time()
            jobs = []      # (key, conditioned prefix, unconditioned prefix, answer ids)
            fresh: dict[str, float] = {}
            for k, r in todo.items():
                ex = exchange(r)
                ans = self._ids(ex[1])[: self.max_answer] if ex else []
                if not ans:
                    fresh[k] = math.inf
                    continue
                cond, alone = self._prefixes(ex[0])
                jobs.append((k, cond, alone, ans))
            seqs = [((i, kind), p, j[3]) for i, j in enumerate(jobs) for kind, p in ((0, j[1]), (1, j[2]))]
            nll = self._batched_nll(seqs)
            for i, (k, *_rest) in enumerate(jobs):
                fresh[k] = math.exp(nll[(i, 0)] - nll[(i, 1)])
            self.scores.update(fresh)
            self.stats["scored"] += len(fresh)
            self.stats["score_s"] = round(self.stats["score_s"] + time.time() - t0, 3)
            if self.cache_path is not None:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with self.cache_path.open("a", encoding="utf-8") as f:   # append: a killed run keeps its scores
                    for k, v in fresh.items():
                        f.write(json.dumps({"key": k, "ifd": v if math.isfinite(v) else "inf"}) + "\n")
        return [self.scores[k] for k in keys]

    def score(self, rec: dict) -> float:
        return self.score_many([rec])[0]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def _batched_nll(self, seqs: list[tuple[tuple, list[int], list[int]]]) -> dict[tuple, float]:
        """{sequence key: mean NLL of its answer after its prefix}; sequences sorted
        by length and cut into right-padded batches of at most ``batch_tokens`` padded tokens."""
        if self.engine is not None:
            before = self.engine.stats.get("score_batches", 0)
            lps = self.engine.token_logprobs([p + a for _, p, a in seqs], self.batch_tokens, desc="ifd")
            self.stats["forward_batches"] += self.engine.stats["score_batches"] - before
            # log_probs[t] is token t+1's: the answer's are at len(p)-1 .. len(p)+len(a)-2
            return {k: -sum(lp[len(p) - 1: len(p) - 1 + len(a)]) / len(a) for (k, p, a), lp in zip(seqs, lps)}
        from evalsuite.engine import budget_batches

        out: dict[tuple[int, int], float] = {}
        for group in budget_batches([len(p) + len(a) for _, p, a in seqs], self.batch_tokens):
            batch = [seqs[i] for i in group]
            for (k, _, _), v in zip(batch, self._nll([(p, a) for _, p, a in batch])):
                out[k] = v
        return out

    def _nll(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        """Mean negative log-likelihood of each answer after its prefix, one right-padded batch."""
        torch = self.torch
        seqs = [p + a for p, a in pairs]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        self.stats["forward_batches"] += 1
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        # the answer's tokens are predicted at positions len(p)-1 .. len(p)+len(a)-2
        return [-float(logp[i, len(p) - 1: len(p) - 1 + len(a)].mean()) for i, (p, a) in enumerate(pairs)]

