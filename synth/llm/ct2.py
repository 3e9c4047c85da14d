"""ct2 backend: the teacher on the compiled CPU engine (CTranslate2, via ``evalsuite.engine``).

Serves the same model as ``hf`` (``teacher.model``, resolved the same way), converted once into
the cache at ``LLMConfig.quantization`` (int8 by default: ~3x the tokens/s of transformers
``generate`` at batch 16 on 2 cores, README "Generation engine"). Behaves like ``synth.llm.hf``:
the model's chat template, a final assistant turn continued (prefill), stop strings, greedy at
temperature 0, seeded top-p sampling otherwise, prompts left-truncated to ``max_model_len``.
All prompts of a call go to the engine at once; it decodes ``batch_size`` rows at a time.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

from synth.llm.base import LLMConfig, Messages, Sampling
from synth.llm.hf import trim_at_stop

log = logging.getLogger(__name__)


class CT2Backend:
    def __init__(self, cfg: LLMConfig):
        from evalsuite.engine import Engine
        from evalsuite.models import resolve_model

        self.cfg = cfg
        self.engine = Engine(resolve_model(cfg.model), quantization=cfg.quantization, device=cfg.device,
                             threads=cfg.threads)
        self.tok = self.engine.tok
        if self.tok.chat_template is None:
            raise ValueError(f"model {cfg.model!r} has no chat template; the ct2 backend needs a chat model")
        self._assistant_header = self._find_assistant_header()

    # the same rendering as synth.llm.hf, so both backends see identical prompts
    def _render(self, messages: Messages) -> str:
        if messages and messages[-1]["role"] == "assistant":  # prefill: continue the final turn
            return self.tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=False,
                                                continue_final_message=True)
        return self.tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def _find_assistant_header(self) -> str:
        msgs = [{"role": "user", "content": "x"}]
        with_gen = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        without = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
        header = with_gen[len(without):] if with_gen.startswith(without) else ""
        return header or (self.tok.bos_token or self.tok.eos_token or "")

    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]:
        if not prompts:
            return []
        max_prompt = max(8, self.cfg.max_model_len - sampling.max_new_tokens)
        encoded, truncated = [], 0
        for p in prompts:
            ids = self._encode(self._render(p))
            if len(ids) > max_prompt:  # keep the tail: the question and generation prompt are at the end
                ids, truncated = ids[-max_prompt:], truncated + 1
            encoded.append(ids)
        if truncated:
            log.warning("%d prompt(s) longer than max_model_len - max_new_tokens = %d tokens were left-truncated",
                        truncated, max_prompt)
        texts = self.engine.generate(
            encoded, max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
            top_p=sampling.top_p, seed=sampling.seed, stop=sampling.stop, batch_size=self.cfg.batch_size,
            desc=f"generate[ct2 {self.cfg.quantization} {self.cfg.model.split('/')[-1]}]")
        return [trim_at_stop(t, sampling.stop).strip() for t in texts]

    def completion_logprobs(self, prompts: Sequence[Messages] | None,
                            completions: Sequence[str]) -> list[float]:
        """Mean log-prob per completion token after the chat-rendered prompt (or, with
        ``prompts=None``, after the bare assistant header: IFD's unconditional term); NaN if empty."""
        if prompts is not None and len(prompts) != len(completions):
            raise ValueError(f"completion_logprobs: {len(prompts)} prompts but {len(completions)} completions")
        max_len = self.cfg.max_model_len
        seqs, spans = [], []
        for k, comp in enumerate(completions):
            ctx = self._render(prompts[k]) if prompts is not None else self._assistant_header
            c_ids = self._encode(comp)[: max_len - 1]
            p_ids = self._encode(ctx)[-(max_len - len(c_ids)):]
            seqs.append(p_ids + c_ids)
            spans.append(len(c_ids))
        keep = [i for i in range(len(seqs)) if spans[i] > 0]
        scored = self.engine.token_logprobs([seqs[i] for i in keep], batch_size=self.cfg.batch_size)
        result = [math.nan] * len(seqs)
        for i, lps in zip(keep, scored):  # lps[t] scores token t+1: the completion is the last spans[i]
            result[i] = sum(lps[-spans[i]:]) / spans[i]
        return result

    def close(self) -> None:
        self.engine.close()
