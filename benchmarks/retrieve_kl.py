"""How well does the retrieve stage match the dev distribution? KL(target || selected) vs random.

    .venv/bin/python benchmarks/retrieve_kl.py RUN_DIR [--round 0] [--shares 0,0.5,1] [key=value ...]

Reruns a finished round's retrieve stage (``loop.run.retrieve_stage``: the run's config, its eval
samples and deficiencies, the pool it names) into a temp folder once per ``retrieve.dsir_share``
in ``--shares`` and prints the selection's figures: records, tokens, the kNN/DSIR split,
KL(target || selected) and KL(target || random subsets of the same size, mean of 5 draws), on
the hashed word unigram+bigram distribution (``synth.select``). ``key=value`` overrides apply
to the run's config (e.g. ``retrieve.max_records=64``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.config import load_config  # noqa: E402
from loop.run import retrieve_stage  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--round", type=int, default=0)
    ap.add_argument("--shares", default="0,0.5,1", help="retrieve.dsir_share values to compare")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rnd = args.run_dir / f"round_{args.round:03d}"
    keys = ("selected", "tokens", "by_part", "kl_target_selected", "kl_target_random", "kl_by_part",
            "mean_similarity", "skipped_too_long", "kept_prefix", "skipped_diversity", "dropped_by_rule", "wall_s")
    for share in (float(s) for s in args.shares.split(",")):
        cfg = load_config(args.run_dir / "config.yaml", [*args.overrides, f"retrieve.dsir_share={share}"])
        with tempfile.TemporaryDirectory() as tmp:
            stats = retrieve_stage(cfg, Path(cfg.cache_dir), rnd / "eval" / "samples.jsonl",
                                   rnd / "diagnose" / "deficiencies.json", Path(tmp))
        print(json.dumps({"dsir_share": share, **{k: stats.get(k) for k in keys}}))


if __name__ == "__main__":
    main()
