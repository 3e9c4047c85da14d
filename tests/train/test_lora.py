"""End-to-end LoRA runs on the tiny model: what is trained, what is written, continue/restart, resume, export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from train.lora import LoraSettings, TrainConfig, build_model, export, train


def small(**kw) -> TrainConfig:
    base = dict(max_seq_len=128, batch_size=2, logging_steps=1, save_steps=50, warmup_ratio=0.0)
    if "dropout" in kw:
        kw["lora"] = LoraSettings(dropout=kw.pop("dropout"))
    return TrainConfig(**{**base, **kw})


def adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter" / "adapter_model.safetensors"))


class Capture(TrainerCallback):
    """Keeps copies of the model's weights at the start and end of training."""

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.start = {k: v.detach().clone() for k, v in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kw):
        self.end = {k: v.detach().clone() for k, v in model.named_parameters()}


class Kill(TrainerCallback):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise KeyboardInterrupt(f"simulated kill at step {self.at}")


def test_overfit_loss_falls_only_adapter_changes_and_files_are_written(tmp_path, tiny_model_path, helpers):
    make_records, write = helpers
    recs = make_records(4, "fit")
    # valid but too long for max_seq_len: skipped and counted, never truncated (a record with no
    # assistant turn is invalid and stops the read: tests/train/test_data.py)
    bad = [{"id": "huge", "source": "t",
            "messages": [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "y"}]}]
    data = write(tmp_path / "d.jsonl", recs + bad)
    cap = Capture()
    m = train(small(max_steps=15, lr=5e-3, dropout=0.0), [data], tiny_model_path, tmp_path / "out", callbacks=[cap])

    losses = [p["loss"] for p in m["loss_curve"]]
    # the tiny model's random, frozen, tied lm_head caps how far its loss can fall (~1 nat); a real drop:
    assert len(losses) == 15 and losses[-1] < losses[0] - 0.5 and max(losses[-5:]) < min(losses[:3])
    # adapter weights moved; every base weight is bit-identical to the checkpoint on disk
    lora = [k for k in cap.start if "lora_" in k]
    assert lora
    assert any(not torch.equal(cap.start[k], cap.end[k]) for k in lora if "lora_B" in k)
    original = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    base_keys = [k for k in cap.end if "lora_" not in k]
    assert len(base_keys) > 10
    for k in base_keys:
        name = k.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(cap.end[k], original[name]), k

    out = tmp_path / "out"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 16
    trained = [json.loads(line) for line in (out / "train_set.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in trained) == sorted(r["id"] for r in recs)
    assert trained == [next(r for r in recs if r["id"] == t["id"]) for t in trained]  # records unchanged
    assert m["skipped"] == {"too_long": 1}
    assert m["n_records"] == 4 and m["pad_share"] == 0.0 and m["steps"] == 15
    assert m["tokens_seen"] > 0 and m["tokens_per_s"] > 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 15
    assert json.loads((out / "metrics.json").read_text())["train_loss"] == pytest.approx(m["train_loss"])
    assert not (out / "checkpoints").exists()


def test_same_seed_same_adapter_and_order(tmp_path, tiny_model_path, records_file):
    data = records_file("d", 10)
    a = train(small(max_steps=3), [data], tiny_model_path, tmp_path / "a")
    b = train(small(max_steps=3), [data], tiny_model_path, tmp_path / "b")
    assert (tmp_path / "a" / "train_set.jsonl").read_text() == (tmp_path / "b" / "train_set.jsonl").read_text()
    wa, wb = adapter(tmp_path / "a"), adapter(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["loss_curve"] == b["loss_curve"]


def test_continue_starts_from_previous_adapter_and_restart_from_base(tmp_path, tiny_model_path, records_file):
    r1, r2 = records_file("r1", 6), records_file("r2", 6, seed=1)
    train(small(max_steps=3, lr=5e-3), [r1], tiny_model_path, tmp_path / "round1")
    prev = adapter(tmp_path / "round1")
    assert any(v.abs().sum() > 0 for k, v in prev.items() if "lora_B" in k)
    hist = [tmp_path / "round1" / "train_set.jsonl"]
    a_in = str(tmp_path / "round1" / "adapter")

    # lr=0: the saved adapter is exactly the starting one
    c = train(small(max_steps=1, lr=0.0, policy="continue", replay=0.5), [r2], tiny_model_path,
              tmp_path / "cont", adapter_in=a_in, history=hist)
    got = adapter(tmp_path / "cont")
    assert got.keys() == prev.keys() and all(torch.equal(got[k], prev[k]) for k in prev)
    assert c["init"].startswith("adapter_in:") and c["n_from_history"] == 6 and c["n_records"] == 12

    s = train(small(max_steps=1, lr=0.0, policy="restart"), [r2], tiny_model_path,
              tmp_path / "restart", adapter_in=a_in, history=hist)
    got = adapter(tmp_path / "restart")
    assert all(torch.count_nonzero(v) == 0 for k, v in got.items() if "lora_B" in k)  # starts as the base model
    assert s["init"].startswith("base") and s["n_records"] == 12 and s["n_from_history"] == 6


def test_continue_with_mismatched_rank_is_an_error(tmp_path, tiny_model_path, records_file):
    train(small(max_steps=1), [records_file("r1", 2)], tiny_model_path, tmp_path / "r1")
    with pytest.raises(ValueError, match="lora.r: config says 8"):
        build_model(small(lora=LoraSettings(r=8)), tiny_model_path, str(tmp_path / "r1" / "adapter"))


def test_killed_run_resumes_to_the_same_adapter(tmp_path, tiny_model_path, records_file):
    data = records_file("d", 12)
    cfg = small(max_steps=4, save_steps=2, batch_size=1, lr=5e-3, dropout=0.1)  # dropout on: RNG state must resume too
    train(cfg, [data], tiny_model_path, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, [data], tiny_model_path, tmp_path / "killed", callbacks=[Kill(at=3)])
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-2").is_dir()
    m = train(cfg, [data], tiny_model_path, tmp_path / "killed")
    assert m["resumed_from"].endswith("checkpoint-2") and m["steps"] == 4
    whole, resumed = adapter(tmp_path / "whole"), adapter(tmp_path / "killed")
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], atol=1e-6, rtol=1e-5)
    assert not (tmp_path / "killed" / "checkpoints").exists()


def test_a_half_written_checkpoint_is_not_resumed(tmp_path, tiny_model_path, records_file):
    """A kill during a checkpoint save leaves checkpoint-N without the trainer_state.json that the
    Trainer writes last: the re-run resumes from the last whole checkpoint instead of failing on it
    (every re-run would), and ends with the uninterrupted run's adapter and whole-run loss."""
    import shutil

    data = records_file("d", 12)
    cfg = small(max_steps=4, save_steps=1, batch_size=1, lr=5e-3, logging_steps=50, dropout=0.1)
    whole = train(cfg, [data], tiny_model_path, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, [data], tiny_model_path, tmp_path / "killed", callbacks=[Kill(at=3)])
    ckpts = tmp_path / "killed" / "checkpoints"
    half = ckpts / "checkpoint-3"           # as a kill after the model, before the optimizer, leaves it
    half.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(ckpts / "checkpoint-2" / name, half / name)
    m = train(cfg, [data], tiny_model_path, tmp_path / "killed")
    assert m["resumed_from"].endswith("checkpoint-2") and m["steps"] == 4
    resumed, ref = adapter(tmp_path / "killed"), adapter(tmp_path / "whole")
    for k in ref:
        torch.testing.assert_close(resumed[k], ref[k], atol=1e-6, rtol=1e-5)
    # the mean over all 4 steps, not over the 2 this process ran (the Trainer's own figure)
    assert m["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    assert json.loads((tmp_path / "killed" / "trainer_state.json").read_text())["log_history"][-1]["train_loss"] \
        == pytest.approx(whole["train_loss"], rel=1e-6)


def test_stale_checkpoints_of_another_config_are_not_resumed(tmp_path, tiny_model_path, records_file):
    data = records_file("d", 6)
    with pytest.raises(KeyboardInterrupt):
        train(small(max_steps=3, save_steps=1), [data], tiny_model_path, tmp_path / "o", callbacks=[Kill(at=2)])
    m = train(small(max_steps=2, save_steps=1, lr=1e-3), [data], tiny_model_path, tmp_path / "o")
    assert m["resumed_from"] is None


def test_export_merges_into_a_standalone_model(tmp_path, tiny_model_path, records_file):
    from peft import PeftModel

    train(small(max_steps=3, lr=1e-2), [records_file("d", 6)], tiny_model_path, tmp_path / "t")
    out = export(tiny_model_path, str(tmp_path / "t" / "adapter"), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), str(tmp_path / "t" / "adapter")).eval()
    ids = torch.tensor([[1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198]])
    with torch.no_grad():
        lm, lp, lb = merged(ids).logits, peft(ids).logits, base(ids).logits
    torch.testing.assert_close(lm, lp, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(lm, lb, atol=1e-3)
    assert (Path(out) / "tokenizer_config.json").is_file() and not any(Path(out).glob("adapter_*"))


def test_cli_in_a_subprocess_and_override_errors(tmp_path, tiny_model_path, records_file):
    import dataclasses
    import json
    import subprocess
    import sys

    from evalsuite.typedconfig import ConfigError
    from train.__main__ import load_config

    conf = tmp_path / "train.json"
    conf.write_text(json.dumps(dataclasses.asdict(small(max_steps=2))))
    cmd = [sys.executable, "-m", "train", "--data", str(records_file("d", 4)), "--base", tiny_model_path,
           "--out", str(tmp_path / "sub"), "--config", str(conf)]
    subprocess.run(cmd + ["logging_steps=1"], check=True, capture_output=True)
    m = json.loads((tmp_path / "sub" / "metrics.json").read_text())
    assert m["steps"] == 2 and (tmp_path / "sub" / "adapter" / "adapter_model.safetensors").is_file()
    cfg = load_config(str(conf), ["lora.r=8", "pack=false", "lora.target_modules=[q_proj,v_proj]"])
    assert (cfg.lora.r, cfg.pack, cfg.lora.target_modules, cfg.max_steps) == (8, False, ["q_proj", "v_proj"], 2)
    with pytest.raises(ConfigError, match="unknown key 'rank'"):
        load_config(None, ["rank=8"])
    with pytest.raises(ConfigError, match="lr: expected float"):
        load_config(None, ["lr=fast"])
    with pytest.raises(ConfigError, match=r"policy: must be one of .*'contnue'.*did you mean 'continue'"):
        load_config(None, ["policy=contnue"])
    with pytest.raises(ConfigError, match="bf16: true needs device: cuda"):
        load_config(None, ["bf16=true"])
    # the CLI says it in one line, exit code 2, before any work
    bad = subprocess.run(cmd + ["policy=contnue"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("config error:") and "Traceback" not in bad.stderr
    with pytest.raises(ValueError, match="embedded"):
        train(small(), [records_file("e", 2)], "embedded:smollm2-135m-instruct", tmp_path / "e")


def test_gradient_checkpointing_runs_and_cpu_bf16_is_refused(tmp_path, tiny_model_path, records_file):
    data = records_file("d", 4)
    plain = train(small(max_steps=2, dropout=0.0), [data], tiny_model_path, tmp_path / "a")
    ckpt = train(small(max_steps=2, dropout=0.0, gradient_checkpointing=True), [data], tiny_model_path, tmp_path / "b")
    assert ckpt["loss_curve"][0]["loss"] == pytest.approx(plain["loss_curve"][0]["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="bf16"):
        train(small(bf16=True), [data], tiny_model_path, tmp_path / "c")
