"""CLI.

    python -m train --data FILE [--data FILE ...] [--history FILE ...] --base MODEL \
        [--adapter-in DIR] --out DIR [--config-json FILE] [key=value ...]
    python -m train export --base MODEL --adapter DIR --out DIR

``key=value`` overrides TrainConfig fields after ``--config-json`` (typed: ints, floats,
true/false, and lists as JSON or comma-separated); an unknown key is an error naming it.
Multi-GPU: ``accelerate launch -m train ...`` with the same arguments and ``device=cuda``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from .lora import TrainConfig, export, train


def _parse_value(key: str, raw: str, typ):
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if typ in (int, float, str):
            return typ(raw)
        if origin is list:
            items = json.loads(raw) if raw.strip().startswith("[") else [s for s in raw.split(",") if s]
            if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
                raise ValueError(raw)
            return [s.strip() for s in items]
    except ValueError:
        raise ValueError(f"override {key}={raw!r}: expected {getattr(typ, '__name__', typ)}") from None
    raise ValueError(f"override {key}: unsupported field type {typ}")


def apply_overrides(cfg: TrainConfig, pairs: list[str]) -> TrainConfig:
    """``key=value`` or ``lora.key=value`` (the LoRA settings are a nested section)."""
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"expected key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        section, _, leaf = key.rpartition(".")
        if section not in ("", "lora"):
            raise KeyError(f"unknown TrainConfig key {key!r}")
        target = cfg.lora if section else cfg
        hints = typing.get_type_hints(type(target))
        if leaf not in hints or dataclasses.is_dataclass(hints[leaf]):
            known = sorted(k for k, t in hints.items() if not dataclasses.is_dataclass(t))
            raise KeyError(f"unknown TrainConfig key {key!r}; known{' in ' + section if section else ''}: {known}")
        new = dataclasses.replace(target, **{leaf: _parse_value(key, raw, hints[leaf])})
        cfg = dataclasses.replace(cfg, lora=new) if section else new
    return cfg


def load_config(config_json: str | None, overrides: list[str]) -> TrainConfig:
    cfg = TrainConfig()
    if config_json:
        try:
            d = json.loads(Path(config_json).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{config_json}: cannot read TrainConfig JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{config_json}: expected a JSON object")
        cfg = TrainConfig.from_dict(d, where=config_json)
    return apply_overrides(cfg, overrides)


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
    ap.add_argument("--config-json", default=None, help="a whole TrainConfig as JSON")
    ap.add_argument("overrides", nargs="*", help="key=value TrainConfig overrides")
    a = ap.parse_intermixed_args(argv)
    cfg = load_config(a.config_json, a.overrides)
    metrics = train(cfg, [Path(p) for p in a.data], a.base, Path(a.out), a.adapter_in,
                    [Path(p) for p in a.history])
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss_curve", "skipped_ids")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
