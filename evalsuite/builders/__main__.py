"""Write the offline suite's generated task data: `python -m evalsuite.builders [--check]`.

The files are committed; ``--check`` verifies that regenerating them gives identical bytes
(fixed seeds, stable ids), which a test also asserts.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evalsuite.builders import ifeval_prompts, math_problems

TASKS_DIR = Path(__file__).resolve().parents[2] / "configs" / "tasks"
TARGETS = {
    TASKS_DIR / "math_offline" / "math_offline.jsonl": lambda: math_problems.build(),
    TASKS_DIR / "math_offline" / "math_offline_fewshot.jsonl": lambda: math_problems.build_fewshot(),
    TASKS_DIR / "ifeval_offline" / "ifeval_offline.jsonl": lambda: ifeval_prompts.build(),
}


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a committed file differs from a rebuild")
    args = ap.parse_args(argv)
    stale = []
    for path, build in TARGETS.items():
        text = render(build())
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({text.count(chr(10))} rows)")
    if stale:
        print("stale (run `python -m evalsuite.builders`):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
