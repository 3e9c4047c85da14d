"""The one record schema and its JSONL I/O.

A record is ``{"id", "messages": [{"role", "content"}, ...], "source",
"tags": {"fine": [], "macro": []}, "scores": {}, "meta": {}}`` — the chat format
TRL, axolotl and LLaMA-Factory read as is. Eval samples (``samples.jsonl``) use the
same I/O but their own flat fields.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """Bad input: the message names the file and line (or the record id) at fault."""


def content_hash(*parts: Any, n: int = 16) -> str:
    """Stable short hash of JSON-serialisable parts (cache keys, record ids)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:n]


def make_record(messages: list[dict], source: str, *, id: str | None = None,
                tags: dict | None = None, scores: dict | None = None,
                meta: dict | None = None) -> dict:
    rec = {
        "id": id or f"{source}-{content_hash(messages)}",
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "source": source,
        "tags": {"fine": list((tags or {}).get("fine", [])), "macro": list((tags or {}).get("macro", []))},
        "scores": dict(scores or {}),
        "meta": dict(meta or {}),
    }
    validate_record(rec, where=rec["id"])
    return rec


def validate_record(rec: Any, where: str) -> None:
    """Raise RecordError naming ``where`` (file:line or id) if ``rec`` breaks the schema."""
    if not isinstance(rec, dict):
        raise RecordError(f"{where}: record must be a JSON object, got {type(rec).__name__}")
    for key in ("id", "messages", "source"):
        if key not in rec:
            raise RecordError(f"{where}: record is missing key {key!r}")
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise RecordError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RecordError(f"{where}: messages[{i}] must be {{'role': one of {ROLES}, 'content': str}}")
    if not any(m["role"] == "assistant" for m in msgs):
        raise RecordError(f"{where}: record has no assistant turn")
    tags = rec.get("tags", {"fine": [], "macro": []})
    if not isinstance(tags, dict) or not all(isinstance(tags.get(k, []), list) for k in ("fine", "macro")):
        raise RecordError(f"{where}: 'tags' must be {{'fine': [...], 'macro': [...]}}")


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the JSON objects of a JSONL file; a broken line raises RecordError naming file:line."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(iter_jsonl(path))


def read_records(path: str | os.PathLike) -> list[dict]:
    """Read and validate schema records (JSONL)."""
    out = []
    for i, rec in enumerate(iter_jsonl(path), 1):
        validate_record(rec, where=f"{path}: record {i}")
        rec.setdefault("tags", {"fine": [], "macro": []})
        rec.setdefault("scores", {})
        rec.setdefault("meta", {})
        out.append(rec)
    return out


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows atomically (temp file, then rename): a killed write leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
