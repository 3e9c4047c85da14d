"""math_offline by level, zero-shot against the configured few-shot, on the real SmolLM2-135M.

    .venv/bin/python benchmarks/math_levels.py [--limit 60] [--shots 0 3] [--model embedded:smollm2-135m-instruct]

Runs the suite's own path (``evalsuite.harness.run_eval`` → lm-eval) once per shot count on a
one-task suite written to a temp folder, then prints accuracy per level (1: one step, 2: two
steps, 3: three to six steps) over all evaluated items (dev + test), and the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalsuite.harness import EvalConfig, run_eval  # noqa: E402
from evalsuite.models import resolve_model  # noqa: E402
from evalsuite.records import read_jsonl  # noqa: E402

DATA = ROOT / "configs" / "tasks" / "math_offline" / "math_offline.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 3])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--max-gen-toks", type=int, default=192)
    args = ap.parse_args(argv)

    level_of = {r["id"]: r["level"] for r in read_jsonl(DATA)}
    model = resolve_model(args.model)
    table = []
    with tempfile.TemporaryDirectory(prefix="math-levels-") as td:
        for shots in args.shots:
            suite = Path(td) / f"math_{shots}shot.yaml"
            suite.write_text("apply_chat_template: true\ntasks:\n  - name: math_offline\n"
                             f"    num_fewshot: {shots}\n    max_gen_toks: {args.max_gen_toks}\n")
            t0 = time.time()
            run_eval(EvalConfig(suite=str(suite), limit=args.limit), model, None, Path(td) / f"out{shots}")
            wall = time.time() - t0
            by = defaultdict(list)
            for row in read_jsonl(Path(td) / f"out{shots}" / "samples.jsonl"):
                by[level_of[row["doc_id"]]].append(row["correct"])
            table.append((shots, by, wall))

    print(f"\nmath_offline, first {args.limit} items, {args.model}")
    print(f"{'shots':>5}  {'level 1':>9}  {'level 2':>9}  {'level 3':>9}  {'all':>9}  {'wall s':>6}")
    for shots, by, wall in table:
        cells = [f"{sum(by[lv])}/{len(by[lv])}" for lv in (1, 2, 3)]
        every = [c for v in by.values() for c in v]
        print(f"{shots:>5}  " + "  ".join(f"{c:>9}" for c in cells)
              + f"  {sum(every) / max(len(every), 1):>9.3f}  {wall:>6.0f}")
    print(json.dumps({str(s): {str(k): [sum(v), len(v)] for k, v in by.items()} for s, by, _ in table}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
