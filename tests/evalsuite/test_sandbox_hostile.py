"""Hostile programs through ``run_code``: the world outside the box is unchanged, the caller survives.

Every attack runs under each confined mechanism this machine has, forced and with the in-process
guards OFF (the kernel alone must hold), and once more through the default path callers use
(``auto`` with the guards on). A mechanism the machine lacks is skipped with the reason.
"""
from __future__ import annotations

import ast
import hashlib
import os
import select
import socket
import time
import tracemalloc
from pathlib import Path

import pytest

from evalsuite import sandbox
from evalsuite import sandbox_mechanisms as mech

REPO = Path(__file__).resolve().parents[2]
CANARY = "canary-7f3d1c-do-not-leak"


def _box_param(mechanism: str):
    why = mech.probe(mechanism)
    return pytest.param(mechanism, marks=pytest.mark.skipif(why is not None, reason=f"{mechanism}: {why}"),
                        id=mechanism)


BOXES = [_box_param("bwrap"), _box_param("unshare"),
         pytest.param("default", id="default", marks=pytest.mark.skipif(
             all(mech.probe(m) for m in mech.CONFINED), reason="no confined mechanism works here"))]


@pytest.fixture(params=BOXES)
def box(request):
    """run(program, **limits) under one mechanism; 'default' = what metrics/verify get."""
    def run(program: str, timeout_s: float = 5, memory_mb: int = 256, max_output_chars: int = 4000):
        if request.param == "default":
            return sandbox.run_code(program, timeout_s=timeout_s, memory_mb=memory_mb,
                                    max_output_chars=max_output_chars)
        return sandbox.run_code(program, timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars,
                                mechanism=request.param, guards=False)
    run.mechanism = request.param
    return run


def _make_world(root: Path) -> Path:
    (root / "victim.txt").write_text("original")
    (root / "sub").mkdir()
    (root / "sub" / "keep.txt").write_text("keep")
    (root / "home" / ".ssh").mkdir(parents=True)
    (root / "home" / ".ssh" / "id_rsa").write_text(CANARY)
    return root


def _fingerprint(root: Path) -> dict:
    """Everything about the files under root but their access times."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        body = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                         st.st_nlink, body)
    return out


@pytest.fixture
def world(tmp_path):
    """Files outside the box; after the test they must be exactly as before."""
    before = _fingerprint(_make_world(tmp_path))
    yield tmp_path
    assert _fingerprint(tmp_path) == before, "the world outside the box changed"


def _program(template: str, root: Path) -> str:
    """An attack on the world under root: V victim file, N new path, D directory, K file in D,
    H the home's secret, P a project file, cmd a shell command that overwrites V."""
    v = root / "victim.txt"
    return template.format(V=str(v), N=str(root / "new"), D=str(root / "sub"), K=str(root / "sub" / "keep.txt"),
                           H=str(root / "home" / ".ssh" / "id_rsa"), P=str(REPO / "pyproject.toml"),
                           cmd=f"echo pwned > {v}")


FILE_ATTACKS = {
    "open-create": "open({N!r}, 'w').write('x')",
    "open-truncate": "open({V!r}, 'w').write('pwned')",
    "open-append": "open({V!r}, 'a').write('pwned')",
    "os.open-create": "import os\nfd = os.open({N!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
    "os.open-truncate": "import os\nos.open({V!r}, os.O_WRONLY | os.O_TRUNC)",
    "pathlib-write": "import pathlib\npathlib.Path({N!r}).write_text('x')",
    "pathlib-unlink": "import pathlib\npathlib.Path({V!r}).unlink()",
    "pathlib-chmod": "import pathlib\npathlib.Path({V!r}).chmod(0o777)",
    "shutil-rmtree": "import shutil\nshutil.rmtree({D!r})",
    "shutil-move": "import shutil\nshutil.move({V!r}, {N!r})",
    "shutil-copy-over": "import shutil, sys\nshutil.copyfile(sys.executable, {V!r})",
    "os.remove": "import os\nos.remove({V!r})",
    "os.unlink": "import os\nos.unlink({K!r})",
    "os.rmdir": "import os\nos.remove({K!r})\nos.rmdir({D!r})",
    "os.rename": "import os\nos.rename({V!r}, {N!r})",
    "os.replace": "import os\nos.replace({K!r}, {V!r})",
    "os.chmod": "import os\nos.chmod({V!r}, 0o777)",
    "os.chown": "import os\nos.chown({V!r}, 12345, 12345)",
    "os.truncate": "import os\nos.truncate({V!r}, 0)",
    "os.mkdir": "import os\nos.mkdir({N!r})",
    "os.symlink": "import os\nos.symlink('/etc/passwd', {N!r})",
    "os.link": "import os\nos.link({V!r}, {N!r})",
    "os.utime": "import os\nos.utime({V!r}, (0, 0))",
}


@pytest.mark.parametrize("attack", list(FILE_ATTACKS))
def test_files_outside_the_box_cannot_change(box, world, attack):
    r = box(_program(FILE_ATTACKS[attack], world))
    assert r.status == "failed" and r.returncode == 1, (r.status, r.stderr[-500:])
    assert "Error" in r.stderr  # the program was told no (ENOENT / EROFS / EPERM), not killed


SECRETS = {
    "home-canary": "print(open({H!r}).read())",
    "expanduser": "import os\nprint(open(os.path.expanduser('~/.ssh/id_rsa')).read())",
    "environment": "import os\nprint(os.environ['SL_TEST_SECRET'])",
    "project-file": "print(open({P!r}).read())",
    # everything visible but the read-only system and Python trees, which the box binds as they are
    "walk-for-it": ("import os, sys\nskip = ('/proc', '/usr', '/sys', sys.prefix, sys.base_prefix)\n"
                    "for d, subdirs, files in os.walk('/'):\n"
                    "    subdirs[:] = [s for s in subdirs if not os.path.join(d, s).startswith(skip)]\n"
                    "    if 'id_rsa' in files: print(open(os.path.join(d, 'id_rsa')).read())\n"
                    "raise SystemExit('nothing found')"),
}


@pytest.mark.parametrize("attack", list(SECRETS))
def test_secrets_outside_the_box_cannot_be_read(box, world, attack, monkeypatch):
    monkeypatch.setenv("SL_TEST_SECRET", CANARY)
    monkeypatch.setenv("HOME", str(world / "home"))
    r = box(_program(SECRETS[attack], world))
    assert CANARY not in r.stdout + r.stderr and "[project]" not in r.stdout
    assert r.status == "failed"


def _listen(root: Path) -> tuple[dict, tuple]:
    """A TCP, a unix-path and an abstract unix socket listening on the host."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(root / "s.sock"))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0sl-sandbox-test-{os.getpid()}-{id(root)}")
    socks = (tcp, unix, abstract)
    for s in socks:
        s.listen(8)
    return {"port": tcp.getsockname()[1], "unix": str(root / "s.sock"), "abstract": abstract.getsockname()}, socks


def _reached(socks) -> bool:
    """After the program ended, a connection that got through waits in a backlog."""
    readable, _, _ = select.select(socks, [], [], 0.1)
    for s in socks:
        s.close()
    return bool(readable)


@pytest.fixture
def listeners(tmp_path):
    where, socks = _listen(tmp_path)
    yield where
    assert not _reached(socks), "a connection from the box reached the host"


SOCKET_ATTACKS = {
    "socket-tcp": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'x')",
    "_socket-tcp": "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))",
    "unix-path": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({unix!r})",
    "unix-abstract": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({abstract!r})",
    "via-child": ("import subprocess, sys\nsubprocess.run([sys.executable, '-c', \"import socket; "
                  "socket.create_connection(('127.0.0.1', {port}), timeout=2)\"], check=True)"),
}


@pytest.mark.parametrize("attack", list(SOCKET_ATTACKS))
def test_no_network_reaches_the_host(box, listeners, attack):
    r = box(SOCKET_ATTACKS[attack].format(**listeners))
    assert r.status == "failed", r.stderr[-500:]


def _box_processes() -> set[int]:
    """Host PIDs of sandboxed programs (ours and any other run's), by command line."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"program.py" in cmd and (b"/box/" in cmd or b"sl-sandbox-" in cmd) or b"sandbox_init.py" in cmd:
            found.add(int(pid))
    return found


PROCESS_ATTACKS = {
    "subprocess": "import subprocess\nsubprocess.run(['/bin/sh', '-c', {cmd!r}], check=True)",
    "os.system": "import os\nassert os.system({cmd!r}) == 0",
    "os.fork": ("import os\npid = os.fork()\nif pid == 0:\n    open({V!r}, 'w').write('pwned')\n    os._exit(0)\n"
                "os.waitpid(pid, 0)"),
    "os.posix_spawn": "import os\nos.waitpid(os.posix_spawn('/bin/sh', ['sh', '-c', {cmd!r}], {{}}), 0)",
    # the in-process guard replaced fork_exec; a fresh import brings the C function back, and
    # the call is rebuilt from subprocess's own source so that it fits this Python version
    "_posixsubprocess": (
        "import inspect, os, re, subprocess, sys\nsys.modules.pop('_posixsubprocess', None)\n"
        "import _posixsubprocess\nsrc = inspect.getsource(subprocess)\n"
        "m = re.search(r'self\\.pid = (?:_posixsubprocess\\.fork_exec|_fork_exec)(\\(.*?\\))\\n'\n"
        "              r'\\s*self\\._child_created', src, re.S)\n"
        "errpipe_read, errpipe_write = os.pipe()\n"
        "names = dict(args=[b'/bin/sh', b'-c', {cmd!r}.encode()], executable_list=[b'/bin/sh'], close_fds=True,\n"
        "    fds_to_keep=[errpipe_write], cwd=None, env_list=None, p2cread=-1, p2cwrite=-1, c2pread=-1,\n"
        "    c2pwrite=-1, errread=-1, errwrite=-1, errpipe_read=errpipe_read, errpipe_write=errpipe_write,\n"
        "    restore_signals=True, start_new_session=False, process_group=-1, gid=None, gids=None,\n"
        "    uid=None, umask=-1, preexec_fn=None, _USE_VFORK=False, allow_vfork=False, pgid_to_set=-1,\n"
        "    extra_groups=None, call_setsid=False, child_umask=-1, F=_posixsubprocess.fork_exec)\n"
        "pid = eval('F' + m.group(1), {{'tuple': tuple, 'sorted': sorted, 'map': map, 'int': int}}, names)\n"
        "os.waitpid(pid, 0)"),
    "multiprocessing": ("import multiprocessing as mp\ndef f():\n    open({V!r}, 'w').write('pwned')\n"
                        "if __name__ == '__main__':\n    p = mp.Process(target=f)\n    p.start()\n    p.join()\n"
                        "    assert p.exitcode == 0"),
}


@pytest.mark.parametrize("attack", list(PROCESS_ATTACKS))
def test_no_process_starts(box, world, attack):
    before = _box_processes()
    r = box(_program(PROCESS_ATTACKS[attack], world))
    assert r.status == "failed", r.stderr[-800:]
    assert not _box_processes() - before


def test_fork_bomb_is_contained(box):
    before = _box_processes()
    t0 = time.monotonic()
    r = box("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout_s=1)
    assert r.status == "timeout" and time.monotonic() - t0 < 6
    deadline = time.monotonic() + 3
    while _box_processes() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _box_processes() - before, "stray processes left on the host"


LIMITS = {
    "memory-loop": ("blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024 * 1024))", "memory"),
    "memory-one-shot": ("x = b'x' * (4 * 1024 ** 3)", "memory"),
    "infinite-loop": ("while True:\n    pass", "timeout"),
    "busy-threads": ("import threading\ndef spin():\n    while True: pass\n"
                     "for _ in range(4): threading.Thread(target=spin).start()", "timeout"),
    "ignores-sigterm": ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
                        "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)", "timeout"),
    "disk-filler": ("chunk = b'x' * (1 << 20)\nfor i in range(10 ** 6):\n"
                    "    with open(f'fill{{i}}', 'wb') as f:\n        f.write(chunk * 8)", "failed"),
}


@pytest.mark.parametrize("attack", list(LIMITS))
def test_limits_end_the_program_with_a_useful_status(box, attack):
    program, status = LIMITS[attack]
    timeout_s = 1.0 if status == "timeout" else 10.0  # the others end by themselves, fast
    t0 = time.monotonic()
    r = box(program.format(), timeout_s=timeout_s)
    assert r.status == status and not r.passed, (r.status, r.returncode, r.stderr[-500:])
    assert time.monotonic() - t0 < timeout_s + 5


def test_huge_output_is_truncated_without_memory_blowup(box):
    tracemalloc.start()
    try:
        r = box("import sys\nline = 'y' * 1023 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n"
                "    sys.stderr.write(line)", timeout_s=5, max_output_chars=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0 < len(r.stdout) <= 1000 and len(r.stderr) <= 1000 and set(r.stdout) <= {"y", "\n"}
    assert r.status == "failed"  # stopped at the output limit (File too large), not at the timeout
    assert peak < 8 * 1024 * 1024, f"the caller held {peak} bytes"


def test_the_box_itself_works(box):
    """What a normal program needs still works: its own directory, threads, stdlib, clean env."""
    r = box("import os, threading, json, tempfile\nopen('scratch.txt', 'w').write('ok')\n"
            "assert open('scratch.txt').read() == 'ok'\n"
            "with tempfile.NamedTemporaryFile() as f: f.write(b'ok')\n"
            "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
            "print(json.dumps(sorted(os.environ)))")
    assert r.passed, r.stderr
    assert "thread" in r.stdout and "SL_TEST" not in r.stdout
    if box.mechanism != "default":
        assert r.mechanism == box.mechanism


@pytest.mark.parametrize("mechanism", [m for m in BOXES if m.id != "default"])
def test_no_capabilities_filter_on_and_own_pid_namespace(mechanism):
    r = sandbox.run_code("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                         "assert libc.unshare(0x10000000) != 0  # CLONE_NEWUSER: no fresh capabilities\n"
                         "assert libc.mount(b'none', b'/usr', b'tmpfs', 0, None) != 0\n"
                         "assert libc.mount(None, b'/', None, 32 | 4096, None) != 0  # remount read-write\n"
                         "st = open('/proc/self/status').read()\nprint(st)\n"
                         "print('PIDS', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
                         mechanism=mechanism, guards=False, timeout_s=10)
    assert r.passed, r.stderr
    status = dict(line.split(":\t", 1) for line in r.stdout.splitlines() if ":\t" in line)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap], 16) == 0, cap
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    pids = ast.literal_eval(r.stdout.split("PIDS", 1)[1].strip())
    assert max(pids) < 10  # only the box's own few processes are visible


UNCONFINED_SECRETS = ("home-canary", "project-file")


@pytest.mark.parametrize("attack", [*FILE_ATTACKS, *PROCESS_ATTACKS, *UNCONFINED_SECRETS])
def test_each_attack_does_harm_when_unconfined(tmp_path, attack):
    """The catalogue is real: on the host, without guards, each attack changes the world."""
    root = _make_world(tmp_path)
    before = _fingerprint(root)
    program = _program({**FILE_ATTACKS, **PROCESS_ATTACKS, **SECRETS}[attack], root)
    r = sandbox.run_code(program, timeout_s=10, mechanism="unsafe-host", guards=False)
    if attack in UNCONFINED_SECRETS:
        assert CANARY in r.stdout or "[project]" in r.stdout
    else:
        assert _fingerprint(root) != before, r.stderr[-800:]


@pytest.mark.parametrize("attack", list(SOCKET_ATTACKS))
def test_each_socket_attack_connects_when_unconfined(tmp_path, attack):
    where, socks = _listen(tmp_path)
    sandbox.run_code(SOCKET_ATTACKS[attack].format(**where), timeout_s=10, mechanism="unsafe-host", guards=False)
    assert _reached(socks)
