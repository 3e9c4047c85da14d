import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loop import isolate


def test_call_returns_value_from_a_child_process():
    pid = isolate.call(os.getpid)
    assert isinstance(pid, int) and pid != os.getpid()


def test_call_reports_the_child_exception():
    with pytest.raises(isolate.StageFailed, match=r"(?s)posix\.listdir failed.*FileNotFoundError"):
        isolate.call(os.listdir, "/definitely/not/here")


def _running(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/status").read().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a killed orphan may linger as a zombie until something reaps it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_stage_child_dies_with_its_parent():
    """What isolate.call and train_subprocess start is killed when the loop process dies."""
    parent = ("import subprocess, sys\n"
              "from loop.isolate import die_with_parent\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=die_with_parent,\n"
              "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
              "print(p.pid, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    pid = int(out.stdout)
    deadline = time.time() + 20
    while _running(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _running(pid)
