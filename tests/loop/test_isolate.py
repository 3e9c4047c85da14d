import os
import subprocess
import sys
import tempfile
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


def _call_dirs(tmp: Path) -> set[Path]:
    return set(tmp.glob("synthloop-call-*"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_killed_callers_temp_folder_is_removed_by_the_next_call(tmp_path, monkeypatch):
    """isolate.call passes arguments and result through a temp folder; a loop killed during a call
    leaves it behind. The next call removes such folders, and only those (a running call's stays)."""
    caller = "import time\nfrom loop import isolate\nisolate.call(time.sleep, 60)\n"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    repo = Path(__file__).resolve().parents[2]
    running = subprocess.Popen([sys.executable, "-c", caller], cwd=repo, env=env)
    killed = None
    try:
        deadline = time.time() + 60
        while not _call_dirs(tmp_path):
            assert time.time() < deadline and running.poll() is None
            time.sleep(0.05)
        live = _call_dirs(tmp_path)
        killed = subprocess.Popen([sys.executable, "-c", caller], cwd=repo, env=env)
        while len(_call_dirs(tmp_path)) < 2:
            assert time.time() < deadline and killed.poll() is None
            time.sleep(0.05)
        killed.kill()
        killed.wait()
        assert len(_call_dirs(tmp_path)) == 2
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        assert isinstance(isolate.call(os.getpid), int)
        assert _call_dirs(tmp_path) == live     # the abandoned one is gone, the running call's is kept
    finally:
        running.kill()
        if killed is not None:
            killed.kill()
