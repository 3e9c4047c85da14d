"""One typed config tree, loaded from YAML with ``key.sub=value`` overrides.

Each section's dataclass lives next to the code it configures (``EvalConfig`` in
evalsuite, ``TrainConfig`` in train, ...); this module composes them and does the
typed loading. Unknown keys and wrong types are errors that name the key (and file).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evalsuite.harness import EvalConfig
from synth.diagnose import DiagnoseConfig
from synth.generate import SynthConfig
from synth.llm.base import LLMConfig
from synth.mix import MixConfig
from synth.retrieve import RetrieveConfig
from synth.tagging import TagConfig
from train.lora import TrainConfig


class ConfigError(ValueError):
    pass


@dataclass
class StudentConfig:
    model: str = "embedded:smollm2-135m-instruct"  # HF id, local path or embedded:<name>


@dataclass
class TrackingConfig:
    wandb: str = "offline"      # offline | online | disabled (offline writes no network traffic)
    project: str = "synthloop"
    entity: str = ""            # W&B team/user; empty = your default


@dataclass
class StopConfig:
    patience: int = 0           # stop after this many rounds without test-score gain; 0 = never early
    min_delta: float = 0.005    # a gain smaller than this counts as no gain


@dataclass
class Config:
    name: str = "default"
    seed: int = 0
    rounds: int = 2
    cache_dir: str = ".cache/synthloop"  # converted models, embeddings, pool cache (shared by runs)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: LLMConfig = field(default_factory=LLMConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    synthesize: SynthConfig = field(default_factory=SynthConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    stop: StopConfig = field(default_factory=StopConfig)


# ---------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """YAML file (or defaults) + ``a.b=value`` overrides -> a validated Config."""
    raw: dict = {}
    where = "<defaults>"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: invalid YAML: {exc.problem}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        raw.setdefault("name", path.stem)
    for ov in overrides:
        _apply_override(raw, ov)
    return from_dict(Config, raw, where=where)


def _apply_override(raw: dict, override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {p!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = value


def from_dict(cls: type, data: Any, where: str = "<config>", prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"{where}: unknown key {full!r}{hint}")
        kwargs[key] = _convert(hints[key], value, where, full)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: {key}: bad value {value!r}")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        return [_convert(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}: must be one of {list(args)}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise ConfigError(f"{where}: {key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
