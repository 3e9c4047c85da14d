"""IFD, the instruction-following difficulty of a record (Superfiltering; Li et al. 2024).

IFD = PPL(answer | instruction) / PPL(answer), the first exchange's answer scored by a small
causal LM (here the student) with and without the user turn before it. Below 1 the instruction
helps the model produce the answer; at or above 1 it does not (an answer unrelated to its
instruction, or one the model would write anyway), and Superfiltering drops the record.
Both passes use the chat template: the conditioned one after the user turn and the assistant
header, the unconditioned one after the assistant header alone.
"""
from __future__ import annotations

import math


class IFDScorer:
    def __init__(self, model: str, max_prompt_tokens: int = 512, max_answer_tokens: int = 512):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from evalsuite.models import resolve_model

        path = resolve_model(model)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.max_prompt, self.max_answer = max_prompt_tokens, max_answer_tokens

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def score(self, rec: dict) -> float:
        """IFD of the record's first exchange (inf when it has no user or assistant turn)."""
        msgs = rec["messages"]
        user = next((m for m in msgs if m["role"] == "user"), None)
        answer = next((m for m in msgs if m["role"] == "assistant"), None)
        if user is None or answer is None:
            return math.inf
        turn = [{"role": "user", "content": user["content"]}]
        with_prompt = self.tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        header = with_prompt[len(self.tok.apply_chat_template(turn, tokenize=False)):]
        ans = self._ids(answer["content"])[: self.max_answer]
        if not ans:
            return math.inf
        cond = self._ids(with_prompt)[-self.max_prompt:]
        nll_cond, nll_alone = self._nll([cond, self._ids(header)], ans)
        return math.exp(nll_cond - nll_alone)

    def _nll(self, prefixes: list[list[int]], ans: list[int]) -> list[float]:
        """Mean negative log-likelihood of ``ans`` after each prefix, one right-padded batch."""
        torch = self.torch
        seqs = [p + ans for p in prefixes]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        # the answer's tokens are predicted at positions len(p)-1 .. len(p)+len(ans)-2
        return [-float(logp[i, len(p) - 1: len(p) - 1 + len(ans)].mean()) for i, p in enumerate(prefixes)]
