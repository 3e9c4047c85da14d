"""CLI.

    python -m train --data FILE [--data FILE ...] [--history FILE ...] --base MODEL \
        [--adapter-in DIR] --out DIR [--config FILE] [key=value ...]
    python -m train export --base MODEL --adapter DIR --out DIR

``key=value`` overrides TrainConfig fields after ``--config`` with the loop's syntax (values are
YAML: ``lr=2e-4``, ``pack=false``, ``lora.target_modules=[q_proj,v_proj]``); an unknown key, a
wrong type or a bad value is a one-line error naming it, before any work.
Multi-GPU: ``accelerate launch -m train ...`` with the same arguments and ``device=cuda``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from evalsuite import typedconfig

from .lora import TrainConfig, export, train


def load_config(config: str | None, overrides: list[str]) -> TrainConfig:
    """TrainConfig from a YAML/JSON file (or the defaults) plus ``key=value`` overrides, through the
    project's one typed loader; a bad key, type or value is a ConfigError naming it."""
    return typedconfig.load(TrainConfig, config, overrides)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if argv[:1] == ["export"]:
        ap = argparse.ArgumentParser(prog="python -m train export", description="merge an adapter into its base")
        ap.add_argument("--base", required=True, help="HF path or id of the base model")
        ap.add_argument("--adapter", required=True, help="adapter folder written by training")
        ap.add_argument("--out", required=True, help="folder for the standalone merged model")
        a = ap.parse_args(argv[1:])
        print(export(a.base, a.adapter, Path(a.out)))
        return 0
    ap = argparse.ArgumentParser(prog="python -m train", description="LoRA SFT on record files")
    ap.add_argument("--data", action="append", required=True, help="this round's record file (JSONL); repeatable")
    ap.add_argument("--history", action="append", default=[], help="an earlier round's train_set.jsonl; repeatable")
    ap.add_argument("--base", required=True, help="HF path or id (embedded:* names must be resolved first)")
    ap.add_argument("--adapter-in", default=None, help="previous round's adapter (used under policy=continue)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--config", default=None, help="a TrainConfig as YAML or JSON (keys as in the loop's train section)")
    ap.add_argument("overrides", nargs="*", help="key=value TrainConfig overrides")
    a = ap.parse_intermixed_args(argv)
    try:
        cfg = load_config(a.config, a.overrides)
    except typedconfig.ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    metrics = train(cfg, [Path(p) for p in a.data], a.base, Path(a.out), a.adapter_in,
                    [Path(p) for p in a.history])
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss_curve", "skipped_ids")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
