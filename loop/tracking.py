"""W&B tracking: the only module that imports wandb.

One W&B run per loop run (its id kept in state.json, so a resumed loop continues the
same W&B run), ``step = round``: scalars (``log``), tables (``table``: logged at the round's
step, so W&B shows one per round and can compare them) and files as versioned artifacts
(``artifact``: the round's training set and adapter, aliased ``round-<r>``). Offline by default: files under ``<run>/wandb``, no
network traffic; ``tracking.wandb=online`` once ``wandb login`` is done; ``disabled``
turns it off. W&B's own dirs are pointed into the run dir so nothing lands in $HOME.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, run_dir: Path, name: str, config: dict, mode: str, project: str,
                 entity: str = "", run_id: str | None = None):
        self.run = None
        self.mode = mode
        if mode == "disabled":
            return
        if mode not in ("offline", "online"):
            raise ValueError(f"tracking.wandb must be offline | online | disabled, got {mode!r}")
        wdir = (Path(run_dir) / "wandb").resolve()
        wdir.mkdir(parents=True, exist_ok=True)
        dirs = {"WANDB_DIR": wdir.parent, "WANDB_DATA_DIR": wdir / "data", "WANDB_CACHE_DIR": wdir / "cache",
                "WANDB_ARTIFACT_DIR": wdir / "artifacts"}
        if mode == "offline":  # online keeps the user's own settings (entity, login) in ~/.config/wandb
            dirs["WANDB_CONFIG_DIR"] = wdir / "config"
        for var, path in dirs.items():
            os.environ[var] = str(path)
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run = wandb.init(project=project, entity=entity or None, name=name, id=run_id,
                              resume="allow", mode=mode, config=config, dir=str(wdir.parent),
                              settings=wandb.Settings(console="off", x_disable_stats=True))

    @property
    def enabled(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def run_path(self) -> str | None:
        return getattr(self.run, "dir", None) if self.run is not None else None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A table at ``step`` (W&B merges it with that step's scalars). Offline, its JSON lands in the
        run's ``files/media/table/<name>_*.table.json``."""
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def artifact(self, name: str, kind: str, path: Path, aliases: list[str] = (), metadata: dict | None = None) -> None:
        """A file or folder as a versioned artifact (W&B keeps one version per distinct content; an
        unchanged file logged again on resume is the same version). The files are copied into W&B's
        staging area, so a stage rerun before ``wandb sync`` cannot change what was logged."""
        if self.run is None:
            return
        import wandb

        art = wandb.Artifact(name, type=kind, metadata=metadata or {})
        path = Path(path)
        if path.is_dir():
            art.add_dir(str(path))
        else:
            art.add_file(str(path), name=path.name)
        self.run.log_artifact(art, aliases=list(aliases))

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
