"""Run a training in a child process (``python -m train``), so its memory (GPU included) is
freed when it ends. A killed run re-launched with the same arguments resumes from its last
checkpoint, because ``train`` does that on its own. The loop's train stage and standalone
callers both start training here; the child dies with the process that started it."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .lora import TrainConfig


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when its parent dies (Linux PR_SET_PDEATHSIG), so a
    ``kill -9`` of the caller leaves no orphan writing into its output folder."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def train_subprocess(cfg: TrainConfig, data: Sequence[Path], base: str, out_dir: Path,
                     adapter_in: str | None = None, history: Sequence[Path] = (),
                     launcher: Sequence[str] | None = None, env: dict | None = None) -> dict:
    """Same contract as ``train.lora.train``. ``launcher`` (default ``cfg.launcher``) replaces
    ``python``, e.g. ``["accelerate", "launch", "--num_processes", "4"]``. Only that first process
    is tied to the caller's life; the workers a launcher starts are the launcher's to stop."""
    launcher = cfg.launcher if launcher is None else launcher
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "train_request.json"
    cfg_path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    head = list(launcher) + ["-m", "train"] if launcher else [sys.executable, "-m", "train"]
    cmd = head + [a for p in data for a in ("--data", str(p))]
    cmd += [a for p in history for a in ("--history", str(p))]
    cmd += ["--base", base, "--out", str(out_dir), "--config-json", str(cfg_path)]
    if adapter_in:
        cmd += ["--adapter-in", str(adapter_in)]
    preexec = die_with_parent if sys.platform.startswith("linux") else None
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, preexec_fn=preexec)
    if proc.returncode != 0:
        raise RuntimeError(f"training subprocess failed with exit code {proc.returncode}: {' '.join(cmd)} "
                           f"(re-running resumes from {out_dir / 'checkpoints'})")
    return json.loads((out_dir / "metrics.json").read_text())
