"""The one typed config loader: YAML (or JSON) + ``key.sub=value`` overrides -> a dataclass tree.

Used by the loop (its whole ``Config``) and by ``python -m train`` (a ``TrainConfig`` alone),
so both read the same syntax: values are YAML (``lr=2e-4``, ``pack=false``,
``lora.target_modules=[q_proj,v_proj]``). Unknown keys (with a did-you-mean), wrong types and
values outside a ``Literal`` are errors naming the file and key; a dataclass's own
``__post_init__`` checks run at load time too, and their ``ValueError`` is reported the same way.
Light on purpose (yaml + stdlib): it sits beside the record module at the bottom of the
dependency picture.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from evalsuite.records import write_text

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def load(cls: type[T], path: str | Path | None = None, overrides: typing.Sequence[str] = (),
         defaults: dict | None = None) -> T:
    """``cls`` from the file at ``path`` (or its defaults), ``defaults`` filling missing top-level
    keys, then each ``a.b=value`` override."""
    raw: dict = {}
    where = "<defaults>"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: invalid YAML: {exc.problem}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    for key, value in (defaults or {}).items():
        raw.setdefault(key, value)
    for ov in overrides:
        apply_override(raw, ov)
    return from_dict(cls, raw, where=where)


def apply_override(raw: dict, override: str) -> None:
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


def from_dict(cls: type[T], data: Any, where: str = "<config>", prefix: str = "") -> T:
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
    try:
        return cls(**kwargs)
    except ValueError as exc:  # the dataclass's own __post_init__ checks
        raise ConfigError(f"{where}: {prefix}{exc}") from None


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
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {key}: must be one of {list(args)}, got {value!r}{hint}")
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


def save(cfg: Any, path: str | Path) -> None:
    """The resolved config as YAML (loadable again with ``load``), written atomically."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
