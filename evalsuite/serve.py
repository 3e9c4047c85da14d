"""An OpenAI-compatible HTTP server over the compiled engine (``evalsuite.engine``), for loopback use.

    python -m evalsuite.serve --model embedded:smollm2-135m-instruct [--adapter DIR]
        [--quantization int8] [--host 127.0.0.1] [--port 8000] [--max-batch 64] [--batch-wait-ms 20]

CTranslate2 ships no server, and llama.cpp's and vLLM's cannot be installed on a CPU machine
from PyPI wheels (README "Generation engine"); this one lets several processes share one loaded
teacher (``teacher.backend=openai teacher.base_url=http://127.0.0.1:8000/v1``) and is the real
server the openai backend is tested against. Endpoints: ``GET /v1/models``, ``POST
/v1/completions`` (``prompt``: a string or a list of strings) and ``POST /v1/chat/completions``
(the model's chat template; vLLM's ``add_generation_prompt`` / ``continue_final_message``
extensions honoured), with ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop`` and
``usage``, and ``GET /stats`` (engine calls made, requests served). Requests that arrive together are decoded together: a batcher thread collects what
is queued (waiting up to ``--batch-wait-ms`` after the first), and each set of requests with the
same sampling settings is one :meth:`Engine.generate` call (continuous batching at request
granularity). Greedy requests and sampled ones without a ``seed`` batch freely; a sampled request
with a ``seed`` is decoded alone, because the engine seeds a whole call, not a row (so its
output does not depend on what arrived with it). Binds to loopback by default; no authentication.
"""
from __future__ import annotations

import argparse
import json
import logging
import queue
import random
import sys
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A malformed request: answered with HTTP 400 and this message."""


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise RequestError(f"'{key}' must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def sampling_of(body: dict, max_tokens_cap: int) -> dict:
    """Engine.generate keyword arguments from an OpenAI request body (validated)."""
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise RequestError("'stop' must be a string or a list of strings")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(f"'seed' must be an integer, got {seed!r}")
    return {"max_new_tokens": int(_number(body, "max_tokens", 16, 1, max_tokens_cap)),
            "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
            "top_p": _number(body, "top_p", 1.0, 1e-6, 1.0), "seed": seed, "stop": tuple(stop)}


class Batcher:
    """Queues (prompt ids, sampling) jobs; one thread decodes what arrived together in one call."""

    def __init__(self, engine, max_batch: int = 64, wait_s: float = 0.02):
        self.engine, self.max_batch, self.wait_s = engine, max_batch, wait_s
        self.jobs: "queue.Queue[tuple[list[int], dict, Future] | None]" = queue.Queue()
        self.calls = self.requests = 0  # engine calls and the requests they served (GET /stats)
        self.thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self.thread.start()

    def submit(self, ids: list[int], sampling: dict) -> Future:
        fut: Future = Future()
        self.jobs.put((ids, sampling, fut))
        return fut

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch, deadline = [first], time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)  # stop after this batch
                    break
                batch.append(job)
            groups: dict[str, list] = {}
            for k, job in enumerate(batch):  # one engine call per sampling setting; a seeded sample alone
                alone = job[1]["temperature"] > 0 and job[1]["seed"] is not None
                groups.setdefault(json.dumps(job[1], sort_keys=True) + (f"#{k}" if alone else ""), []).append(job)
            for jobs in groups.values():
                sampling = dict(jobs[0][1])
                if sampling["seed"] is None:  # no seed asked for: any (CT2 seeds a whole call, not a row)
                    sampling["seed"] = random.randrange(1 << 31)
                try:
                    texts = self.engine.generate([j[0] for j in jobs], batch_size=self.max_batch, desc="serve",
                                                 **sampling)
                    self.calls, self.requests = self.calls + 1, self.requests + len(jobs)
                    for j, t in zip(jobs, texts):
                        j[2].set_result(t)
                except Exception as exc:  # the request fails, the server goes on
                    for j in jobs:
                        j[2].set_exception(exc)


def make_server(engine, model_name: str, host: str = "127.0.0.1", port: int = 0, max_batch: int = 64,
                wait_s: float = 0.02, max_model_len: int = 2048) -> ThreadingHTTPServer:
    tok = engine.tok
    batcher = Batcher(engine, max_batch, wait_s)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def complete(prompts: list[str], body: dict) -> tuple[list[str], dict]:
        sampling = sampling_of(body, max_model_len)
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        room = max_model_len - sampling["max_new_tokens"]
        if any(len(x) > room for x in ids):
            raise RequestError(f"prompt + max_tokens exceeds the context of {max_model_len} tokens")
        texts = [f.result() for f in [batcher.submit(x, sampling) for x in ids]]
        usage = {"prompt_tokens": sum(map(len, ids)), "completion_tokens": sum(count(t) for t in texts)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return texts, usage

    def chat_prompt(body: dict) -> str:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs):
            raise RequestError("'messages' must be a non-empty list of {role, content} strings")
        cont = bool(body.get("continue_final_message", False))
        if cont and msgs[-1]["role"] != "assistant":
            raise RequestError("continue_final_message needs a final assistant message")
        return tok.apply_chat_template(msgs, tokenize=False, continue_final_message=cont,
                                       add_generation_prompt=bool(body.get("add_generation_prompt", not cont)))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # requests at debug level, not on stderr
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, code: int, obj: Any) -> None:
            data = json.dumps(obj).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model",
                                                                    "owned_by": "synthloop"}]})
            if self.path.rstrip("/") == "/stats":  # how well requests were batched
                return self._send(200, {"engine_calls": batcher.calls, "requests": batcher.requests})
            self._send(404, {"error": {"message": f"no such path {self.path}"}})

        def do_POST(self):
            try:
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except json.JSONDecodeError as exc:
                    raise RequestError(f"body is not JSON ({exc})") from None
                if not isinstance(body, dict):
                    raise RequestError("body must be a JSON object")
                if self.path == "/v1/completions":
                    prompt = body.get("prompt")
                    prompts = [prompt] if isinstance(prompt, str) else prompt
                    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
                        raise RequestError("'prompt' must be a string or a non-empty list of strings")
                    texts, usage = complete(prompts, body)
                    choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
                    return self._send(200, {"object": "text_completion", "model": model_name, "choices": choices,
                                            "usage": usage})
                if self.path == "/v1/chat/completions":
                    texts, usage = complete([chat_prompt(body)], body)
                    return self._send(200, {"object": "chat.completion", "model": model_name, "usage": usage,
                                            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                                "role": "assistant", "content": texts[0]}}]})
                self._send(404, {"error": {"message": f"no such path {self.path}"}})
            except RequestError as exc:
                self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            except Exception as exc:  # the engine failed: 500, and the server keeps serving
                log.exception("request failed")
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    srv.batcher = batcher
    return srv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evalsuite.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct", help="HF folder, hub id or embedded: name")
    ap.add_argument("--adapter", help="a LoRA adapter folder, merged in before conversion")
    ap.add_argument("--quantization", default="int8")
    ap.add_argument("--replicas", type=int, default=0, help="engines side by side (0: one per core)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--batch-wait-ms", type=float, default=20.0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--served-name", help="the model id clients send and /v1/models lists (default: --model)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from evalsuite.engine import Engine
    from evalsuite.models import resolve_model

    try:
        engine = Engine(resolve_model(args.model), adapter=args.adapter, quantization=args.quantization,
                        replicas=args.replicas)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    srv = make_server(engine, args.served_name or args.model, args.host, args.port, args.max_batch,
                      args.batch_wait_ms / 1000, args.max_model_len)
    host, port = srv.server_address[:2]
    print(f"serving {args.served_name or args.model} on http://{host}:{port}/v1", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.batcher.close()
        srv.server_close()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
