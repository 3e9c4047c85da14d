"""run_eval end to end on the tiny model: files, fields, splits, the adapter path."""
import json

import pytest

from evalsuite.harness import EvalConfig, run_eval
from evalsuite.records import read_jsonl
from evalsuite.split import assign_split

ROW_KEYS = {"task", "doc_id", "split", "prompt", "target", "response", "extracted", "correct", "metrics"}


@pytest.fixture(scope="module")
def offline_run(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = EvalConfig(suite="offline", limit=4, max_gen_toks=8, bootstrap=50, dev_ratio=0.5)
    return run_eval(cfg, tiny_model_path, None, out), out


def test_offline_run_writes_results_samples_and_configs(offline_run):
    res, out = offline_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"] == json.loads(json.dumps(res["tasks"]))
    assert set(res["tasks"]) == {"math_offline", "ifeval_offline", "humaneval_offline"}
    for name, t in res["tasks"].items():
        assert t["metric"] and t["dev"]["n"] + t["test"]["n"] == 4
        for sp in ("dev", "test"):
            if t[sp]["n"]:
                assert t[sp]["ci_low"] <= t[sp]["score"] <= t[sp]["ci_high"]
    assert res["lm_eval_version"] == (out / "lm_eval_version.txt").read_text().strip()
    assert {p.stem for p in (out / "task_configs").glob("*.yaml")} >= {"math_offline", "ifeval_offline",
                                                                       "humaneval_offline", "_suite"}
    assert res["wall_s"] > 0 and res["adapter"] is None


def test_sample_rows(offline_run):
    _, out = offline_run
    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 12
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["split"] == assign_split(r["task"], r["doc_id"], 0.5)
        assert isinstance(r["correct"], bool) and isinstance(r["metrics"], dict)
        assert "<|im_start|>" not in r["prompt"]  # the question as asked, without the chat template
    math = [r for r in rows if r["task"] == "math_offline"]
    assert [r["doc_id"] for r in math] == ["math-0000", "math-0001", "math-0002", "math-0003"]
    assert math[0]["prompt"].startswith("Yusuf has 2 pencils") and math[0]["target"] == "5"
    he = [r for r in rows if r["task"] == "humaneval_offline"]
    assert he[0]["doc_id"] == "HumanEval/0" and "def has_close_elements" in he[0]["extracted"]
    ife = [r for r in rows if r["task"] == "ifeval_offline"]
    assert json.loads(ife[0]["target"])[0]["id"]  # the constraints are the target


def test_decontamination_texts_cover_every_item_not_only_the_evaluated(offline_run):
    """limit=4 evaluated 12 items; training data must still avoid all 764 scored items (HumanEval/78
    included) and every other split the tasks define (math_offline's 30 few-shot examples)."""
    from collections import Counter

    _, out = offline_run
    rows = read_jsonl(out / "decontam_texts.jsonl")
    keys = {r["key"] for r in rows}
    per_split = Counter((r["key"].split("/")[0], r["split"]) for r in rows if r["field"] == "question")
    assert per_split == {("math_offline", "test"): 300, ("ifeval_offline", "test"): 300,
                         ("humaneval_offline", "test"): 164, ("math_offline", "fewshot"): 30}
    assert len(keys) == 794 and "math_offline/fewshot:shot-0005" in keys
    few = {r["text"] for r in rows if r["key"] == "math_offline/fewshot:shot-0005"}
    assert any(t.startswith("Emma saves $12 every week") for t in few) and "11" in few
    by = {(r["key"], r["field"]): r["text"] for r in rows}
    assert "def " in by[("humaneval_offline/HumanEval/78", "question")]
    samples = {f"{s['task']}/{s['doc_id']}": s for s in read_jsonl(out / "samples.jsonl")}
    for key, s in samples.items():   # the same question and target the scorer saw, without the template
        assert by[(key, "question")] == s["prompt"] and by[(key, "target")] == s["target"]


def test_adapter_goes_through_lm_eval_peft(tiny_model_path, offline_run, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    torch.manual_seed(1)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():  # make the adapter matter
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1.0)
    lora.save_pretrained(tmp_path / "adapter")
    cfg = EvalConfig(suite="offline", limit=4, max_gen_toks=8, bootstrap=50)
    res = run_eval(cfg, tiny_model_path, str(tmp_path / "adapter"), tmp_path / "out")
    assert res["adapter"].endswith("adapter")
    base_rows = read_jsonl(offline_run[1] / "samples.jsonl")
    new_rows = read_jsonl(tmp_path / "out" / "samples.jsonl")
    assert [r["doc_id"] for r in new_rows] == [r["doc_id"] for r in base_rows]
    assert [r["response"] for r in new_rows] != [r["response"] for r in base_rows]


def test_split_dev_evaluates_the_same_dev_items_alone(tiny_model_path, offline_run, tmp_path):
    """``split="dev"`` (a data request's eval): exactly the dev rows a full eval of the same items
    has, with the same responses, and no test item evaluated."""
    cfg = EvalConfig(suite="offline", limit=4, max_gen_toks=8, bootstrap=50, dev_ratio=0.5)
    res = run_eval(cfg, tiny_model_path, None, tmp_path, split="dev")
    full = [r for r in read_jsonl(offline_run[1] / "samples.jsonl") if r["split"] == "dev"]
    dev = read_jsonl(tmp_path / "samples.jsonl")
    assert res["split"] == "dev" and {r["split"] for r in dev} == {"dev"}
    key = lambda r: (r["task"], r["doc_id"], r["response"], r["correct"])  # noqa: E731
    assert sorted(map(key, dev)) == sorted(map(key, full))
    assert all(t["test"]["n"] == 0 for t in res["tasks"].values())


def test_item_texts_cover_every_item_as_the_eval_logs_it(offline_run):
    from evalsuite.harness import item_texts

    rows = item_texts(EvalConfig(suite="offline", limit=4))   # limit does not apply: every item
    keys = {r["key"] for r in rows}
    assert sum(k.startswith("math_offline/") for k in keys) == 330 and len(rows) == 2 * len(keys)
    # without evaluating: the same rows an evaluation writes for decontamination
    assert rows == read_jsonl(offline_run[1] / "decontam_texts.jsonl")


@pytest.mark.slow
def test_real_student_on_the_offline_suite(real_model_path, tmp_path):
    """The embedded SmolLM2-135M-Instruct answers the offline suite (a few items per task)."""
    res = run_eval(EvalConfig(suite="offline", limit=4, bootstrap=100), real_model_path, None, tmp_path)
    rows = read_jsonl(tmp_path / "samples.jsonl")
    assert len(rows) == 12 and all(r["response"].strip() for r in rows if r["task"] != "humaneval_offline")
    assert all(0.0 <= t["all"]["score"] <= 1.0 for t in res["tasks"].values())
