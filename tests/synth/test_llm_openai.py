"""openai backend against a tiny OpenAI-compatible server on 127.0.0.1 (started and stopped here)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from synth.llm import LLMConfig, Sampling, load_llm


class Handler(BaseHTTPRequestHandler):
    bodies = []
    failed = False

    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.bodies.append((self.path, body, self.headers.get("Authorization")))
        usage = {"prompt_tokens": 3, "completion_tokens": 2}
        if self.path == "/v1/chat/completions":
            text = body["messages"][-1]["content"]
            if text == "bad":
                return self._send(400, {"error": "bad request"})
            if text == "flaky" and not Handler.failed:
                Handler.failed = True
                return self._send(503, {"error": "busy"})
            if "Begin your reply with exactly: Tags:" in text:   # a model that repeats the opening
                return self._send(200, {"choices": [{"message": {"content": "Tags: arithmetic, units"}}],
                                        "usage": usage})
            return self._send(200, {"choices": [{"message": {"role": "assistant",
                                                             "content": f"echo: {text} STOP tail"}}],
                                    "usage": usage})
        if self.path == "/v1/completions":
            return self._send(200, {"choices": [{"text": " arithmetic\n\nmore"}], "usage": usage})
        self._send(404, {"error": "no such path"})


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.timeout = 5
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    Handler.bodies, Handler.failed = [], False
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


def test_generate_keeps_order_trims_stop_and_sends_sampling(server, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-test")
    llm = load_llm(LLMConfig(backend="openai", model="served-model", base_url=server, api_key_env="TEST_KEY",
                             batch_size=4))
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
    out = llm.generate(prompts, Sampling(max_new_tokens=7, temperature=0.5, stop=["STOP"], seed=10))
    assert out == [f"echo: q{i}" for i in range(6)]
    bodies = [b for p, b, _ in Handler.bodies]
    assert {b["max_tokens"] for b in bodies} == {7} and {b["model"] for b in bodies} == {"served-model"}
    assert sorted(b["seed"] for b in bodies) == list(range(10, 16))  # one seed per request
    assert {a for _, _, a in Handler.bodies} == {"Bearer sk-test"}


def test_http_error_is_reported_with_status(server):
    llm = load_llm(LLMConfig(backend="openai", model="m", base_url=server))
    with pytest.raises(RuntimeError, match="HTTP 400"):
        llm.generate([[{"role": "user", "content": "bad"}]], Sampling(temperature=0))


def test_missing_base_url_is_a_clear_error():
    with pytest.raises(ValueError, match="base_url"):
        load_llm(LLMConfig(backend="openai", base_url=""))


PREFILLED = [{"role": "user", "content": "Label the skills of: 3 + 4"}, {"role": "assistant", "content": "Tags:"}]


def test_prefill_through_completions_renders_the_chat_template_locally(server, tiny_model_path):
    from transformers import AutoTokenizer

    from synth.llm.base import render_prompt

    llm = load_llm(LLMConfig(backend="openai", model="served", tokenizer=tiny_model_path, base_url=server,
                             prefill="auto"))
    out = llm.generate([PREFILLED], Sampling(temperature=0, stop=["\n\n"]))
    assert out == ["arithmetic"]
    path, body, _ = Handler.bodies[-1]
    assert path == "/v1/completions" and "messages" not in body
    expected = render_prompt(AutoTokenizer.from_pretrained(tiny_model_path), PREFILLED)
    assert body["prompt"] == expected and expected.endswith("<|im_start|>assistant\nTags:")
    assert llm.usage == {"requests": 1, "prompt_tokens": 3, "completion_tokens": 2}


def test_prefill_folded_for_any_server_and_the_repeated_opening_stripped(server):
    llm = load_llm(LLMConfig(backend="openai", model="served-elsewhere", base_url=server, prefill="auto"))
    assert llm.prefill == "fold"   # no local tokenizer for this name: auto falls back to folding
    assert llm.generate([PREFILLED], Sampling(temperature=0)) == ["arithmetic, units"]
    path, body, _ = Handler.bodies[-1]
    assert path == "/v1/chat/completions" and [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"].endswith("Begin your reply with exactly: Tags:")
    assert "continue_final_message" not in body


def test_prefill_continue_uses_the_vllm_extension(server):
    llm = load_llm(LLMConfig(backend="openai", model="m", base_url=server, prefill="continue"))
    llm.generate([PREFILLED], Sampling(temperature=0))
    _, body, _ = Handler.bodies[-1]
    assert body["continue_final_message"] is True and body["messages"][-1] == PREFILLED[-1]


def test_a_5xx_is_retried_with_backoff(server):
    llm = load_llm(LLMConfig(backend="openai", model="m", base_url=server, prefill="fold"))
    assert llm.generate([[{"role": "user", "content": "flaky"}]], Sampling(temperature=0)) == ["echo: flaky STOP tail"]
    assert Handler.failed and len(Handler.bodies) == 2 and llm.usage["requests"] == 1
