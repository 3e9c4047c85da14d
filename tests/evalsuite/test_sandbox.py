"""Model-written code runs in a child process; bad programs are failures, the caller survives."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalsuite.sandbox import run_code

REPO = Path(__file__).resolve().parents[2]


def test_passing_and_failing_programs():
    ok = run_code("def f(x):\n    return x + 1\nassert f(1) == 2\nprint('fine')", timeout_s=5)
    assert ok.passed and ok.status == "passed" and "fine" in ok.stdout
    bad = run_code("assert 1 + 1 == 3", timeout_s=5)
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr
    syntax = run_code("def f(:\n  pass", timeout_s=5)
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr


def test_infinite_loop_is_a_timeout():
    r = run_code("while True:\n    pass", timeout_s=1.5)
    assert r.status == "timeout" and not r.passed


def test_memory_hog_is_a_failure():
    r = run_code("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))", timeout_s=10, memory_mb=256)
    assert r.status == "memory" and not r.passed


def test_network_and_processes_are_refused():
    sock = run_code("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)", timeout_s=5)
    assert not sock.passed and "not allowed" in sock.stderr
    raw = run_code("import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 0))", timeout_s=5)
    assert not raw.passed
    sub = run_code("import subprocess\nsubprocess.run(['true'])", timeout_s=5)
    assert not sub.passed and "subprocess.Popen" in sub.stderr


def test_writes_stay_in_the_private_dir(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run_code(f"open({str(target)!r}, 'w').write('x')", timeout_s=5)
    assert not r.passed and not target.exists()
    local = run_code("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'", timeout_s=5)
    assert local.passed
    assert os.getcwd() != "/"  # the caller's working directory is untouched


def _program_pid(marker: str) -> int | None:
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in argv and "program.py" in argv and state != "Z":   # a zombie runs nothing
            return int(name)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_program_dies_with_the_process_that_ran_it(tmp_path):
    """The wall-clock limit is the caller's: when the caller is killed (``kill -9`` of the loop or
    its eval process), its sandboxed program must die too, not run on as an orphan."""
    caller = "from evalsuite.sandbox import run_code\nrun_code('import time\\ntime.sleep(120)', timeout_s=120)\n"
    proc = subprocess.Popen([sys.executable, "-c", caller], cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        deadline = time.time() + 30
        while (pid := _program_pid(str(tmp_path))) is None:
            assert proc.poll() is None and time.time() < deadline, "the sandboxed program never started"
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        deadline = time.time() + 10
        while _program_pid(str(tmp_path)) == pid and time.time() < deadline:
            time.sleep(0.05)
        assert _program_pid(str(tmp_path)) is None, "the sandboxed program outlived the process that ran it"
    finally:
        proc.kill()
        if (pid := _program_pid(str(tmp_path))) is not None:
            os.kill(pid, 9)
