"""``python -m loop`` with pauses in the fast stages, for test_crash.py.

With the scripted teacher, tag, diagnose, synthesize and mix finish in milliseconds: a kill could
not be aimed inside them. This runs the very same CLI with a pause (``SYNTHLOOP_TEST_PAUSE`` s,
default 0.4) before and after each of those stage functions (and retrieve and the control arm's
data) and before every teacher call, so a kill lands before, between or after their reads and
writes. Only sleeps are added: the outputs are the uninterrupted CLI's.

    python tests/loop/crash_driver.py run --config configs/smoke.yaml ...   (cwd: the repository)
"""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _paused(fn, pause: float, after: bool = True):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        time.sleep(pause)
        out = fn(*args, **kwargs)
        if after:
            time.sleep(pause)
        return out
    return wrapper


def main() -> int:
    sys.path.insert(0, str(REPO))      # this checkout's packages, as `python -m loop` from REPO gets them
    pause = float(os.environ.get("SYNTHLOOP_TEST_PAUSE", "0.4"))
    import loop.run
    from loop.__main__ import main as loop_main
    from synth.llm.fake import FakeBackend

    for name in ("tag_stage", "diagnose_stage", "synthesize_stage", "retrieve_stage", "mix_stage", "control_data_stage"):
        setattr(loop.run, name, _paused(getattr(loop.run, name), pause))   # looked up when the stage runs
    FakeBackend.generate = _paused(FakeBackend.generate, pause / 2, after=False)
    return loop_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
