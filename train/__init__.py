"""LoRA SFT of a round's records into the next adapter (see train/README.md).

train/ reads record files itself; it imports neither synth, evalsuite nor loop.
"""
from .lora import TrainConfig, build_model, export, train
from .launch import train_subprocess

__all__ = ["TrainConfig", "train", "export", "build_model", "train_subprocess"]
