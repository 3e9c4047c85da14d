"""The one small protocol every LLM backend implements.

``generate(list of message lists, sampling) -> list of texts`` and, for IFD scoring,
``completion_logprobs(prompts, completions) -> per-completion mean token log-probs``
(both conditional on the prompt and, when ``prompts`` is None, unconditional).
A message list that ends with an assistant turn is a *prefill*: the backend continues
that turn and returns only the continuation (tiny teachers follow a format far more
often when its first words are given). Backends know nothing of the loop's stages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

Messages = list[dict]  # [{"role": "user", "content": "..."}, ...]


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.7     # 0 = greedy
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class LLMConfig:
    backend: str = "hf"          # hf | ct2 | vllm | openai | fake
    model: str = "embedded:smollm2-135m-instruct"   # HF id, local path or embedded:<name>
    device: str = "cpu"          # cpu | cuda | auto
    dtype: str = "float32"       # fp32 on CPU (bf16 is ~250x slower on this CPU)
    batch_size: int = 16
    max_model_len: int = 2048    # prompt + completion tokens
    base_url: str = ""           # openai backend: http://host:port/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai backend: env var holding the key
    gpu_memory_utilization: float = 0.85  # vllm backend
    threads: int = 0             # hf/ct2 backends: CPU threads (0 = library default); 1 is far faster on a busy CPU
    quantization: str = "int8"   # ct2 backend: CTranslate2 weights, int8 (CPU default) | int8_float32 | int16 | float32


@runtime_checkable
class LLM(Protocol):
    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]: ...

    def completion_logprobs(self, prompts: Sequence[Messages] | None,
                            completions: Sequence[str]) -> list[float]: ...

    def close(self) -> None: ...
