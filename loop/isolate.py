"""Run one stage function in a child process, so that a GPU stage frees its memory
when it ends and a crash in lm-eval/vLLM/training cannot take the loop down with it.

Arguments and the return value travel as pickles through files; the child dies with
its parent (PR_SET_PDEATHSIG), so a ``kill -9`` of the loop leaves no orphan writing
into a stage's temp folder.
"""
from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from train.launch import die_with_parent


class StageFailed(RuntimeError):
    pass


def call(target: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``module:function(*args, **kwargs)`` in a fresh Python process; return its result."""
    with tempfile.TemporaryDirectory(prefix="synthloop-call-") as td:
        inp, outp = Path(td) / "in.pkl", Path(td) / "out.pkl"
        inp.write_bytes(pickle.dumps((target, args, kwargs)))
        cmd = [sys.executable, "-m", "loop.isolate", str(inp), str(outp)]
        preexec = die_with_parent if sys.platform.startswith("linux") else None
        rc = subprocess.call(cmd, preexec_fn=preexec, env=os.environ.copy())
        if not outp.exists():
            raise StageFailed(f"{target} exited with code {rc} and no result (see the output above)")
        ok, value = pickle.loads(outp.read_bytes())
        if not ok:
            raise StageFailed(f"{target} failed in its subprocess:\n{value}")
        return value


def _main(inp: str, outp: str) -> int:
    target, args, kwargs = pickle.loads(Path(inp).read_bytes())
    module, _, func = target.partition(":")
    try:
        value = getattr(importlib.import_module(module), func)(*args, **kwargs)
        result = (True, value)
    except BaseException:  # noqa: BLE001 - reported to the parent verbatim
        result = (False, traceback.format_exc())
    Path(outp).write_bytes(pickle.dumps(result))
    return 0 if result[0] else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2]))
