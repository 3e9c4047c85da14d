"""The run directory: resolved config, state.json, and stages that finish atomically.

``round_NNN/<stage>/`` is written under a temp name (``.<stage>.tmp``), then renamed
into place with a ``DONE`` file holding the fingerprint of the stage's config slice
and inputs. A re-run skips a stage whose fingerprint matches; a changed one reruns,
and because each stage's fingerprint includes its inputs' fingerprints, so does
everything after it. A killed stage leaves only its temp folder, which the re-run
clears (or, for stages that checkpoint, such as training, resumes from).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evalsuite.records import read_json, write_json


def fingerprint(*parts: Any) -> str:
    def norm(x):
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            # how a stage is run (e.g. train.launcher) is not what it computes: no rerun for it
            return {k: v for k, v in dataclasses.asdict(x).items() if k not in getattr(x, "NOT_FINGERPRINTED", ())}
        if isinstance(x, Path):
            return str(x)
        return x
    blob = json.dumps([norm(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class StageResult:
    name: str
    dir: Path
    fingerprint: str
    summary: dict = field(default_factory=dict)
    wall_s: float = 0.0
    skipped: bool = False   # True when resumed from an earlier DONE


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.state_path = self.root / "state.json"

    def state(self) -> dict:
        if self.state_path.exists():
            return read_json(self.state_path)
        return {"rounds": {}}

    def update_state(self, **changes: Any) -> dict:
        st = self.state()
        st.update(changes)
        write_json(self.state_path, st)
        return st

    def round_dir(self, r: int | str) -> Path:
        return self.root / (f"round_{r:03d}" if isinstance(r, int) else r)

    def stage(self, where: int | str, name: str, parts: list, fn: Callable[[Path], dict | None],
              keep_partial: bool = False, on_done: Callable[[StageResult], None] | None = None,
              reuse_from: tuple[int | str, ...] = ()) -> StageResult:
        """Run ``fn(tmp_dir) -> summary`` unless a DONE with the same fingerprint exists.

        ``parts`` are the config slices and upstream fingerprints this stage depends on.
        ``keep_partial``: a temp folder left by a killed run with the same fingerprint is
        handed back to ``fn`` (which resumes from its checkpoints) instead of cleared.
        ``reuse_from``: other places (``"final"``, a round) whose same-named stage, finished
        with the same fingerprint, is copied instead of recomputed.
        """
        parent = self.round_dir(where)
        out, tmp = parent / name, parent / f".{name}.tmp"
        fp = fingerprint(*parts)
        info = self._done_with(out, fp)
        if info is not None:
            res = StageResult(name, out, fp, info["summary"], info.get("wall_s", 0.0), True)
            if on_done:
                on_done(res)
            return res
        shutil.rmtree(out, ignore_errors=True)          # stale (changed inputs) or half-renamed
        marker = tmp / ".fingerprint"
        if tmp.exists() and not (keep_partial and marker.exists() and marker.read_text() == fp):
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)
        t0 = time.time()
        twins = [(d, i) for d in (self.round_dir(w) / name for w in reuse_from) if (i := self._done_with(d, fp))]
        if twins:
            twin, info = twins[0]
            shutil.copytree(twin, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("DONE"))
            summary = {**info["summary"], "reused_from": str(twin.relative_to(self.root))}
        else:
            summary = fn(tmp) or {}
        wall = round(time.time() - t0, 2)
        marker.unlink()
        write_json(tmp / "DONE", {"fingerprint": fp, "summary": summary, "wall_s": wall,
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        os.replace(tmp, out)
        res = StageResult(name, out, fp, summary, wall, False)
        if on_done:
            on_done(res)
        return res

    @staticmethod
    def _done_with(folder: Path, fp: str) -> dict | None:
        """The folder's DONE info when it finished with fingerprint ``fp``, else None."""
        done = folder / "DONE"
        info = read_json(done) if done.exists() else {}
        return {"summary": {}, **info} if info.get("fingerprint") == fp else None

    def stage_status(self, where: int | str, name: str) -> tuple[str, dict]:
        """('done', info) | ('partial', {}) | ('pending', {}) — for `loop status`."""
        parent = self.round_dir(where)
        done = parent / name / "DONE"
        if done.exists():
            return "done", read_json(done)
        if (parent / f".{name}.tmp").exists():
            return "partial", {}
        return "pending", {}
