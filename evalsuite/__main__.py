"""python -m evalsuite --suite offline [--model M] [--adapter DIR] [--limit N] [--out DIR]

Evaluates the model (default: the embedded student) on a suite through lm-evaluation-harness,
prints task × split scores with 95% bootstrap CIs and writes results.json / samples.jsonl.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from evalsuite.harness import EvalConfig, run_eval
    from evalsuite.models import resolve_model
    from evalsuite.samples import format_table

    d = EvalConfig()
    ap = argparse.ArgumentParser(prog="python -m evalsuite", description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default=d.suite, help="suite name (configs/suites/<name>.yaml) or a suite YAML path")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local folder, or embedded:<name>")
    ap.add_argument("--adapter", default=None, help="LoRA adapter folder (evaluated through lm-eval's peft path)")
    ap.add_argument("--limit", type=int, default=d.limit, help="max items per task")
    ap.add_argument("--out", default=None, help="output folder (default runs/eval/<suite>-<time>)")
    ap.add_argument("--dev-ratio", type=float, default=d.dev_ratio)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--max-gen-toks", type=int, default=d.max_gen_toks, help="global cap on generated tokens")
    ap.add_argument("--bootstrap", type=int, default=d.bootstrap)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--backend", default=d.backend, choices=["hf", "ct2", "vllm"],
                    help="lm-eval model type; ct2 = the compiled CPU engine (adapter merged and converted once)")
    ap.add_argument("--quantization", default=d.quantization, help="ct2 backend: int8 | int8_float32 | int16 | float32")
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--dtype", default=d.dtype)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg = EvalConfig(suite=args.suite, limit=args.limit, dev_ratio=args.dev_ratio, batch_size=args.batch_size,
                     max_gen_toks=args.max_gen_toks, bootstrap=args.bootstrap, seed=args.seed,
                     backend=args.backend, device=args.device, dtype=args.dtype,
                     quantization=args.quantization)
    out = Path(args.out or f"runs/eval/{Path(args.suite).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    res = run_eval(cfg, resolve_model(args.model), args.adapter, out)
    print()
    print(format_table(res["tasks"]))
    print(f"\nmodel {args.model}{' + ' + args.adapter if args.adapter else ''} | lm-eval {res['lm_eval_version']} | "
          f"{res['n_samples']} items | {res['wall_s']:.0f} s | written to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
