"""The one training-record format and the one atomic JSON/JSONL I/O, for every package.

A record is ``{"id", "messages": [{"role", "content"}, ...], "source",
"tags": {"fine": [], "macro": []}, "scores": {}, "meta": {}}`` — the chat format TRL, axolotl
and LLaMA-Factory read as is. The rules (``validate_record``), in one place:

* ``id``: a non-empty string, unique within a file;
* ``messages``: a non-empty list of ``{"role": system|user|assistant, "content": str}`` with at
  least one assistant turn (a record without one has nothing to train on);
* ``source``: a non-empty string (``synth``, ``pool:<name>``, ...);
* ``tags``: ``{"fine": [...], "macro": [...]}``; ``scores`` and ``meta``: objects (optional on
  disk, filled in by ``read_records``).

It lives at the bottom of the dependency picture (evalsuite imports neither synth nor train)
and imports nothing heavy (no torch, no lm-eval), so ``train`` reads record files through it
too. Eval samples (``samples.jsonl``) use the same I/O with their own flat fields.
Every write goes to a temp name in the same folder and is renamed into place: a killed
process never leaves half a file.
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
    """Raise RecordError naming ``where`` (file:line or an origin) if ``rec`` breaks the rules above."""
    if not isinstance(rec, dict):
        raise RecordError(f"{where}: record must be a JSON object, got {type(rec).__name__}")
    rid = rec.get("id")
    if not isinstance(rid, str) or not rid:
        raise RecordError(f"{where}: record needs a non-empty string 'id'")
    where = f"{where}: record {rid!r}"
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RecordError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RecordError(f"{where}: messages[{i}] must be {{'role': one of {ROLES}, 'content': str}}")
    if not any(m["role"] == "assistant" for m in msgs):
        raise RecordError(f"{where}: no assistant turn")
    if not isinstance(rec.get("source"), str) or not rec["source"]:
        raise RecordError(f"{where}: needs a non-empty string 'source'")
    tags = rec.get("tags", {"fine": [], "macro": []})
    if not isinstance(tags, dict) or not all(isinstance(tags.get(k, []), list) for k in ("fine", "macro")):
        raise RecordError(f"{where}: 'tags' must be {{'fine': [...], 'macro': [...]}}")
    for key in ("scores", "meta"):
        if not isinstance(rec.get(key, {}), dict):
            raise RecordError(f"{where}: {key!r} must be an object")


def _numbered(path: Path) -> Iterator[tuple[int, Any]]:
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    with path.open("rb") as fh:   # bytes: lines end at \n only, and bad UTF-8 is named by its line
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                obj = json.loads(line)
            except UnicodeDecodeError as exc:
                raise RecordError(f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            except json.JSONDecodeError as exc:
                raise RecordError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            except (ValueError, RecursionError) as exc:   # e.g. a number of thousands of digits, deep nesting
                raise RecordError(f"{path}:{lineno}: unreadable JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
            yield lineno, obj


def iter_jsonl(path: str | os.PathLike) -> Iterator[Any]:
    """Yield the JSON values of a JSONL file; a broken line raises RecordError naming file:line."""
    for _, obj in _numbered(Path(path)):
        yield obj


def read_jsonl(path: str | os.PathLike) -> list:
    return list(iter_jsonl(path))


def read_records(path: str | os.PathLike) -> list[dict]:
    """Read and validate schema records (JSONL); errors name file:line."""
    path = Path(path)
    out = []
    for lineno, rec in _numbered(path):
        validate_record(rec, where=f"{path}:{lineno}")
        rec.setdefault("tags", {"fine": [], "macro": []})
        rec.setdefault("scores", {})
        rec.setdefault("meta", {})
        out.append(rec)
    return out


def _tmp_for(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    tmp = _tmp_for(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows atomically; returns how many were written."""
    path = Path(path)
    tmp = _tmp_for(path)
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
