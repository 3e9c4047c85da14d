"""eval.backend=ct2 through lm-eval's registry on the tiny model: same answers as lm-eval's hf at
fp32, the adapter applied, and results.json naming what served each request type."""
import json
import textwrap

import pytest

from evalsuite.harness import EvalConfig, run_eval
from evalsuite.records import read_jsonl

FP32 = dict(suite="offline", limit=3, max_gen_toks=8, bootstrap=20)


@pytest.fixture(scope="module")
def adapter(tiny_model_path, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    torch.manual_seed(1)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1.0)
    out = tmp_path_factory.mktemp("lora") / "adapter"
    lora.save_pretrained(out)
    return str(out)


def _responses(out):
    return [(r["task"], r["doc_id"], r["response"]) for r in read_jsonl(out / "samples.jsonl")]


def test_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    from evalsuite import lm_ct2

    assert get_model("synthloop-ct2") is lm_ct2.CT2LM


def test_ct2_fp32_answers_like_lm_eval_hf_with_and_without_adapter(tiny_model_path, adapter, tmp_path):
    runs = {}
    for backend, ad in (("hf", None), ("ct2", None), ("hf", adapter), ("ct2", adapter)):
        cfg = EvalConfig(backend=backend, quantization="float32", **FP32)
        out = tmp_path / f"{backend}-{bool(ad)}"
        runs[backend, bool(ad)] = (run_eval(cfg, tiny_model_path, ad, out), out)
    res, out = runs["ct2", False]
    assert _responses(out) == _responses(runs["hf", False][1])       # chat template, stops, truncation alike
    assert _responses(runs["ct2", True][1]) == _responses(runs["hf", True][1])  # merged == lm-eval's peft
    assert _responses(runs["ct2", True][1]) != _responses(out)         # the adapter is applied
    saved = json.loads((out / "results.json").read_text())
    assert saved["engine"]["backend"] == "ct2" and saved["engine"]["requests"]["generate_until"] == 9
    assert saved["engine"]["loglikelihood"].startswith("ct2 forward_batch")
    assert saved["config"]["backend"] == "ct2" and saved["engine"]["adapter"] is None
    assert json.loads((runs["ct2", True][1] / "results.json").read_text())["engine"]["adapter"] == adapter
    assert json.loads((runs["hf", False][1] / "results.json").read_text())["engine"]["backend"] == "hf"


def test_loglikelihood_tasks_are_served_by_the_engine(tiny_model_path, tmp_path):
    rows = [{"question": "2 + 2 =", "choices": ["3", "4", "5"], "answer": "4"},
            {"question": "Colour of the sky?", "choices": ["green", "blue"], "answer": "B"},
            {"question": "Opposite of hot?", "choices": ["cold", "warm", "wet"], "answer": 0}]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "suite.yaml").write_text(textwrap.dedent("""\
        tasks:
          - name: my_choices
            data: mc.jsonl
            metric: multiple_choice
    """))
    got = {}
    for backend in ("hf", "ct2"):
        cfg = EvalConfig(suite=str(tmp_path / "suite.yaml"), backend=backend, quantization="float32", bootstrap=20)
        res = run_eval(cfg, tiny_model_path, None, tmp_path / backend)
        got[backend] = [r["correct"] for r in read_jsonl(tmp_path / backend / "samples.jsonl")]
    assert res["engine"]["requests"]["loglikelihood"] == 8  # one request per choice
    assert got["ct2"] == got["hf"]


def test_wrong_backend_name_is_a_clear_error(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="must be 'hf', 'ct2' or 'vllm', got 'ctt2'"):
        run_eval(EvalConfig(backend="ctt2", limit=1), tiny_model_path, None, tmp_path)
