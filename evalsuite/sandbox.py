"""Run untrusted Python (model-written code) in a child process, never in the caller.

Each program runs in its own temporary working directory under a wall-clock limit,
an address-space limit, a file-size limit and with no network:
* when ``unshare -rn`` works (unprivileged user + network namespaces), the child has
  no network interface at all;
* always, an audit hook installed before the program runs refuses sockets, new
  processes and writes outside the working directory (audit hooks cannot be removed
  by the code they watch).
A program that loops forever, eats memory, or tries to reach the network is reported
as a failure; the caller's process is never touched, and a killed caller takes its
running program with it (PR_SET_PDEATHSIG on Linux).
"""
from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Installed in the child before the program; PermissionError for anything outside the box.
_PRELUDE = r'''
import os as _os, sys as _sys
_ROOT = _os.path.realpath(_os.getcwd())
_DENY_PREFIX = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn",
                "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg", "pty.",
                "ctypes.dlopen", "shutil.rmtree", "os.chdir")
def _hook(event, args):
    if event.startswith(_DENY_PREFIX):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        if any(c in mode for c in "wax+"):
            path = _os.path.realpath(_os.fsdecode(args[0]))
            if not path.startswith(_ROOT + _os.sep):
                raise PermissionError(f"sandbox: writing {path} is not allowed")
_sys.addaudithook(_hook)
del _hook
'''


@dataclass
class SandboxResult:
    passed: bool        # exit status 0 within the limits
    status: str         # passed | failed | timeout | memory
    returncode: int | None
    stdout: str
    stderr: str


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """``unshare -rn`` if this kernel lets an unprivileged user drop the network, else nothing."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    try:
        ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return (exe, "-rn") if ok else ()


def _limits(memory_mb: int, timeout_s: float):
    prctl = _prctl()  # looked up here, in the parent: the child only calls it

    def apply() -> None:
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024,) * 2)
        # CPU limit backs up the wall clock for a child that ignores SIGKILL of its group
        cpu = int(timeout_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if prctl is not None:
            # the wall clock is the caller's: the program dies with it (PR_SET_PDEATHSIG = 1; kept
            # across the exec of `unshare -rn` and of Python), never running on as an orphan
            prctl(1, signal.SIGKILL)
    return apply


@functools.lru_cache(maxsize=1)
def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


def run_code(program: str, timeout_s: float = 10.0, memory_mb: int = 512,
             max_output_chars: int = 4000) -> SandboxResult:
    """Execute ``program`` as a script in a fresh sandboxed interpreter."""
    with tempfile.TemporaryDirectory(prefix="sl-sandbox-") as tmp:
        script = Path(tmp) / "program.py"
        script.write_text(_PRELUDE + "\n" + program, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        cmd = [*_unshare_prefix(), sys.executable, "-I", str(script)]
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_limits(memory_mb, timeout_s), start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            timed_out = True
    stdout = out.decode("utf-8", "replace")[-max_output_chars:]
    stderr = err.decode("utf-8", "replace")[-max_output_chars:]
    rc = proc.returncode
    if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL) and "MemoryError" not in stderr:
        status = "timeout"
    elif "MemoryError" in stderr or rc == -signal.SIGSEGV:
        status = "memory"
    elif rc == 0:
        status = "passed"
    else:
        status = "failed"
    return SandboxResult(passed=status == "passed", status=status, returncode=rc,
                         stdout=stdout, stderr=stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
