"""The openai backend against a real OpenAI-compatible server process on loopback.

``python -m evalsuite.serve`` serves a (tiny, prompt-dependent) model on the compiled engine in
its own process; the backend must get from it exactly what the in-process ct2 backend says for
the same prompts (fp32 weights: deterministic), through every prefill mode, with the server's
token counts, concurrent requests decoded together, and bad requests answered 400.
"""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from synth.llm import LLMConfig, Sampling, load_llm

PROMPTS = [[{"role": "user", "content": f"Question {k}: why is the sky blue?" + " Explain." * k}] for k in range(6)]
PREFILL = [[{"role": "user", "content": f"Label item {k}."}, {"role": "assistant", "content": "Tags:"}]
           for k in range(3)]
GREEDY = Sampling(max_new_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def server(talkative_model):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "evalsuite.serve", "--model", talkative_model, "--port", "0",
                             "--quantization", "float32", "--replicas", "1", "--batch-wait-ms", "200",
                             "--served-name", "tiny"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()  # "serving tiny on http://127.0.0.1:PORT/v1" once it listens
        assert line.startswith("serving tiny on http://127.0.0.1:"), line
        yield line.split(" on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def local(talkative_model):
    m = load_llm(LLMConfig(backend="ct2", model=talkative_model, quantization="float32", threads=1,
                           replicas=1, max_model_len=512))
    yield m
    m.close()


def _client(base, talkative_model, **kw):
    return load_llm(LLMConfig(backend="openai", model="tiny", base_url=base, tokenizer=talkative_model,
                              batch_size=8, max_model_len=512, **kw))


def test_lists_its_model(server):
    with urllib.request.urlopen(server + "/models", timeout=10) as r:
        assert [m["id"] for m in json.load(r)["data"]] == ["tiny"]


def test_chat_and_prefills_equal_the_in_process_engine(server, local, talkative_model):
    want = local.generate(PROMPTS, GREEDY)
    assert len(set(want)) > 1 and all(want)  # prompt-dependent answers: the comparison means something
    want_prefill = local.generate(PREFILL, GREEDY)
    for prefill in ("completions", "continue"):  # the template rendered client-side / by the server
        client = _client(server, talkative_model, prefill=prefill)
        assert client.generate(PROMPTS, GREEDY) == want
        assert client.generate(PREFILL, GREEDY) == want_prefill
        # every request counted with the server's own token figures
        assert client.usage["requests"] == len(PROMPTS) + len(PREFILL)
        assert client.usage["prompt_tokens"] > client.usage["completion_tokens"] > 0
    folded = _client(server, talkative_model, prefill="fold").generate(PREFILL, GREEDY)
    assert len(folded) == len(PREFILL) and all(isinstance(t, str) for t in folded)


def _stats(server):
    with urllib.request.urlopen(server.rsplit("/v1", 1)[0] + "/stats", timeout=10) as r:
        return json.load(r)


def test_concurrent_requests_are_decoded_together(server, talkative_model):
    body = {"model": "tiny", "prompt": [f"item {k}" for k in range(5)], "max_tokens": 4, "temperature": 0}
    req = urllib.request.Request(server + "/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    before = _stats(server)
    with urllib.request.urlopen(req, timeout=60) as r:
        out = json.load(r)
    assert len(out["choices"]) == 5 and out["usage"]["completion_tokens"] > 0
    mid = _stats(server)
    assert (mid["requests"] - before["requests"], mid["engine_calls"] - before["engine_calls"]) == (5, 1)
    # the backend's concurrent requests (8 in flight) reach the engine together, not one by one
    client = _client(server, talkative_model)
    client.generate(PROMPTS, GREEDY)
    after = _stats(server)
    assert after["requests"] - mid["requests"] == len(PROMPTS)
    assert after["engine_calls"] - mid["engine_calls"] <= 2
    # sampled requests with the same seed reproduce (each request's seed: the sampling seed + its index)
    hot = Sampling(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    assert client.generate(PROMPTS[:4], hot) == client.generate(PROMPTS[:4], hot)


@pytest.mark.parametrize("body, message", [
    ({"model": "tiny", "prompt": 3}, "'prompt' must be"),
    ({"model": "tiny", "prompt": "x", "temperature": "hot"}, "'temperature' must be"),
    ({"model": "tiny", "messages": [{"role": "user"}]}, "'messages' must be"),
])
def test_bad_requests_get_400_with_the_reason(server, body, message):
    path = "/chat/completions" if "messages" in body else "/completions"
    req = urllib.request.Request(server + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and message in err.value.read().decode()
