"""vLLM backend for GPUs (imported only when chosen; vLLM is not a base dependency).

Uses vLLM's offline ``LLM`` engine: ``LLM.chat`` for generation (the model's chat
template, continuous batching, vLLM's own progress bar with token rates). Run it in a
subprocess per stage so the GPU memory is freed afterwards (DESIGN.md).
"""
from __future__ import annotations

from typing import Sequence

from synth.llm.base import LLMConfig, Messages, Sampling


class VLLMBackend:
    def __init__(self, cfg: LLMConfig):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise ImportError("backend 'vllm' needs the vllm package: pip install 'synthloop[vllm]'") from exc
        from evalsuite.models import resolve_model

        self.cfg = cfg
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._SamplingParams = SamplingParams
        self.engine = LLM(model=resolve_model(cfg.model), dtype=cfg.dtype if cfg.dtype != "float32" else "auto",
                          max_model_len=cfg.max_model_len, gpu_memory_utilization=cfg.gpu_memory_utilization,
                          seed=0)

    def _params(self, sampling: Sampling, i: int, **extra):
        greedy = sampling.temperature <= 0
        return self._SamplingParams(
            max_tokens=sampling.max_new_tokens, temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p, stop=list(sampling.stop) or None,
            # one seed per request: identical prompts in one call must still sample differently
            seed=None if greedy else sampling.seed + i, **extra)

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]:
        if not prompts:
            return []
        params = [self._params(sampling, i) for i in range(len(prompts))]
        texts = [""] * len(prompts)
        # LLM.chat takes one prefill mode per call: plain prompts and prefilled ones go separately
        for prefill in (False, True):
            idx = [i for i, p in enumerate(prompts) if bool(p and p[-1]["role"] == "assistant") == prefill]
            if not idx:
                continue
            outs = self.engine.chat([list(prompts[i]) for i in idx], sampling_params=[params[i] for i in idx],
                                    use_tqdm=True, add_generation_prompt=not prefill,
                                    continue_final_message=prefill)
            for i, o in zip(idx, outs):
                texts[i] = o.outputs[0].text.strip()
                self.usage["prompt_tokens"] += len(o.prompt_token_ids or [])
                self.usage["completion_tokens"] += len(o.outputs[0].token_ids)
        self.usage["requests"] += len(prompts)
        return texts

    def close(self) -> None:
        self.engine = None
