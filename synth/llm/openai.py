"""Backend for any OpenAI-compatible server (vLLM serve, llama.cpp server, SGLang, OpenAI).

Plain ``urllib`` against ``{base_url}/chat/completions`` (no client dependency), requests
sent concurrently (``batch_size`` at a time) and retried on connection errors and 5xx.
"""
from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from synth.llm.base import LLMConfig, Messages, Sampling

log = logging.getLogger(__name__)

TIMEOUT_S = 300
RETRIES = 3


class OpenAIBackend:
    def __init__(self, cfg: LLMConfig):
        if not cfg.base_url:
            raise ValueError("backend 'openai' needs LLMConfig.base_url (e.g. http://127.0.0.1:8000/v1)")
        self.cfg = cfg
        self.base = cfg.base_url.rstrip("/")
        self.key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.key}"} if self.key else {})})
        for attempt in range(RETRIES):
            try:
                with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                if exc.code < 500 or attempt == RETRIES - 1:
                    raise RuntimeError(f"{self.base}{path}: HTTP {exc.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == RETRIES - 1:
                    raise RuntimeError(f"{self.base}{path}: cannot reach server ({exc})") from None
            time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def _map(self, fn, items: list) -> list:
        from tqdm.auto import tqdm

        out = [None] * len(items)
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.batch_size)) as pool, \
                tqdm(total=len(items), desc=f"openai[{self.cfg.model}]", unit="req", leave=False) as bar:
            futures = {pool.submit(fn, i, it): i for i, it in enumerate(items)}
            for fut in futures:
                out[futures[fut]] = fut.result()
                bar.update(1)
        return out

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]:
        greedy = sampling.temperature <= 0

        def one(i: int, messages: Messages) -> str:
            body = {"model": self.cfg.model, "messages": list(messages), "max_tokens": sampling.max_new_tokens,
                    "temperature": 0.0 if greedy else sampling.temperature, "top_p": 1.0 if greedy else sampling.top_p}
            if sampling.stop:
                body["stop"] = list(sampling.stop)[:4]  # the OpenAI API allows at most 4
            if not greedy:
                body["seed"] = sampling.seed + i  # identical prompts still sample differently
            if messages and messages[-1]["role"] == "assistant":
                # prefill: vLLM serve's extension of the chat API; other servers may ignore it
                body.update(add_generation_prompt=False, continue_final_message=True)
            data = self._post("/chat/completions", body)
            try:
                text = data["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise RuntimeError(f"{self.base}/chat/completions: unexpected reply {str(data)[:300]}") from None
            from synth.llm.hf import trim_at_stop

            return trim_at_stop(text, sampling.stop).strip()

        return self._map(one, list(prompts))

    def close(self) -> None:
        pass
