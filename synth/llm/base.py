"""The one small protocol every LLM backend implements.

``generate(list of message lists, sampling) -> list of texts`` and ``close()``; ``usage`` counts
requests and prompt/completion tokens so far (the stages report it as teacher cost).
A message list that ends with an assistant turn is a *prefill*: the backend continues
that turn and returns only the continuation (tiny teachers follow a format far more
often when its first words are given). Backends know nothing of the loop's stages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence, runtime_checkable

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
    backend: Literal["hf", "ct2", "vllm", "openai", "fake"] = "hf"   # ct2: the compiled CPU engine
    model: str = "embedded:smollm2-135m-instruct"   # HF id, local path or embedded:<name>
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"  # fp32 on CPU: bf16 is far slower there
    batch_size: int = 16
    max_model_len: int = 2048    # prompt + completion tokens
    base_url: str = ""           # openai backend: http://host:port/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai backend: env var holding the key
    # openai backend, prompts that end in an assistant prefill: completions = render the chat template
    # locally (tokenizer below) and continue it on /completions; fold = ask for the opening in the
    # user turn and strip it from the reply (any server); continue = vLLM serve's continue_final_message;
    # auto = completions when the tokenizer loads, else fold
    prefill: Literal["auto", "completions", "fold", "continue"] = "auto"
    tokenizer: str = ""          # openai backend: local tokenizer (HF id/path) of the served model; "" = model
    timeout_s: float = 300.0     # openai backend: per-request timeout (retried 3x with backoff)
    gpu_memory_utilization: float = 0.85  # vllm backend
    threads: int = 0             # hf/ct2 backends: CPU threads (0 = library default); 1 is far faster on a busy CPU
    replicas: int = 0            # ct2 backend: engines decoding side by side (0 = one single-threaded per core)
    # ct2 backend: CTranslate2 weights (int8 is the CPU default)
    quantization: Literal["int8", "int8_float32", "int16", "float32"] = "int8"


def render_prompt(tok, messages: Messages) -> str:
    """The chat-template text a model continues: a generation prompt after the last turn, or —
    when the last turn is the assistant's (a prefill) — that turn left open."""
    if messages and messages[-1]["role"] == "assistant":
        return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=False,
                                       continue_final_message=True)
    return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def encode_prompts(tok, prompts: Sequence[Messages], max_prompt: int) -> list[list[int]]:
    """Token ids of each rendered prompt; one longer than ``max_prompt`` keeps its tail (the question
    and the generation prompt are at the end), with a logged count."""
    import logging

    max_prompt, encoded, truncated = max(8, max_prompt), [], 0
    for p in prompts:
        ids = tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt:
            ids, truncated = ids[-max_prompt:], truncated + 1
        encoded.append(ids)
    if truncated:
        logging.getLogger(__name__).warning(
            "%d prompt(s) longer than max_model_len - max_new_tokens = %d tokens were left-truncated",
            truncated, max_prompt)
    return encoded


@runtime_checkable
class LLM(Protocol):
    usage: dict   # {"requests", "prompt_tokens", "completion_tokens"} since the backend was made

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]: ...

    def close(self) -> None: ...
