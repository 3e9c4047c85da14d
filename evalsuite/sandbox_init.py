"""PID 1 of the ``unshare`` sandbox: build a minimal root, pivot into it, run the program.

Started by ``evalsuite.sandbox_mechanisms`` as
``unshare --user --map-root-user --mount --net --pid --ipc --uts --kill-child -- python -I -S
sandbox_init.py SPEC.json``, i.e. as root of fresh namespaces (no power over the host). It is
trusted code and uses the standard library only (no ``site``, no project imports).

1. a tmpfs becomes the new root; the system directories and Python prefixes named in the spec
   are bind-mounted into it read-only (every submount too), /dev gets null/zero/full/random/
   urandom, /proc is this PID namespace's, the program's directory is a small writable tmpfs;
2. pivot_root into it and detach the old root, so no host path stays reachable;
3. fork the program with an empty capability set (bounding, inheritable, ambient too: exec as
   uid 0 would otherwise regain them), no_new_privs and the seccomp process filter; wait for
   it and exit with its status (128 + signal when it was killed, as bwrap reports it).
"""
import ctypes
import json
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
# flags a user namespace may not clear on a mount it inherited: a read-only remount keeps them
LOCKED = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
          os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME}
PR_CAPBSET_DROP, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 22, 38, 47
SECCOMP_MODE_FILTER, PR_CAP_AMBIENT_CLEAR_ALL, MNT_DETACH = 2, 4, 2

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sandbox_init: {what}: {os.strerror(err)}")


def mount(src, dst, fstype, flags, data=None) -> None:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {src or fstype} on {dst}")


def mounts_under(path: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")  # \040 for spaces
            if mp == path or mp.startswith(path.rstrip("/") + "/"):
                out.append(mp)
    return out


def ro_bind(src: str, dst: str) -> None:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    for mp in mounts_under(dst):
        flags = os.statvfs(mp).f_flag
        locked = sum(ms for st, ms in LOCKED.items() if flags & st)
        mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | locked)


def build_root(spec: dict) -> None:
    root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in spec["binds"]:
        ro_bind(path, root + path)
    for target, path in spec["links"]:
        os.symlink(target, root + path)
    dev = root + "/dev"
    os.mkdir(dev)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name in ("null", "zero", "full", "random", "urandom"):
        open(f"{dev}/{name}", "w").close()
        mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    os.mkdir(root + "/proc")
    try:  # this PID namespace's processes only; refused where the host's /proc is partly masked
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass
    box = root + spec["box"]
    os.mkdir(box)
    mount("tmpfs", box, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0700,size={spec['box_bytes']}")
    with open(spec["program"], "rb") as src, open(box + "/program.py", "wb") as dst:
        dst.write(src.read())
    mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    check(libc.syscall(spec["pivot_root_nr"], b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir(spec["box"])


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def confine_self(bpf: bytes, last_cap: int) -> None:
    for cap in range(last_cap + 1):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop bounding capabilities")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    data = (CapData * 2)()
    check(libc.capset(ctypes.byref(CapHeader(0x20080522, 0)), data), "clear capabilities")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    prog = SockFprog(len(bpf) // 8, bpf)
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp")


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    with open(spec["filter"], "rb") as f:
        bpf = f.read()
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    build_root(spec)
    pid = os.fork()
    if pid == 0:
        try:
            confine_self(bpf, last_cap)
            os.execv(spec["argv"][0], spec["argv"])
        except BaseException as exc:  # never fall through into the parent's code
            os.write(2, f"{exc}\n".encode())
        os._exit(127)
    while True:  # as PID 1, reap everything; finish when the program does
        done, status = os.waitpid(-1, 0)
        if done == pid:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as exc:
        print(exc, file=sys.stderr)
        sys.exit(125)
