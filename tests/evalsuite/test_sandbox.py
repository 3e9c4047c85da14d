"""Model-written code runs in a child process; bad programs are failures, the caller survives."""
import os

from evalsuite.sandbox import run_code


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
