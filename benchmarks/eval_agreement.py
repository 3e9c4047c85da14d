"""Does the eval on the ct2 engine (int8) give the same answers as lm-eval's hf (fp32)?

    .venv/bin/python benchmarks/eval_agreement.py [--limit 60] [--out runs/eval/agreement] [--quantization int8]

Runs ``evalsuite.harness.run_eval`` on the offline suite twice, same items, same seed: backend
``hf`` (transformers fp32, the reference) and backend ``ct2``; then per task: how often the
extracted answers agree, how often the correctness agrees, both scores over all items and their
difference, and each run's wall time. An existing run folder is reused (delete it to re-run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from evalsuite.harness import EvalConfig, run_eval
    from evalsuite.models import resolve_model
    from evalsuite.records import read_jsonl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--suite", default="offline")
    ap.add_argument("--quantization", default="int8")
    ap.add_argument("--out", default="runs/eval/agreement")
    args = ap.parse_args(argv)
    model = resolve_model("embedded:smollm2-135m-instruct")
    runs = {}
    for backend in ("hf", "ct2"):
        out = Path(args.out) / (f"{backend}-{args.limit}" + ("" if backend == "hf" else f"-{args.quantization}"))
        if not (out / "results.json").exists():
            run_eval(EvalConfig(suite=args.suite, limit=args.limit, backend=backend, quantization=args.quantization),
                     model, None, out)
        runs[backend] = (json.loads((out / "results.json").read_text()),
                         {(r["task"], r["doc_id"]): r for r in read_jsonl(out / "samples.jsonl")})
    (hf_res, hf_rows), (ct_res, ct_rows) = runs["hf"], runs["ct2"]
    print("\n| task | items | extracted answers agree | correctness agrees | hf score | ct2 score | ct2 - hf |")
    print("|---|---|---|---|---|---|---|")
    for task in hf_res["tasks"]:
        keys = [k for k in hf_rows if k[0] == task and k in ct_rows]
        same_ans = sum(str(hf_rows[k]["extracted"]).strip() == str(ct_rows[k]["extracted"]).strip() for k in keys)
        same_ok = sum(hf_rows[k]["correct"] == ct_rows[k]["correct"] for k in keys)
        a, b = hf_res["tasks"][task]["all"]["score"], ct_res["tasks"][task]["all"]["score"]
        print(f"| {task} | {len(keys)} | {same_ans}/{len(keys)} ({same_ans / len(keys):.0%}) | "
              f"{same_ok}/{len(keys)} ({same_ok / len(keys):.0%}) | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    same_resp = sum(hf_rows[k]["response"] == ct_rows[k]["response"] for k in hf_rows if k in ct_rows)
    print(f"\nidentical responses: {same_resp}/{len(hf_rows)}; wall: hf {hf_res['wall_s']:.0f} s, "
          f"ct2 {ct_res['wall_s']:.0f} s ({ct_res['engine'].get('tokens_per_s')} tokens/s in generation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
