"""Run a training in a child process (``python -m train``), so its memory (GPU included) is
freed when it ends. A killed run re-launched with the same arguments resumes from its last
checkpoint, because ``train`` does that on its own."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .lora import TrainConfig


def train_subprocess(cfg: TrainConfig, data: Sequence[Path], base: str, out_dir: Path,
                     adapter_in: str | None = None, history: Sequence[Path] = (),
                     launcher: Sequence[str] = (), env: dict | None = None) -> dict:
    """Same contract as ``train.lora.train``; ``launcher`` e.g. ``["accelerate", "launch"]``."""
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
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"training subprocess failed with exit code {proc.returncode}: {' '.join(cmd)} "
                           f"(re-running resumes from {out_dir / 'checkpoints'})")
    return json.loads((out_dir / "metrics.json").read_text())
