"""One typed config tree, loaded from YAML with ``key.sub=value`` overrides.

Each section's dataclass lives next to the code it configures (``EvalConfig`` in
evalsuite, ``TrainConfig`` in train, ...); this module composes them. Loading is
``evalsuite.typedconfig`` (the one loader, shared with ``python -m train``): unknown keys,
wrong types and values outside a ``Literal`` are errors that name the key (and file),
raised before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evalsuite import typedconfig
from evalsuite.harness import EvalConfig
from synth.diagnose import DiagnoseConfig
from synth.executor import ExecutorConfig
from synth.generate import SynthConfig
from synth.llm.base import LLMConfig
from synth.mix import MixConfig
from synth.retrieve import RetrieveConfig
from synth.tagging import TagConfig
from train.lora import TrainConfig


ConfigError = typedconfig.ConfigError
to_dict = typedconfig.to_dict


@dataclass
class StudentConfig:
    model: str = "embedded:smollm2-135m-instruct"  # HF id, local path or embedded:<name>


@dataclass
class TrackingConfig:
    wandb: Literal["offline", "online", "disabled"] = "offline"  # offline writes no network traffic
    project: str = "synthloop"
    entity: str = ""            # W&B team/user; empty = your default


@dataclass
class StopConfig:
    patience: int = 0           # stop after this many measured students without a dev gain; 0 = never early
    min_delta: float = 0.005    # a gain is the paired change on dev items: at least this, with its 95% CI
                                # above 0 (dev only: test never decides)


@dataclass
class Config:
    name: str = "default"
    seed: int = 0
    rounds: int = 2
    cache_dir: str = ".cache/synthloop"  # converted models, embeddings, pool cache (shared by runs)
    # random: each round also trains, from the same start and with the same hyperparameters, on
    # random pool records of the targeted mix's token count, evaluated on the same items;
    # untargeted: the same, its data synthesized without the diagnosis (one stand-in deficiency per
    # task, named by its kind alone) and topped up with random pool records; none: off
    control: Literal["random", "untargeted", "none"] = "random"
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: LLMConfig = field(default_factory=LLMConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    synthesize: SynthConfig = field(default_factory=SynthConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    # where the pool-wide maps (embedding new pool records, dedup keys) run: local | ray (Ray Data)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


# ---------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """YAML file (or defaults) + ``a.b=value`` overrides -> a validated Config (the run's name
    defaults to the file's stem)."""
    return typedconfig.load(Config, path, overrides, defaults={"name": Path(path).stem} if path else None)


def save_config(cfg: Config, path: Path) -> None:
    typedconfig.save(cfg, path)
