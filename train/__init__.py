"""LoRA SFT of a round's records into the next adapter (see train/README.md).

train/ imports neither synth nor loop; from evalsuite it uses only the two light modules every
package shares: ``evalsuite.records`` (the record format and atomic I/O) and
``evalsuite.typedconfig`` (the one config loader). The loop starts training as a child process
(``python -m train``, via ``loop.isolate.train_subprocess``).
"""
from .lora import TrainConfig, build_model, export, train

__all__ = ["TrainConfig", "train", "export", "build_model"]
