"""Backend for any OpenAI-compatible server (vLLM serve, llama.cpp server, SGLang, OpenAI).

Plain ``urllib`` (no client dependency), requests sent concurrently (``batch_size`` at a time),
retried with exponential backoff on connection errors, timeouts and 5xx. A prompt without a
prefill goes to ``/chat/completions``. A prompt ending in an assistant prefill (the teacher's
``Tags:``-style openers) goes, by ``LLMConfig.prefill``:

* ``completions`` — the chat template is rendered locally (the served model's tokenizer) with the
  final turn left open, and ``/completions`` continues that text: the server need know nothing
  about prefills;
* ``fold`` — the opening is asked for in the user turn ("Begin your reply with: ...") and stripped
  from the reply if the model repeats it: works with any chat server;
* ``continue`` — vLLM serve's ``continue_final_message`` extension;
* ``auto`` — ``completions`` when the tokenizer loads locally, else ``fold``.

``usage`` counts requests and the prompt/completion tokens the server reports, so the stages can
put teacher tokens in their summaries.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from synth.llm.base import LLMConfig, Messages, Sampling, render_prompt

log = logging.getLogger(__name__)

RETRIES = 3
FOLD = "\n\nBegin your reply with exactly: {opening}"


class OpenAIBackend:
    def __init__(self, cfg: LLMConfig):
        if not cfg.base_url:
            raise ValueError("backend 'openai' needs LLMConfig.base_url (e.g. http://127.0.0.1:8000/v1)")
        self.cfg = cfg
        self.base = cfg.base_url.rstrip("/")
        self.key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._lock = threading.Lock()
        self._tok = None
        self.prefill = cfg.prefill
        if self.prefill in ("auto", "completions"):
            self._tok = self._load_tokenizer(required=self.prefill == "completions")
            self.prefill = "completions" if self._tok is not None else "fold"

    def _load_tokenizer(self, required: bool):
        try:
            from transformers import AutoTokenizer

            from evalsuite.models import resolve_model

            tok = AutoTokenizer.from_pretrained(resolve_model(self.cfg.tokenizer or self.cfg.model))
            if tok.chat_template is None:
                raise ValueError("it has no chat template")
            return tok
        except Exception as exc:  # a served model need not exist locally
            if required:
                raise ValueError(f"teacher.prefill=completions needs the served model's tokenizer locally "
                                 f"(teacher.tokenizer): {exc}") from None
            log.info("openai backend: no local chat template for %r (%s); prefills folded into the user turn",
                     self.cfg.model, exc)
            return None

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.key}"} if self.key else {})})
        for attempt in range(RETRIES):
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    data = json.loads(resp.read().decode("utf-8"))
                usage = data.get("usage") or {} if isinstance(data, dict) else {}
                with self._lock:
                    self.usage["requests"] += 1
                    for k in ("prompt_tokens", "completion_tokens"):
                        self.usage[k] += int(usage.get(k) or 0)
                return data
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
        from synth.llm.hf import trim_at_stop

        greedy = sampling.temperature <= 0

        def one(i: int, messages: Messages) -> str:
            body = {"model": self.cfg.model, "max_tokens": sampling.max_new_tokens,
                    "temperature": 0.0 if greedy else sampling.temperature, "top_p": 1.0 if greedy else sampling.top_p}
            if sampling.stop:
                body["stop"] = list(sampling.stop)[:4]  # the OpenAI API allows at most 4
            if not greedy:
                body["seed"] = sampling.seed + i  # identical prompts still sample differently
            opening = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else None
            if opening is not None and self.prefill == "completions":
                data = self._post("/completions", {**body, "prompt": render_prompt(self._tok, messages)})
                text = _field(data, "text", self.base)
            elif opening is not None and self.prefill == "fold":
                folded = [dict(m) for m in messages[:-1]]
                folded[-1]["content"] += FOLD.format(opening=opening.strip())
                text = _field(self._post("/chat/completions", {**body, "messages": folded}), "message", self.base)
                head = text.lstrip()
                if head.startswith(opening.strip()):   # the model said the opening itself: return what follows
                    text = head[len(opening.strip()):]
            else:
                if opening is not None:   # continue: vLLM serve's extension of the chat API
                    body.update(add_generation_prompt=False, continue_final_message=True)
                text = _field(self._post("/chat/completions", {**body, "messages": list(messages)}), "message",
                              self.base)
            return trim_at_stop(text, sampling.stop).strip()

        return self._map(one, list(prompts))

    def close(self) -> None:
        pass


def _field(data: dict, kind: str, base: str) -> str:
    try:
        choice = data["choices"][0]
        return (choice["message"]["content"] if kind == "message" else choice["text"]) or ""
    except (KeyError, IndexError, TypeError):
        raise RuntimeError(f"{base}: unexpected reply {str(data)[:300]}") from None
