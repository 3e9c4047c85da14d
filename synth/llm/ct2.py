"""ct2 backend: the teacher on the compiled CPU engine (CTranslate2, via ``evalsuite.engine``).

Serves the same model as ``hf`` (``teacher.model``, resolved the same way), converted once into
the cache at ``LLMConfig.quantization`` (int8 by default: ~3x the tokens/s of transformers
``generate`` at batch 16 on 2 cores, README "Generation engine"). Behaves like ``synth.llm.hf``:
the model's chat template, a final assistant turn continued (prefill), stop strings, greedy at
temperature 0, seeded top-p sampling otherwise, prompts left-truncated to ``max_model_len``.
All prompts of a call go to the engine at once; it decodes ``batch_size`` rows at a time.
"""
from __future__ import annotations

from typing import Sequence

from synth.llm.base import LLMConfig, Messages, Sampling, encode_prompts
from synth.llm.hf import trim_at_stop


class CT2Backend:
    def __init__(self, cfg: LLMConfig):
        from evalsuite.engine import Engine
        from evalsuite.models import resolve_model

        self.cfg = cfg
        self.engine = Engine(resolve_model(cfg.model), quantization=cfg.quantization, device=cfg.device,
                             threads=cfg.threads, replicas=cfg.replicas)
        self.tok = self.engine.tok
        if self.tok.chat_template is None:
            raise ValueError(f"model {cfg.model!r} has no chat template; the ct2 backend needs a chat model")
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]:
        if not prompts:
            return []
        encoded = encode_prompts(self.tok, prompts, self.cfg.max_model_len - sampling.max_new_tokens)
        texts = self.engine.generate(
            encoded, max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
            top_p=sampling.top_p, seed=sampling.seed, stop=sampling.stop, batch_size=self.cfg.batch_size,
            desc=f"generate[ct2 {self.cfg.quantization} {self.cfg.model.split('/')[-1]}]")
        out = [trim_at_stop(t, sampling.stop).strip() for t in texts]
        self.usage["requests"] += len(encoded)
        self.usage["prompt_tokens"] += sum(len(e) for e in encoded)
        self.usage["completion_tokens"] += sum(len(self._encode(t)) for t in out)
        return out

    def close(self) -> None:
        self.engine.close()
