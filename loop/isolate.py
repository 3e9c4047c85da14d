"""The loop's child processes: a stage function in a fresh interpreter (``call``) and a training
run (``train_subprocess``, the same ``python -m train`` a user runs standalone).

A GPU stage frees its memory when its process ends, and a crash in lm-eval/vLLM/training cannot
take the loop down with it. Every child dies with the loop (PR_SET_PDEATHSIG), so a ``kill -9``
of the loop leaves no orphan writing into a stage's temp folder.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence


class StageFailed(RuntimeError):
    pass


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when its parent dies (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def _preexec():
    return die_with_parent if sys.platform.startswith("linux") else None


def call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh Python process; its result. ``fn`` must be a top-level
    function (pickled by reference: the child imports its module)."""
    _remove_abandoned_call_dirs()
    td, lock = _locked_call_dir()
    try:
        inp, outp = td / "in.pkl", td / "out.pkl"
        inp.write_bytes(pickle.dumps((fn, args, kwargs)))
        cmd = [sys.executable, "-m", "loop.isolate", str(inp), str(outp)]
        rc = subprocess.call(cmd, preexec_fn=_preexec(), env=os.environ.copy())
        name = f"{fn.__module__}.{fn.__qualname__}"
        if not outp.exists():
            raise StageFailed(f"{name} exited with code {rc} and no result (see the output above)")
        ok, value = pickle.loads(outp.read_bytes())
        if not ok:
            raise StageFailed(f"{name} failed in its subprocess:\n{value}")
        return value
    finally:
        shutil.rmtree(td, ignore_errors=True)
        lock.close()


# A call's temp folder holds a lock (flock) for as long as the call runs; the kernel drops it when
# the loop dies, so a folder whose lock can be taken was left by a killed loop and is removed.
_CALL_PREFIX = "synthloop-call-"


def _locked_call_dir() -> tuple[Path, Any]:
    """A new call folder, already locked when it appears under its final name."""
    new = Path(tempfile.mkdtemp(prefix="synthloop-new-"))
    lock = open(new / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)            # subprocesses do not inherit it (close_fds)
    final = new.with_name(_CALL_PREFIX + new.name[len("synthloop-new-"):])
    os.rename(new, final)
    return final, lock


def _remove_abandoned_call_dirs() -> None:
    for folder in Path(tempfile.gettempdir()).glob(_CALL_PREFIX + "*"):
        try:
            with open(folder / ".lock") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:                         # running (locked), another user's, or gone already
            continue


def train_subprocess(cfg, data: Sequence[Path], base: str, out_dir: Path, adapter_in: str | None = None,
                     history: Sequence[Path] = (), launcher: Sequence[str] | None = None,
                     env: dict | None = None) -> dict:
    """``python -m train`` on these files: same contract as ``train.lora.train``; a killed run
    re-launched with the same arguments resumes from its last checkpoint. ``launcher`` (default
    ``cfg.launcher``) replaces ``python``, e.g. ``["accelerate", "launch", "--num_processes", "4"]``;
    only that first process is tied to the caller's life, the workers it starts are its to stop."""
    launcher = cfg.launcher if launcher is None else launcher
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "train_request.json"
    cfg_path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    head = list(launcher) + ["-m", "train"] if launcher else [sys.executable, "-m", "train"]
    cmd = head + [a for p in data for a in ("--data", str(p))]
    cmd += [a for p in history for a in ("--history", str(p))]
    cmd += ["--base", base, "--out", str(out_dir), "--config", str(cfg_path)]
    if adapter_in:
        cmd += ["--adapter-in", str(adapter_in)]
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, preexec_fn=_preexec())
    if proc.returncode != 0:
        raise RuntimeError(f"training subprocess failed with exit code {proc.returncode}: {' '.join(cmd)} "
                           f"(re-running resumes from {out_dir / 'checkpoints'})")
    return json.loads((out_dir / "metrics.json").read_text())


def _main(inp: str, outp: str) -> int:
    fn, args, kwargs = pickle.loads(Path(inp).read_bytes())
    try:
        result = (True, fn(*args, **kwargs))
    except BaseException:  # noqa: BLE001 - reported to the parent verbatim
        result = (False, traceback.format_exc())
    Path(outp).write_bytes(pickle.dumps(result))
    return 0 if result[0] else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2]))
