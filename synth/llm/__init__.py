"""LLM backends, named in a plain dict and imported only when chosen.

``load_llm(LLMConfig(backend="hf", model=...))`` returns an object implementing the
:class:`synth.llm.base.LLM` protocol. A wrong backend name fails with a did-you-mean
message (after lm-eval's ``lm_eval/models/__init__.py``); no plugin framework.
"""
from __future__ import annotations

import difflib
import importlib

from synth.llm.base import LLM, LLMConfig, Messages, Sampling

BACKENDS = {
    "hf": "synth.llm.hf:HFBackend",
    "ct2": "synth.llm.ct2:CT2Backend",
    "vllm": "synth.llm.vllm:VLLMBackend",
    "openai": "synth.llm.openai:OpenAIBackend",
    "fake": "synth.llm.fake:FakeBackend",
}

__all__ = ["BACKENDS", "LLM", "LLMConfig", "Messages", "Sampling", "get_backend", "load_llm"]


def get_backend(name: str) -> type:
    """The backend class for ``name``; imports its module only now (vLLM is heavy)."""
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, list(BACKENDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown LLM backend {name!r} (config key 'backend').{hint} "
                         f"Known: {', '.join(sorted(BACKENDS))}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def load_llm(cfg: LLMConfig) -> LLM:
    return get_backend(cfg.backend)(cfg)
