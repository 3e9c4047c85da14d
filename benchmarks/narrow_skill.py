"""Does a few hundred records of one narrow skill move that skill on the real SmolLM2-135M?

    .venv/bin/python benchmarks/narrow_skill.py [--train 300] [--dev 100] [--out DIR] [key=value ...]

Skill: two-number arithmetic (+, -, x on 1-2 digit numbers, several phrasings) answered with a
one-line working and a final line ``Answer: <number>``. Train and dev items are disjoint
(no shared operand triple). Dev score, greedy decoding on the chat template:

* ``strict``: the number after the last ``Answer:`` equals the result (skill + format);
* ``lenient``: the last number in the reply equals the result (arithmetic alone).

Before = the base model; after = base + the adapter trained by ``python -m train`` (run as a
subprocess, as the loop runs it), merged by ``train.lora.export`` and loaded as a plain model.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalsuite import typedconfig  # noqa: E402
from loop.isolate import train_subprocess  # noqa: E402
from train.lora import TrainConfig, export  # noqa: E402

PHRASES = {
    "+": ["What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}.", "What is the sum of {a} and {b}?"],
    "-": ["What is {a} - {b}?", "Subtract {b} from {a}.", "Compute {a} minus {b}.", "What is {a} take away {b}?"],
    "x": ["What is {a} x {b}?", "Multiply {a} by {b}.", "Compute {a} times {b}.", "What is the product of {a} and {b}?"],
}
THREADS = 0  # torch CPU threads for generation (set from --threads)
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b}


def items(n: int, rng: random.Random, taken: set) -> list[dict]:
    out = []
    while len(out) < n:
        op = rng.choice("+-x")
        a, b = (rng.randint(10, 99), rng.randint(2, 99)) if op != "x" else (rng.randint(2, 30), rng.randint(2, 12))
        if (a, b, op) in taken:
            continue
        taken.add((a, b, op))
        q = rng.choice(PHRASES[op]).format(a=a, b=b)
        ans = OPS[op](a, b)
        out.append({"q": q, "target": ans, "reply": f"{a} {'*' if op == 'x' else op} {b} = {ans}.\nAnswer: {ans}"})
    return out


def score(replies: list[str], dev: list[dict]) -> dict:
    strict = lenient = 0
    for r, it in zip(replies, dev):
        tagged = re.findall(r"Answer:\s*(-?\d+)", r)
        nums = re.findall(r"-?\d+", r)
        strict += bool(tagged) and int(tagged[-1]) == it["target"]
        lenient += bool(nums) and int(nums[-1]) == it["target"]
    return {"strict": strict / len(dev), "lenient": lenient / len(dev)}


def evaluate(model_path: str, dev: list[dict]) -> tuple[dict, list[str], float]:
    from synth.llm import LLMConfig, Sampling, load_llm

    llm = load_llm(LLMConfig(backend="hf", model=model_path, batch_size=16, threads=THREADS))
    t = time.perf_counter()
    replies = llm.generate([[{"role": "user", "content": it["q"]}] for it in dev],
                           Sampling(max_new_tokens=40, temperature=0.0))
    llm.close()
    return score(replies, dev), replies, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--dev", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (1 is faster on a busy CPU)")
    ap.add_argument("--out", default=None, help="keep outputs here (default: a temp dir)")
    ap.add_argument("overrides", nargs="*", help="TrainConfig key=value")
    a = ap.parse_args()
    from evalsuite.models import resolve_model

    global THREADS
    THREADS = a.threads
    base = resolve_model(a.base)
    # small data (~60 tokens a record): short rows, one per step, so the run has enough optimizer steps
    cfg = typedconfig.load(TrainConfig, None, a.overrides, defaults=dict(
        batch_size=1, max_seq_len=256, epochs=1.0, lr=5e-4, logging_steps=5, threads=a.threads))
    rng, taken = random.Random(a.seed), set()
    dev = items(a.dev, rng, taken)
    train_items = items(a.train, rng, taken)
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="narrow_skill_"))
    out.mkdir(parents=True, exist_ok=True)
    data = out / "skill_train.jsonl"
    data.write_text("".join(json.dumps({
        "id": f"arith-{i}", "messages": [{"role": "user", "content": it["q"]}, {"role": "assistant", "content": it["reply"]}],
        "source": "benchmark:narrow_skill", "tags": {"fine": ["arithmetic calculation"], "macro": ["Math Reasoning"]},
        "scores": {}, "meta": {}}) + "\n" for i, it in enumerate(train_items)))

    before, replies_before, t_before = evaluate(base, dev)
    print(f"before: {before} ({t_before:.0f}s)  e.g. {replies_before[0]!r}", flush=True)
    t = time.perf_counter()
    m = train_subprocess(cfg, [data], base, out / "train")
    t_train = time.perf_counter() - t
    merged = export(base, str(out / "train" / "adapter"), out / "merged")
    after, replies_after, t_after = evaluate(str(merged), dev)
    print(f"after:  {after} ({t_after:.0f}s)  e.g. {replies_after[0]!r}", flush=True)
    losses = [p["loss"] for p in m["loss_curve"]]
    summary = {"before": before, "after": after, "n_train": a.train, "n_dev": a.dev, "config": vars(cfg),
               "train": {k: m[k] for k in ("steps", "tokens_seen", "tokens_per_s", "train_loss", "n_records",
                                             "pack_fill", "train_s")},
               "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
               "seconds": {"eval_before": t_before, "train_subprocess": t_train, "eval_after": t_after},
               "examples": [{"q": d["q"], "target": d["target"], "before": rb, "after": ra}
                            for d, rb, ra in list(zip(dev, replies_before, replies_after))[:5]]}
    (out / "narrow_skill.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"train: {m['steps']} steps, {m['tokens_seen']} tokens, {m['tokens_per_s']:.0f} tokens/s, "
          f"loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f}, {t_train:.0f}s")
    print(f"dev strict  (Answer: N correct): {before['strict']:.2f} -> {after['strict']:.2f}")
    print(f"dev lenient (last number correct): {before['lenient']:.2f} -> {after['lenient']:.2f}")
    print(f"written: {out / 'narrow_skill.json'}")


if __name__ == "__main__":
    main()
