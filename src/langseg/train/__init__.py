"""Training: the official LSeg recipe on Lightning (configs, data module, module, checkpoints).

>>> from langseg.train import load_config, train
>>> cfg = load_config("configs/toy.yaml", ["trainer.max_steps=100"])
>>> result = train(cfg, "runs/toy")          # result.best is a folder load_model accepts

Needs the ``train`` extra (lightning, torchmetrics, tensorboard, pyyaml).
"""

from .config import (
    ConfigError,
    DataConfig,
    DatasetSpec,
    ModelSpec,
    OptimConfig,
    ToySpec,
    TrainConfig,
    TrainerConfig,
    load_config,
)
from .run import RunResult, build_model, train
from .schedule import poly_factor

__all__ = [
    "ConfigError",
    "DataConfig",
    "DatasetSpec",
    "ModelSpec",
    "OptimConfig",
    "RunResult",
    "ToySpec",
    "TrainConfig",
    "TrainerConfig",
    "build_model",
    "load_config",
    "poly_factor",
    "train",
]
