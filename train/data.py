"""Which records a round trains on: read record files, apply the round policy and replay.

train/ reads record files itself (it imports neither synth nor evalsuite). A structurally
bad line raises ``DataError`` naming file:line; records that are well-formed but cannot be
trained on (no assistant turn, too long) are skipped later, in ``format.py``, with a count.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """Bad input: the message names the file and line at fault."""


def read_records(path: str | Path) -> list[dict]:
    """All records of a JSONL file, each checked for ``id`` and ``messages`` (role/content)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such record file")
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            _check(rec, where)
            out.append(rec)
    return out


def _check(rec: object, where: str) -> None:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: record must be a JSON object, got {type(rec).__name__}")
    if not isinstance(rec.get("id"), str) or not rec["id"]:
        raise DataError(f"{where}: record needs a non-empty string 'id'")
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: record {rec['id']!r}: 'messages' must be a non-empty list")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: record {rec['id']!r}: messages[{i}] must be "
                            f"{{'role': one of {ROLES}, 'content': str}}")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Atomic write (temp + rename) so a killed run never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _dedup(records: list[dict], seen: set[str]) -> tuple[list[dict], int]:
    """Keep the first record of each id (earlier rounds' train sets repeat replayed records)."""
    out, dups = [], 0
    for r in records:
        if r["id"] in seen:
            dups += 1
            continue
        seen.add(r["id"])
        out.append(r)
    return out, dups


def select_records(data: list[Path], history: list[Path], policy: str, replay: float,
                   seed: int) -> tuple[list[dict], dict]:
    """This round's training records (unordered) and counts of where they came from.

    ``continue``: this round's records plus replay: a random sample of earlier rounds'
    records making up ``replay`` of the result (share of the final set, capped by what
    history holds). ``restart``: this round's records plus all of history.
    """
    if policy not in ("continue", "restart"):
        raise ValueError(f"policy: expected 'continue' or 'restart', got {policy!r}")
    if not 0.0 <= replay < 1.0:
        raise ValueError(f"replay: expected a share in [0, 1), got {replay!r}")
    seen: set[str] = set()
    new, dup_new = _dedup([r for p in data for r in read_records(p)], seen)
    old, dup_old = _dedup([r for p in history for r in read_records(p)], seen)
    if policy == "restart":
        chosen = old
    else:
        want = round(replay / (1.0 - replay) * len(new))
        chosen = random.Random(seed).sample(old, min(want, len(old)))
    counts = {"n_new": len(new), "n_history_available": len(old), "n_from_history": len(chosen),
              "duplicate_ids_dropped": dup_new + dup_old}
    return new + chosen, counts
