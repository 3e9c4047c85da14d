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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_folder_left_by_a_loop_killed_while_forking_a_child_is_removed(tmp_path, monkeypatch):
    """A loop killed between fork and exec of a call's child leaves that child holding the loop's
    descriptors for a while; the folder must not look live because of it (the CI flake of stop 20)."""
    caller = ("import os, signal, time\n"
              "from loop import isolate\n"
              "folder, lock = isolate._locked_call_dir()\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    null = os.open(os.devnull, os.O_WRONLY)\n"
              "    os.dup2(null, 1); os.dup2(null, 2)\n"  # keeps the lock's descriptor, not the pipes
              "    time.sleep(30)\n"
              "    os._exit(0)\n"
              "print(pid, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", caller], cwd=Path(__file__).resolve().parents[2], env=env,
                         capture_output=True, text=True)
    child = int(out.stdout)
    try:
        assert out.returncode == -9 and _running(child) and len(_call_dirs(tmp_path)) == 1
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        isolate._remove_abandoned_call_dirs()
        assert not _call_dirs(tmp_path)
    finally:
        os.kill(child, 9)


def test_a_child_whose_parent_died_before_the_death_signal_was_armed_exits():
    probe = "from loop.isolate import die_with_parent\ndie_with_parent(1)\nprint('alive')\n"
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True)
    if sys.platform.startswith("linux"):
        assert out.returncode == 137 and "alive" not in out.stdout
    else:
        assert out.returncode == 0


def test_a_worker_keeps_its_state_between_calls_and_reports_failures():
    with isolate.Worker() as w:
        pid = w.call(os.getpid)
        assert pid != os.getpid() and w.call(os.getpid) == pid       # the same process, call after call
        with pytest.raises(isolate.StageFailed, match="ZeroDivisionError"):
            w.call(divmod, 1, 0)
        assert w.call(os.getpid) == pid                               # a failed call does not end it
    assert w.proc.returncode == 0                                     # closed: the process is gone


def test_a_worker_that_dies_is_a_stage_failure():
    w = isolate.Worker()
    with pytest.raises(isolate.StageFailed, match="exited with code 3"):
        w.call(os._exit, 3)
    w.close()


@pytest.mark.parametrize("own_process", [False, True], ids=["in-process", "worker"])
def test_the_rounds_teacher_loads_once_for_its_stages(own_process, tmp_path, monkeypatch):
    from loop import run
    from loop.config import load_config
    from smoke import teacher_probe

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(run.TeacherHost, "own_process", lambda self: own_process)
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/smoke.yaml",
                      ["teacher.backend=fake", "teacher.model=builtin"])
    with run.TeacherHost(cfg) as host:
        first, second = host.run(teacher_probe, tmp_path), host.run(teacher_probe, tmp_path)
        assert (first["pid"] == os.getpid()) is not own_process
        assert (first["pid"], first["llm"]) == (second["pid"], second["llm"])    # one teacher, both stages
        assert first["cost"]["requests"] == second["cost"]["requests"] == 1      # each stage's own usage
        worker = host.worker
    assert not run._LOADED                                                       # released with the round
    if own_process:
        assert worker.proc.returncode == 0                                       # its memory went with it
