"""Which kernel mechanism confines model-written code, and the command line that starts it.

Mechanisms, tried in this order by ``auto`` (the first that runs a probe program wins, cached
per process):

* ``bwrap``   bubblewrap: new user, mount, pid, net, ipc, uts and cgroup namespaces, a root
              holding only read-only binds of the system and the Python prefixes, no capabilities;
* ``unshare`` util-linux ``unshare`` (unprivileged user namespaces) plus ``sandbox_init.py``,
              which builds the same minimal root inside the namespaces and pivots into it;
* ``unsafe-host`` only when asked for: a plain child process (rlimits, in-process guards).

Both confined mechanisms load the same seccomp filter (``process_filter``): no new processes
(fork, vfork, clone without CLONE_THREAD), no namespace changes, no ptrace. It bounds process
creation for every user, root included (RLIMIT_NPROC is not enforced for root, and outside a
fresh user namespace it counts all of the user's processes).
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import platform
import shutil
import struct
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MECHANISMS = ("auto", "bwrap", "unshare", "unsafe-host")
CONFINED = ("bwrap", "unshare")
ENV_VAR = "SYNTHLOOP_SANDBOX"   # set by evalsuite.harness.run_eval from EvalConfig.sandbox
BOX = "/box"                    # the program's directory inside the box: cwd, HOME, TMPDIR
BOX_MB = 64                     # size of that directory (a tmpfs: nothing lands on the host disk)
INIT_SCRIPT = Path(__file__).with_name("sandbox_init.py")

HOW_TO_FIX = ("install bubblewrap (`apt-get install bubblewrap`) or enable unprivileged user namespaces "
              "(`sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu also "
              "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`), or opt in to running model code "
              "unconfined with `sandbox: unsafe-host` (loop: eval.sandbox=unsafe-host; "
              "elsewhere SYNTHLOOP_SANDBOX=unsafe-host)")
UNSAFE_WARNING = "sandbox: unsafe-host: model-written code runs on the host without kernel isolation"


class SandboxUnavailable(RuntimeError):
    """No requested mechanism can confine model code here; the message says how to fix it."""


# ---- the process filter ------------------------------------------------------------------

# audit arch, syscall numbers (x86_64 and aarch64 tables; other architectures are refused)
_ARCH = {
    "x86_64": (0xC000003E, {"clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "unshare": 272,
                            "setns": 308, "ptrace": 101, "pivot_root": 155}),
    "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435, "unshare": 97, "setns": 268,
                             "ptrace": 117, "pivot_root": 41}),
}
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06   # BPF_LD|W|ABS, BPF_JMP|*|K, BPF_RET|K
_ALLOW, _KILL, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_CLONE_THREAD = 0x00010000


def syscall_numbers() -> dict[str, int]:
    return _ARCH[platform.machine()][1]


@functools.lru_cache(maxsize=1)
def process_filter() -> bytes:
    """A seccomp BPF program (struct sock_filter[]): threads yes, new processes no."""
    machine = platform.machine()
    if machine not in _ARCH:
        raise SandboxUnavailable(f"sandbox: no process filter for architecture {machine}; {HOW_TO_FIX}")
    arch, nr = _ARCH[machine]
    deny = lambda e: (_RET, 0, 0, _ERRNO | e)  # noqa: E731
    prog = [(_LD, 0, 0, 4), (_JEQ, 1, 0, arch), (_RET, 0, 0, _KILL), (_LD, 0, 0, 0)]
    if machine == "x86_64":  # x32 syscall numbers alias the 64-bit ones: refuse them all
        prog += [(_JGE, 0, 1, 0x40000000), deny(errno.ENOSYS)]
    # clone3 passes its flags in memory the filter cannot read; glibc then falls back to clone
    prog += [(_JEQ, 0, 1, nr["clone3"]), deny(errno.ENOSYS)]
    for name, err in (("fork", errno.EAGAIN), ("vfork", errno.EAGAIN), ("unshare", errno.EPERM),
                      ("setns", errno.EPERM), ("ptrace", errno.EPERM)):
        if name in nr:
            prog += [(_JEQ, 0, 1, nr[name]), deny(err)]
    # clone: a thread (CLONE_THREAD in flags, the first argument) is allowed, a process is not
    prog += [(_JEQ, 0, 2, nr["clone"]), (_LD, 0, 0, 16), (_JSET, 0, 1, _CLONE_THREAD),
             (_RET, 0, 0, _ALLOW), deny(errno.EAGAIN)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


# ---- what the box shows ------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def exposed() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(read-only binds, symlinks as (target, path)): the system directories and the Python
    prefixes ``sys.executable`` needs, nothing else (no /home, /root, /tmp, project)."""
    binds, links = [], []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            links.append((os.readlink(top), top))  # merged /usr: /lib -> usr/lib
        elif os.path.isdir(top):
            binds.append(top)
    if os.path.exists("/etc/ld.so.cache"):
        binds.append("/etc/ld.so.cache")
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    for p in sorted(prefixes):
        if not any(p == b or p.startswith(b.rstrip("/") + "/") for b in binds):
            binds.append(p)
    return tuple(binds), tuple(links)


def box_argv() -> list[str]:
    return [sys.executable, "-I", f"{BOX}/program.py"]


def command(mechanism: str, tmp: Path, fds: dict[str, int]) -> list[str]:
    """argv that runs ``tmp/program.py`` under ``mechanism``; ``fds``: open 'program' and
    'filter' files that the command reads (passed to the child)."""
    if mechanism == "unsafe-host":
        return [sys.executable, "-I", str(tmp / "program.py")]
    binds, links = exposed()
    if mechanism == "bwrap":
        argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", "--seccomp", str(fds["filter"])]
        for b in binds:
            argv += ["--ro-bind", b, b]
        for target, path in links:
            argv += ["--symlink", target, path]
        argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "0700", "--size", str(BOX_MB << 20),
                 "--tmpfs", BOX, "--file", str(fds["program"]), f"{BOX}/program.py", "--chdir", BOX,
                 "--remount-ro", "/", *box_argv()]
        return argv
    if mechanism == "unshare":
        spec = {"root": str(tmp / "root"), "binds": binds, "links": links, "box": BOX,
                "box_bytes": BOX_MB << 20, "program": str(tmp / "program.py"),
                "filter": str(tmp / "filter.bpf"), "pivot_root_nr": syscall_numbers()["pivot_root"],
                "argv": box_argv()}
        (tmp / "root").mkdir()
        (tmp / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        return [shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--mount", "--net",
                "--pid", "--ipc", "--uts", "--kill-child", "--",
                sys.executable, "-I", "-S", str(INIT_SCRIPT), str(tmp / "spec.json")]
    raise ValueError(f"unknown sandbox mechanism {mechanism!r}; one of {MECHANISMS}")


# ---- choosing one ------------------------------------------------------------------------

def requested() -> str:
    """The mechanism asked for: $SYNTHLOOP_SANDBOX (set by run_eval), else ``auto``."""
    value = os.environ.get(ENV_VAR, "auto") or "auto"
    if value not in MECHANISMS:
        raise ValueError(f"{ENV_VAR}={value!r}: must be one of {list(MECHANISMS)}")
    return value


_lock = threading.Lock()
_probed: dict[str, str | None] = {}   # mechanism -> None (works) or why it does not


def probe(mechanism: str) -> str | None:
    """None when ``mechanism`` runs a trivial program confined here, else the reason (cached)."""
    with _lock:
        if mechanism not in _probed:
            _probed[mechanism] = _probe(mechanism)
        return _probed[mechanism]


def _probe(mechanism: str) -> str | None:
    tool = {"bwrap": "bwrap", "unshare": "unshare"}[mechanism]
    if not shutil.which(tool):
        return "not installed"
    from evalsuite.sandbox import run_code_with  # here: sandbox imports this module

    try:
        res = run_code_with(mechanism, "print('ok')", timeout_s=30, memory_mb=512,
                            max_output_chars=400, guards=False)
    except (OSError, SandboxUnavailable) as exc:
        return str(exc)
    if res.stdout.strip() == "ok" and res.returncode == 0:
        return None
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {res.returncode}"


def resolve(mechanism: str | None = None) -> str:
    """The mechanism to use for ``mechanism`` (None: ``requested()``); SandboxUnavailable if
    it cannot confine code here."""
    want = mechanism or requested()
    if want not in MECHANISMS:
        raise ValueError(f"sandbox mechanism {want!r}: must be one of {list(MECHANISMS)}")
    if want == "unsafe-host":
        _warn_unsafe()
        return want
    reasons = {}
    for m in (CONFINED if want == "auto" else (want,)):
        reasons[m] = probe(m)
        if reasons[m] is None:
            return m
    why = "; ".join(f"{m}: {r}" for m, r in reasons.items())
    raise SandboxUnavailable(f"sandbox: cannot confine model-written code here ({why}); {HOW_TO_FIX}")


@functools.lru_cache(maxsize=1)
def _warn_unsafe() -> None:
    log.warning(UNSAFE_WARNING)


def describe(mechanism: str | None = None) -> dict:
    """For results.json: what was requested and which mechanism runs (None + error if none)."""
    want = mechanism or requested()
    out: dict = {"requested": want}
    try:
        out["mechanism"] = resolve(want)
    except SandboxUnavailable as exc:
        out["mechanism"], out["error"] = None, str(exc)
    if out["mechanism"] == "unsafe-host":
        out["warning"] = UNSAFE_WARNING
    return out
