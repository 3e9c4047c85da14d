"""Hostile programs through ``run_code``: the world outside the box is unchanged, the caller survives.

Every attack runs under each confined mechanism this machine has, forced and with the in-process
guards OFF (the kernel alone must hold), and once more through the default path callers use
(``auto`` with the guards on). A mechanism the machine lacks is skipped with the reason, except
in CI (``CI=true``), where no working mechanism at all fails the catalogue in one line instead
of letting it pass by skipping.

Every test that runs a program gets the same checks afterwards (the ``outside`` fixture): the
files outside the box are exactly as before; no process the box started is alive (the test
process is a child subreaper meanwhile, so an escaped orphan would be handed to it and seen) and
a host process the box could try to kill is alive; no connection reached the host's listening
sockets; the caller is intact (cwd, session, open files, rlimits, signal handlers).
"""
from __future__ import annotations

import ast
import contextlib
import ctypes
import errno
import hashlib
import os
import resource
import select
import signal
import socket
import subprocess
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from evalsuite import sandbox
from evalsuite import sandbox_mechanisms as mech

REPO = Path(__file__).resolve().parents[2]
CANARY = "canary-7f3d1c-do-not-leak"
IN_CI = os.environ.get("CI", "").lower() == "true"
NO_MECHANISM = ("; ".join(f"{m}: {mech.probe(m)}" for m in mech.CONFINED)
                if all(mech.probe(m) for m in mech.CONFINED) else "")


def _box_param(mechanism: str):
    why = mech.probe(mechanism)
    return pytest.param(mechanism, marks=pytest.mark.skipif(why is not None, reason=f"{mechanism}: {why}"),
                        id=mechanism)


# in CI "default" never skips: with no mechanism at all, every test using it fails (one line)
BOXES = [_box_param("bwrap"), _box_param("unshare"),
         pytest.param("default", id="default", marks=pytest.mark.skipif(
             bool(NO_MECHANISM) and not IN_CI, reason="no confined mechanism works here"))]


def _fail_in_ci_without_a_mechanism() -> None:
    if NO_MECHANISM and IN_CI:
        pytest.fail(f"CI: no kernel mechanism confines model code here ({NO_MECHANISM}); the hostile "
                    "catalogue cannot run: install bubblewrap (.ci/run tries apt-get; see its output)", pytrace=False)


# ------------------------------------------------------------------ the world outside

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

def _program(template: str, root: Path) -> str:
    """An attack on the world under root: V victim file, N new path, D directory, K file in D,
    H the home's secret, P a project file, cmd a shell command that overwrites V."""
    v = root / "victim.txt"
    return template.format(V=str(v), N=str(root / "new"), D=str(root / "sub"), K=str(root / "sub" / "keep.txt"),
                           H=str(root / "home" / ".ssh" / "id_rsa"), P=str(REPO / "pyproject.toml"),
                           cmd=f"echo pwned > {v}")

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
    """After the program ended, a connection that got through already waits in a backlog."""
    readable, _, _ = select.select(socks, [], [], 0.01)
    return bool(readable)


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_CHILD_SUBREAPER = 36


def _descendants() -> dict[int, tuple[int, str]]:
    """This process's descendants: pid -> (start time, state), from /proc."""
    procs, children = {}, {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        procs[int(name)] = (int(rest[19]), rest[0])
        children.setdefault(int(rest[1]), []).append(int(name))
    out, stack = {}, list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        if pid in procs and pid not in out:
            out[pid] = procs[pid]
            stack.extend(children.get(pid, []))
    return out


def _caller_state() -> dict:
    return {"cwd": os.getcwd(), "pgrp": os.getpgrp(), "sid": os.getsid(0),
            "fds": sorted(os.listdir("/proc/self/fd")),
            "rlimits": {n: resource.getrlimit(getattr(resource, n)) for n in
                        ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE")},
            "signals": {s.name: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD,
                                                               signal.SIGXCPU, signal.SIGPIPE)}}


@dataclass
class Outside:
    root: Path          # the files the attacks aim at (see _program)
    where: dict         # the host's listening sockets: port, unix, abstract
    sentinel: int       # pid of a host process the box must not be able to kill


@contextlib.contextmanager
def _outside_unchanged(tmp_path: Path):
    """The world outside the box; on leaving: files, processes, sockets and caller unchanged."""
    (tmp_path / "world").mkdir()
    root = _make_world(tmp_path / "world")
    files = _fingerprint(root)
    where, socks = _listen(tmp_path)
    sentinel = subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL, start_new_session=True)
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)   # an orphan of the box would become our child
    before, caller = set(_descendants()), _caller_state()
    try:
        yield Outside(root, where, sentinel.pid)
        assert _fingerprint(root) == files, "the world outside the box changed"
        assert not _reached(socks), "a connection from the box reached the host"
        assert sentinel.poll() is None, f"the host process {sentinel.pid} was killed ({sentinel.returncode})"
        deadline = time.monotonic() + 3      # a killed box's processes take a moment to go
        while (new := sorted(p for p, (_, st) in _descendants().items() if p not in before and st != "Z")) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not new, f"processes the box started are still alive on the host: {new}"
        assert _caller_state() == caller, "the caller's own state changed"
    finally:
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid, (_, st) in _descendants().items():   # what was handed to us meanwhile: end and reap it
            if pid not in before:
                try:
                    if st != "Z":
                        os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        for s in socks:
            s.close()
        sentinel.kill()
        sentinel.wait()


@pytest.fixture
def outside(tmp_path):
    with _outside_unchanged(tmp_path) as world:
        yield world


@pytest.fixture(params=BOXES)
def box(request):
    """run(program, **limits) under one mechanism ('default': what metrics/verify get), with the
    ``outside`` checks after the test; ``run.outside`` is the world to aim at."""
    _fail_in_ci_without_a_mechanism()
    outside = request.getfixturevalue("outside")

    def run(program: str, timeout_s: float = 5, memory_mb: int = 256, max_output_chars: int = 4000):
        if request.param == "default":
            return sandbox.run_code(program, timeout_s=timeout_s, memory_mb=memory_mb,
                                    max_output_chars=max_output_chars)
        return sandbox.run_code(program, timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars,
                                mechanism=request.param, guards=False)
    run.mechanism = request.param
    run.outside = outside
    return run


# ------------------------------------------------------------------ the attacks

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
def test_files_outside_the_box_cannot_change(box, attack):
    r = box(_program(FILE_ATTACKS[attack], box.outside.root))
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
def test_secrets_outside_the_box_cannot_be_read(box, attack, monkeypatch):
    monkeypatch.setenv("SL_TEST_SECRET", CANARY)
    monkeypatch.setenv("HOME", str(box.outside.root / "home"))
    r = box(_program(SECRETS[attack], box.outside.root))
    assert CANARY not in r.stdout + r.stderr and "[project]" not in r.stdout
    assert r.status == "failed"


SOCKET_ATTACKS = {
    "socket-tcp": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'x')",
    "_socket-tcp": "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))",
    "unix-path": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({unix!r})",
    "unix-abstract": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({abstract!r})",
    "via-child": ("import subprocess, sys\nsubprocess.run([sys.executable, '-c', \"import socket; "
                  "socket.create_connection(('127.0.0.1', {port}), timeout=2)\"], check=True)"),
}


@pytest.mark.parametrize("attack", list(SOCKET_ATTACKS))
def test_no_network_reaches_the_host(box, attack):
    r = box(SOCKET_ATTACKS[attack].format(**box.outside.where))
    assert r.status == "failed", r.stderr[-500:]


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
def test_no_process_starts(box, attack):
    r = box(_program(PROCESS_ATTACKS[attack], box.outside.root))
    assert r.status == "failed", r.stderr[-800:]


SIGNAL_ATTACKS = {
    "kill-host-process": "import os, signal\nos.kill({S}, signal.SIGKILL)",
    "kill-caller": "import os, signal\nos.kill({C}, signal.SIGTERM)",
    "kill-everyone": "import os, signal\nos.kill(-1, signal.SIGKILL)\nraise SystemExit(1)",
}


@pytest.mark.parametrize("attack", list(SIGNAL_ATTACKS))
def test_host_processes_cannot_be_signalled(box, attack):
    r = box(SIGNAL_ATTACKS[attack].format(S=box.outside.sentinel, C=os.getpid()))
    assert r.status == "failed", r.stderr[-500:]      # the sentinel and the caller: checked by ``outside``


def test_fork_bomb_is_contained(box):
    t0 = time.monotonic()
    r = box("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout_s=1)
    assert r.status == "timeout" and time.monotonic() - t0 < 6   # no stray process: checked by ``outside``


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


def test_open_files_are_limited(box):
    """RLIMIT_NOFILE holds inside the box: opening more than NOFILE files fails with EMFILE."""
    r = box("import os, resource\nprint('LIMIT', resource.getrlimit(resource.RLIMIT_NOFILE))\n"
            "open('f', 'w').close()\nfds = []\ntry:\n    for _ in range(4 * %d):\n        fds.append(os.open('f', os.O_RDONLY))\n"
            "except OSError as e:\n    print('OPENED', len(fds), e.errno)\n    raise" % sandbox.NOFILE)
    assert r.status == "failed", r.stderr[-500:]
    assert f"LIMIT ({sandbox.NOFILE}, {sandbox.NOFILE})" in r.stdout
    opened, err = r.stdout.split("OPENED", 1)[1].split()
    assert int(err) == errno.EMFILE and int(opened) < sandbox.NOFILE


def test_the_cpu_limit_ends_a_program_the_wall_clock_would_not(outside, monkeypatch):
    """RLIMIT_CPU (timeout + 2 s) backs up the wall clock: with the wall clock pushed 20 s past
    it (as if the kill of the box were lost), a CPU-bound program is killed by SIGXCPU."""
    _fail_in_ci_without_a_mechanism()
    if NO_MECHANISM:
        pytest.skip("no confined mechanism works here")
    wall = sandbox._ended_within
    monkeypatch.setattr(sandbox, "_ended_within", lambda proc, timeout_s: wall(proc, timeout_s + 20))
    t0 = time.monotonic()
    r = sandbox.run_code("while True:\n    pass", timeout_s=1)      # CPU limit: 3 s
    took = time.monotonic() - t0
    assert r.returncode == -signal.SIGXCPU and r.status == "timeout", (r.returncode, r.stderr[-300:])
    assert 2.5 < took < 20, took


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
def test_no_capabilities_filter_on_and_own_pid_namespace(mechanism, outside):
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


# ------------------------------------------------------------------ the catalogue is real
# (these run the attacks on the host on purpose: the world does change)

UNCONFINED_SECRETS = ("home-canary", "project-file")


@pytest.mark.parametrize("attack", [*FILE_ATTACKS, *PROCESS_ATTACKS, *UNCONFINED_SECRETS])
def test_each_attack_does_harm_when_unconfined(tmp_path, attack):
    """On the host, without guards, each attack changes the world."""
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
    for s in socks:
        s.close()


def test_the_signal_attack_kills_when_unconfined():
    sentinel = subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        sandbox.run_code(SIGNAL_ATTACKS["kill-host-process"].format(S=sentinel.pid, C=0), timeout_s=10,
                         mechanism="unsafe-host", guards=False)
        assert sentinel.wait(timeout=5) == -signal.SIGKILL
    finally:
        sentinel.kill()
        sentinel.wait()


UNCONFINED_HARM = {   # one per invariant the outside checks hold
    "files": ("open({V!r}, 'w').write('pwned')", "the world outside the box changed"),
    "sockets": ("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", "reached the host"),
    "a host process": ("import os, signal\nos.kill({S}, signal.SIGKILL)", "was killed"),
    "an orphan left": ("import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)",
                       "still alive on the host"),
}


@pytest.mark.parametrize("harm", list(UNCONFINED_HARM))
def test_the_outside_checks_see_each_harm(tmp_path, harm):
    """The checks every confined test gets fail when an unconfined program does that harm."""
    template, message = UNCONFINED_HARM[harm]
    with pytest.raises(AssertionError, match=message):
        with _outside_unchanged(tmp_path) as world:
            program = template.format(V=str(world.root / "victim.txt"), S=world.sentinel, **world.where)
            sandbox.run_code(program, timeout_s=10, mechanism="unsafe-host", guards=False)
