"""LoRA SFT throughput of SmolLM2-135M at the default TrainConfig, as a share of this machine's fp32 matmul rate.

    .venv/bin/python benchmarks/train_throughput.py [--steps 3] [--warmup 1] [key=value ...]
    (e.g. ``threads=1`` on a busy shared CPU: two OpenMP threads stall on every barrier when
    other processes hold a core, and the comparison with the matmul rate becomes noise)

Runs ``train.lora.train`` itself (defaults: r=16 on all 7 Llama projections, 4 packed rows of
up to 1024 tokens per step) on real ShareGPT conversations from the packaged pool, times the
optimizer steps after ``--warmup``, and counts the model FLOPs those steps needed:

* frozen linear layers and the tied lm_head: forward 2*P + input-gradient 2*P per token
  (no weight gradient for frozen weights, so NOT the 6*P of full fine-tuning); the lm_head
  only at the labelled positions, which is where train/ computes logits;
* LoRA A/B: forward, input- and weight-gradient, 6*r*(in+out) per token per module;
* attention scores and values, causal, per packed example: 6*H*D*L^2 per layer for an
  example of L tokens (forward + backward), no cross-example or padding terms.

The fp32 matmul rate is measured in the same run (best of square GEMMs before and after the
training), so a busy machine lowers both. Last line: ``achieved/peak = 0.NN``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoConfig, TrainerCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalsuite import typedconfig  # noqa: E402
from train.lora import TrainConfig, train  # noqa: E402


def matmul_rate(n: int = 2048, reps: int = 6) -> float:
    """Best fp32 GEMM rate (FLOP/s) over a few square n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def sharegpt_records(n: int) -> list[dict]:
    import ijson

    from synth.pool import sharegpt_path  # the benchmark may use the project's pool locator

    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    out = []
    with open(sharegpt_path(), "rb") as fh:
        for item in itertools.islice(ijson.items(fh, "item"), n):
            msgs = [{"role": roles.get(c.get("from"), "user"), "content": c.get("value", "")}
                    for c in item.get("conversations", [])]
            if msgs:
                out.append({"id": item["id"], "messages": msgs, "source": "sharegpt",
                            "tags": {"fine": [], "macro": []}, "scores": {}, "meta": {}})
    return out


class StepFlops(TrainerCallback):
    """Times update steps and counts their FLOPs from the batches the collator built."""

    def __init__(self, cfg: TrainConfig, model_cfg, warmup: int):
        self.cfg, self.warmup = cfg, warmup
        d, f, L = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_hidden_layers
        H, Hkv = model_cfg.num_attention_heads, model_cfg.num_key_value_heads
        D = getattr(model_cfg, "head_dim", None) or d // H
        shapes = {"q_proj": (d, H * D), "k_proj": (d, Hkv * D), "v_proj": (d, Hkv * D), "o_proj": (H * D, d),
                  "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}
        self.linear = L * sum(i * o for i, o in shapes.values())
        self.lora = L * sum(cfg.lora.r * (i + o) for m, (i, o) in shapes.items() if m in cfg.lora.target_modules)
        self.head = d * model_cfg.vocab_size
        self.attn = L * H * D
        self.collator = None
        self.marks: list[float] = []  # time at the end of each optimizer step

    def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
        self.collator = train_dataloader.collate_fn  # train.packing.FlatCollator: per-batch counts

    def on_step_end(self, args, state, control, **kw):
        self.marks.append(time.perf_counter())

    def result(self) -> dict:
        # step i trains batch i (grad_accum=1 here); time from the end of the warm-up to the last step
        (tok0, tr0, sq0), (tok1, tr1, sq1) = self.collator.totals(self.warmup), self.collator.totals(len(self.marks))
        tokens, trained, sq = tok1 - tok0, tr1 - tr0, sq1 - sq0
        secs = self.marks[-1] - self.marks[self.warmup - 1]
        flops = (4 * self.linear * tokens + 6 * self.lora * tokens + 4 * self.head * trained
                 + 6 * self.attn * sq)
        return {"tokens": tokens, "trained_tokens": trained, "seconds": secs, "tokens_per_s": tokens / secs,
                "flops": flops, "flops_per_token": flops / tokens, "model_flop_per_s": flops / secs,
                "steps_timed": len(self.marks) - self.warmup}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    ap.add_argument("--records", type=int, default=400, help="ShareGPT conversations to draw from")
    ap.add_argument("--base", default="embedded:smollm2-135m-instruct")
    ap.add_argument("overrides", nargs="*", help="TrainConfig key=value (default: the defaults)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from evalsuite.models import resolve_model

    base = resolve_model(a.base)
    cfg = typedconfig.load(TrainConfig, None, a.overrides)
    if cfg.threads > 0:  # the matmul rate is measured with the same thread count as training
        torch.set_num_threads(cfg.threads)
    cfg.max_steps, cfg.save_steps, cfg.logging_steps, cfg.grad_accum = a.warmup + a.steps, 10**6, 1, 1
    peak_before = matmul_rate()
    cb = StepFlops(cfg, AutoConfig.from_pretrained(base), a.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sharegpt.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in sharegpt_records(a.records)))
        metrics = train(cfg, [data], base, Path(tmp) / "out", callbacks=[cb])
    peak_after = matmul_rate()
    peak = max(peak_before, peak_after)
    r = cb.result()
    print(f"threads={torch.get_num_threads()} load_avg={os.getloadavg()[0]:.2f} "
          f"config: r={cfg.lora.r} batch_size={cfg.batch_size} max_seq_len={cfg.max_seq_len} pack={cfg.pack} "
          f"attn={cfg.attn_implementation} grad_ckpt={cfg.gradient_checkpointing}")
    print(f"data: {metrics['n_records']} records packed in {metrics['rows']} rows, fill {metrics['pack_fill']:.3f}, "
          f"pad_share {metrics['pad_share']:.3f}, skipped {metrics['skipped']}")
    print(f"timed {r['steps_timed']} steps: {r['tokens']} tokens ({r['trained_tokens']} trained) in "
          f"{r['seconds']:.1f}s = {r['tokens_per_s']:.1f} tokens/s")
    print(f"model FLOPs/token {r['flops_per_token'] / 1e6:.0f} M -> {r['model_flop_per_s'] / 1e9:.1f} GFLOP/s")
    print(f"fp32 matmul rate: {peak_before / 1e9:.1f} GFLOP/s before, {peak_after / 1e9:.1f} after, "
          f"peak {peak / 1e9:.1f}")
    print(f"achieved/peak = {r['model_flop_per_s'] / peak:.2f}")


if __name__ == "__main__":
    main()
