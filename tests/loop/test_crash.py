"""Crash consistency, randomised: the loop is killed with SIGKILL at random moments in every stage,
the same command is re-run after each kill, and the finished run must equal an uninterrupted one.

One run in a fresh directory (one round + final eval, tiny student, scripted teacher) is killed
once in each of: start-up, eval, tag, diagnose, synthesize, retrieve, mix, train (during a
checkpoint save and at a random moment of the training process), the control arm's data, training
process and eval, and the final eval. A kill is
aimed by waiting for the stage to start in this launch (its ``.<stage>.tmp`` folder created, or
the training process or a new checkpoint appearing) plus a random delay shorter than the stage.
Ten kills hit the loop's process group (``os.killpg``), three the loop process alone, as
``kill -9 <pid>`` does, so its children must die with it (PR_SET_PDEATHSIG). After every kill no
process the loop started may still be alive. The finished run is then compared with the
session's uninterrupted smoke run (conftest): every stage's DONE fingerprint and summary, every
JSON/JSONL file each stage wrote (timings and the run directory's path excepted) and the adapter
weights; no stage temp folder is left, nor a folder of ``isolate.call`` in the temp dir.

The delays and which kills hit the loop alone come from ``random.Random(seed)``; the seed and
every kill are printed (``pytest -s`` shows them when the test passes).
Reproduce or vary with ``SYNTHLOOP_CRASH_SEED=<n>``.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("crash_driver.py")
SEED = int(os.environ.get("SYNTHLOOP_CRASH_SEED", "20240611"))
PAUSE = 0.4            # crash_driver's pause before/after each fast stage (s)
GRACE_S = 10.0         # time a killed loop's processes get to disappear
STAGES = ("eval", "tag", "diagnose", "synthesize", "retrieve", "mix", "train", "control_data", "control_train",
          "control_eval")
# keys whose values are timings or say how this particular process got there, not what it computed
# (besides every key ending in "_s" and every rate)
VOLATILE = {"finished", "seconds", "tokens_this_process", "trained_tokens_this_process", "resumed_from",
            "train_runtime",
            # the work this attempt did itself: a killed attempt's cached tags and IFD scores are reused
            "cached", "scored", "prompted", "forward_batches", "requests", "prompt_tokens", "completion_tokens"}


# ------------------------------------------------------------------ processes

@dataclass
class Proc:
    ppid: int
    sid: int
    start: int      # clock ticks since boot: tells a reused pid from the one we saw
    state: str
    argv: list[str]


def _procs() -> dict[int, Proc]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        out[int(name)] = Proc(int(rest[1]), int(rest[3]), int(rest[19]), rest[0], argv)
    return out


@dataclass
class Family:
    """Every process descended from one launch of the loop, collected by polling /proc while it runs,
    plus anything in its session or naming its run directory."""
    root: int
    run_dir: str
    seen: dict = field(default_factory=dict)    # (pid, start) -> argv

    def poll(self) -> None:
        procs = _procs()
        children: dict[int, list[int]] = {}
        for pid, p in procs.items():
            children.setdefault(p.ppid, []).append(pid)
        stack = [self.root]
        while stack:
            pid = stack.pop()
            if pid in procs:
                self.seen[(pid, procs[pid].start)] = procs[pid].argv
                stack.extend(children.get(pid, []))

    def alive(self) -> list[str]:
        procs, me = _procs(), os.getpid()
        found = {pid for (pid, start) in self.seen if pid in procs and procs[pid].start == start}
        found |= {pid for pid, p in procs.items() if p.sid == self.root or any(self.run_dir in a for a in p.argv)}
        return [f"{pid} {' '.join(procs[pid].argv)[:200]}" for pid in sorted(found - {me})
                if procs[pid].state != "Z"]       # a zombie runs nothing; its parent reaps it

    def wait_gone(self, timeout: float) -> tuple[list[str], float]:
        t0 = time.monotonic()
        while (left := self.alive()) and time.monotonic() - t0 < timeout:
            time.sleep(0.05)
        return left, time.monotonic() - t0

    def has(self, *needle: str) -> bool:
        n = len(needle)
        return any(tuple(argv[i:i + n]) == needle for argv in self.seen.values() for i in range(len(argv)))

    def cleanup(self) -> None:
        for (pid, start) in self.seen:
            procs = _procs()
            if pid in procs and procs[pid].start == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# ------------------------------------------------------------------ kill targets

def _fresh(path: Path, since_ns: int) -> bool:
    """``path`` exists and was created in this launch (a stage's temp folder is made anew)."""
    try:
        return path.stat().st_ctime_ns >= since_ns
    except FileNotFoundError:
        return False


def _half_saved(run_dir: Path, since_ns: int = 0) -> list[str]:
    """Checkpoints (made in this launch) still being written: trainer_state.json comes last."""
    ckpt = run_dir / "round_000" / ".train.tmp" / "checkpoints"
    return [p.name for p in ckpt.glob("checkpoint-*") if _fresh(p, since_ns) and not (p / "trainer_state.json").exists()]


def _saving_checkpoint(run_dir: Path, since_ns: int) -> bool:
    return bool(_half_saved(run_dir, since_ns))


@dataclass
class Target:
    name: str           # what the kill aims at
    done: str | None    # the stage folder whose DONE must not exist yet when the kill lands (a hit)
    started: object     # (run_dir, family, launch_ns) -> bool: the stage has started in this launch
    delay: object       # (ref_wall: dict, rng) -> seconds to wait after it started


def _tmp(where: str, stage: str):
    return lambda run_dir, fam, t0: _fresh(run_dir / where / f".{stage}.tmp", t0)


def _pause_delay(ref, rng):     # the driver pauses PAUSE before and after the stage: always inside it
    return rng.uniform(0.0, 1.9 * PAUSE)


TARGETS = [
    Target("start-up", None, lambda *_: True, lambda ref, rng: rng.uniform(0.2, 2.0)),
    Target("eval", "round_000/eval", _tmp("round_000", "eval"),
           lambda ref, rng: rng.uniform(0.05, 0.4) * ref["round_000/eval"]),
    *(Target(s, f"round_000/{s}", _tmp("round_000", s), _pause_delay) for s in ("tag", "diagnose", "synthesize")),
    Target("retrieve", "round_000/retrieve", _tmp("round_000", "retrieve"),
           lambda ref, rng: rng.uniform(0.0, 0.8) * (ref["round_000/retrieve"] + 2 * PAUSE)),
    Target("mix", "round_000/mix", _tmp("round_000", "mix"), _pause_delay),
    Target("train (checkpoint save)", "round_000/train", lambda run_dir, fam, t0: _saving_checkpoint(run_dir, t0),
           lambda ref, rng: rng.uniform(0.0, 0.02)),
    Target("train (process)", "round_000/train", lambda run_dir, fam, t0: fam.has("-m", "train"),
           lambda ref, rng: rng.uniform(0.05, 0.4) * ref["round_000/train"]),
    # the control arm: random pool records of the targeted mix's size, trained and evaluated alike
    Target("control_data", "round_000/control_data", _tmp("round_000", "control_data"), _pause_delay),
    Target("control_train (process)", "round_000/control_train",
           lambda run_dir, fam, t0: _tmp("round_000", "control_train")(run_dir, fam, t0) and fam.has("-m", "train"),
           lambda ref, rng: rng.uniform(0.05, 0.4) * ref["round_000/control_train"]),
    Target("control_eval", "round_000/control_eval", _tmp("round_000", "control_eval"),
           lambda ref, rng: rng.uniform(0.05, 0.4) * ref["round_000/control_eval"]),
    Target("final eval", "final/eval", _tmp("final", "eval"),
           lambda ref, rng: rng.uniform(0.05, 0.4) * ref["round_001/eval"]),
]


def _in_progress(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("*/.*.tmp"))


# ------------------------------------------------------------------ comparison

def _volatile(key: str) -> bool:
    return key in VOLATILE or key.endswith("_s") or "_per_" in key


def _norm(x, run_dir: str):
    """``x`` without timings; the run directory's path and object addresses (in lm-eval's task
    config dump) masked; PEFT's target_modules (a set, ordered by string hashing) sorted; floats
    rounded to 6 significant digits (a resumed training sums its loss in another order)."""
    if isinstance(x, dict):
        return {k: sorted(v) if k == "target_modules" and isinstance(v, list) else _norm(v, run_dir)
                for k, v in x.items() if not _volatile(k)}
    if isinstance(x, list):
        return [_norm(v, run_dir) for v in x]
    if isinstance(x, str):
        return re.sub(r"\b0x[0-9a-f]{6,}\b", "0x?", x.replace(run_dir, "<RUN>"))
    if isinstance(x, float):
        return float(f"{x:.6g}")
    return x


def _load(path: Path, run_dir: Path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        data = text
    return _norm(data, str(run_dir))


def _compare_stage(got: Path, want: Path, got_run: Path, want_run: Path) -> list[str]:
    """Differences between two finished stage folders, beyond timings and the run directory."""
    from safetensors.torch import load_file
    import torch

    problems = []
    files = lambda d: {p.relative_to(d) for p in d.rglob("*") if p.is_file()}   # noqa: E731
    g, w = files(got), files(want)
    if g != w:
        problems.append(f"{got}: files differ: only here {sorted(map(str, g - w))}, only in the reference "
                        f"{sorted(map(str, w - g))}")
    for rel in sorted(g & w):
        a, b = got / rel, want / rel
        if rel.suffix == ".safetensors":
            ta, tb = load_file(a), load_file(b)
            if ta.keys() != tb.keys() or not all(torch.allclose(ta[k], tb[k], rtol=1e-5, atol=1e-6) for k in ta):
                worst = max((ta[k] - tb[k]).abs().max().item() for k in ta.keys() & tb.keys())
                problems.append(f"{a}: tensors differ from the reference (max abs diff {worst:g})")
        elif rel.suffix in (".json", ".jsonl", ".txt", ".md", ".yaml", ".py", ".jinja") or rel.name == "DONE":
            if rel.name == "DONE":
                da, db = json.loads(a.read_text()), json.loads(b.read_text())
                if da["fingerprint"] != db["fingerprint"]:
                    problems.append(f"{a}: fingerprint {da['fingerprint']} != reference {db['fingerprint']}")
                sa, sb = _norm(da["summary"], str(got_run)), _norm(db["summary"], str(want_run))
                if sa != sb:
                    problems.append(f"{a}: summary differs: {_diff(sa, sb)}")
            elif _load(a, got_run) != _load(b, want_run):
                problems.append(f"{a}: differs from the reference: {_diff(_load(a, got_run), _load(b, want_run))}")
        elif a.read_bytes() != b.read_bytes():
            problems.append(f"{a}: bytes differ from the reference")
    return problems


def _diff(a, b, where="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            if a.get(k, "<absent>") != b.get(k, "<absent>"):
                return _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{where}.{k}")
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _diff(x, y, f"{where}[{i}]")
    return f"{where}: {str(a)[:200]!r} vs reference {str(b)[:200]!r}"


# ------------------------------------------------------------------ the test

def _launch(args: list[str], log: Path, since_ns: list) -> subprocess.Popen:
    since_ns.append(time.time_ns())
    tmp = log.parent / "tmp"         # the loop's temp files: what a killed loop leaves there is seen
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SYNTHLOOP_TEST_PAUSE": str(PAUSE), "TMPDIR": str(tmp)}
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, str(DRIVER), *args], cwd=REPO, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux-only")
def test_random_kills_in_every_stage_resume_to_the_uninterrupted_result(smoke_run, loop_overrides, tmp_path):
    ref_run, _ = smoke_run
    ref_wall = {w: json.loads((ref_run / w / "DONE").read_text())["wall_s"]
                for w in ("round_000/eval", "round_000/retrieve", "round_000/train", "round_000/control_train",
                          "round_000/control_eval", "round_001/eval")}
    rng = random.Random(SEED)
    # three kills hit the loop process alone, as `kill -9 <pid>` does (its children must die with it,
    # PR_SET_PDEATHSIG): two where it has a child process (eval, training), one elsewhere
    with_child = [t.name for t in TARGETS if "eval" in t.name or "train" in t.name]
    loop_only = set(rng.sample(with_child, 2) + rng.sample([t.name for t in TARGETS if t.name not in with_child], 1))
    run_dir = tmp_path / "run"
    args = ["run", "--config", "configs/smoke.yaml", "--rounds", "1", "--run-dir", str(run_dir),
            *loop_overrides(tmp_path / "cache")]
    print(f"\ncrash test: seed {SEED} (SYNTHLOOP_CRASH_SEED=<n> to reproduce or vary); reference walls {ref_wall}")
    kills, t_start = [], time.monotonic()

    for target in TARGETS:
        log = tmp_path / f"launch{len(kills):02d}.log"
        t_launch: list[int] = []
        proc = _launch(args, log, t_launch)
        fam = Family(proc.pid, str(run_dir))
        try:
            t0 = t_poll = time.monotonic()
            while not target.started(run_dir, fam, t_launch[0]):    # checked every 2 ms, /proc every 50 ms
                if time.monotonic() - t_poll > 0.05:
                    fam.poll()
                    t_poll = time.monotonic()
                    assert proc.poll() is None, \
                        f"run ended (rc {proc.returncode}) before {target.name} started:\n{_tail(log)}"
                    assert time.monotonic() - t0 < 300, f"{target.name} never started:\n{_tail(log)}"
                time.sleep(0.002)
            delay = target.delay(ref_wall, rng)
            mode = "loop" if target.name in loop_only else "group"
            t_fire = time.monotonic() + delay
            while time.monotonic() < t_fire - 0.05:
                fam.poll()
                time.sleep(0.02)
            time.sleep(max(0.0, t_fire - time.monotonic()))
            assert proc.poll() is None, f"run ended (rc {proc.returncode}) before the {target.name} kill:\n{_tail(log)}"
            if mode == "group":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            hit = target.done is None or not (run_dir / target.done / "DONE").exists()
            survivors, gone_s = fam.wait_gone(GRACE_S)
            kills.append(dict(target=target.name, delay=round(delay, 3), at=round(time.monotonic() - t0, 2),
                              mode=mode, hit=hit, in_progress=_in_progress(run_dir), procs=len(fam.seen),
                              gone_s=round(gone_s, 2), half_saved_checkpoints=_half_saved(run_dir)))
            print(f"kill {len(kills)}: {kills[-1]}")
            assert not survivors, (f"kill {len(kills)} ({target.name}, {mode}): processes of the killed loop still "
                                   f"alive after {GRACE_S} s:\n" + "\n".join(survivors))
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            fam.cleanup()

    log = tmp_path / "final.log"
    t_launch = []
    proc = _launch(args, log, t_launch)
    fam = Family(proc.pid, str(run_dir))
    try:
        while proc.poll() is None:
            fam.poll()
            time.sleep(0.05)
        assert proc.returncode == 0, _tail(log)
        survivors, _ = fam.wait_gone(GRACE_S)
        assert not survivors, "processes left after the run finished:\n" + "\n".join(survivors)
    finally:
        fam.cleanup()
    print(f"crash test: {len(kills)} kills, {time.monotonic() - t_start:.0f} s in all")

    missed = [k["target"] for k in kills if not k["hit"]]
    assert not missed, f"kills that landed after their stage had finished: {missed} (seed {SEED})"
    assert not _in_progress(run_dir), f"stage temp folders left: {_in_progress(run_dir)}"
    # what the killed launches left in their temp dir (wandb leaves empty folders even when it ends well)
    left = sorted(p.name for p in (tmp_path / "tmp").iterdir() if "wandb" not in p.name)
    print("left in TMPDIR:", left, "| temp files left in the run dir:",
          [str(p.relative_to(run_dir)) for p in run_dir.rglob("*.tmp*") if "wandb" not in p.parts])
    assert not [n for n in left if n.startswith("synthloop-")], f"isolate.call folders left: {left}"
    problems = []
    for s in STAGES:
        problems += _compare_stage(run_dir / "round_000" / s, ref_run / "round_000" / s, run_dir, ref_run)
    # the final eval measures round 0's adapter: the reference measured it as round 1's eval
    problems += _compare_stage(run_dir / "final" / "eval", ref_run / "round_001" / "eval", run_dir, ref_run)
    state, ref_state = (json.loads((d / "state.json").read_text()) for d in (run_dir, ref_run))
    assert state["status"] == "finished"
    if state["rounds"]["0"]["scores"] != ref_state["rounds"]["0"]["scores"]:
        problems.append(f"state.json round 0 scores {state['rounds']['0']['scores']} != reference")
    assert not problems, f"seed {SEED}: the killed run differs from the uninterrupted one:\n" + "\n".join(problems)
