"""The loop's child processes: a stage function in a fresh interpreter (``call``), a process that
runs several calls and keeps what they load (``Worker``: the round's GPU teacher boots once for
tag, diagnose and synthesize) and a training run (``train_subprocess``, the same ``python -m train``
a user runs standalone).

A GPU stage frees its memory when its process ends, and a crash in lm-eval/vLLM/training cannot
take the loop down with it. Every child dies with the loop (PR_SET_PDEATHSIG), so a ``kill -9``
of the loop leaves no orphan writing into a stage's temp folder.
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
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


def die_with_parent(parent: int | None = None) -> None:
    """``preexec_fn``: the child gets SIGKILL when its parent dies (Linux PR_SET_PDEATHSIG). Given the
    parent's pid, a child whose parent died before the signal was armed exits at once."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        return
    if parent is not None and os.getppid() != parent:
        os._exit(137)


def _preexec():
    return functools.partial(die_with_parent, os.getpid()) if sys.platform.startswith("linux") else None


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
        _release_call_dir(td, lock)


class Worker:
    """A child interpreter that runs ``call(fn, ...)`` one after another, so module state (a loaded
    model) outlives a call; ``close()`` ends it and frees what it held. Calls go over two pipes of
    their own (pickled; ``fn`` by reference), so the child's stdout stays the user's log. The child
    dies with the loop (PR_SET_PDEATHSIG) and on EOF of its input."""

    def __init__(self) -> None:
        c_in, p_out = os.pipe()
        p_in, c_out = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "loop.isolate", "--serve", str(c_in), str(c_out)],
                                     pass_fds=(c_in, c_out), preexec_fn=_preexec(), env=os.environ.copy())
        os.close(c_in)
        os.close(c_out)
        self._to, self._from = os.fdopen(p_out, "wb"), os.fdopen(p_in, "rb")
        self.calls = 0

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        name = f"{fn.__module__}.{fn.__qualname__}"
        try:
            pickle.dump((fn, args, kwargs), self._to)
            self._to.flush()
            ok, value = pickle.load(self._from)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            rc = self.proc.wait()
            raise StageFailed(f"{name}: the worker process exited with code {rc} (see the output above)") from None
        self.calls += 1
        if not ok:
            raise StageFailed(f"{name} failed in the worker process:\n{value}")
        return value

    def close(self, timeout: float = 60) -> int:
        """End the worker (its memory, GPU included, is freed when it exits); its exit code."""
        for fh in (self._to, self._from):
            try:
                fh.close()
            except OSError:
                pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(fd_in: int, fd_out: int) -> int:
    with os.fdopen(fd_in, "rb") as inp, os.fdopen(fd_out, "wb") as out:
        while True:
            try:
                fn, args, kwargs = pickle.load(inp)
            except EOFError:               # the loop closed the pipe (or died): done
                return 0
            try:
                result = (True, fn(*args, **kwargs))
            except BaseException:  # noqa: BLE001 - reported to the parent verbatim
                result = (False, traceback.format_exc())
            pickle.dump(result, out)
            out.flush()


# A call's temp folder holds a POSIX record lock (lockf) for as long as the call runs; the kernel
# drops it when the loop dies, so a folder whose lock can be taken was left by a killed loop and is
# removed. Not flock: a flock is shared with a forked child until it execs, so a loop killed while
# starting a call's child left a folder that looked live. A record lock is never inherited, but the
# owner loses it on closing any descriptor of the file, so the loop's own folders are never probed.
_CALL_PREFIX = "synthloop-call-"
_OURS: set[Path] = set()


def _locked_call_dir() -> tuple[Path, Any]:
    """A new call folder, already locked when it appears under its final name."""
    new = Path(tempfile.mkdtemp(prefix="synthloop-new-"))
    lock = open(new / ".lock", "w")
    fcntl.lockf(lock, fcntl.LOCK_EX)
    final = new.with_name(_CALL_PREFIX + new.name[len("synthloop-new-"):])
    os.rename(new, final)
    _OURS.add(final)
    return final, lock


def _release_call_dir(folder: Path, lock) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    lock.close()
    _OURS.discard(folder)


def _remove_abandoned_call_dirs() -> None:
    for folder in Path(tempfile.gettempdir()).glob(_CALL_PREFIX + "*"):
        if folder in _OURS:
            continue
        try:
            with open(folder / ".lock", "a") as fh:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
    if sys.argv[1] == "--serve":
        sys.exit(_serve(int(sys.argv[2]), int(sys.argv[3])))
    sys.exit(_main(sys.argv[1], sys.argv[2]))
