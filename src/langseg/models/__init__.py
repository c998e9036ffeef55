"""LSeg networks: configs, builders and the weights door."""

from .build import MODELS, build_lseg, create_model, list_models, model_config
from .checkpoint import (
    CheckpointError,
    convert_official,
    load_checkpoint,
    load_clip_text_weights,
    load_pretrained,
    load_timm_vit_weights,
    save_pretrained,
)
from .config import LSegConfig, ResNetConfig, TextConfig, ViTConfig
from .lseg import FastPaths, LSeg
from .text import LabelError

__all__ = [
    "MODELS",
    "CheckpointError",
    "FastPaths",
    "LSeg",
    "LSegConfig",
    "LabelError",
    "ResNetConfig",
    "TextConfig",
    "ViTConfig",
    "build_lseg",
    "convert_official",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_clip_text_weights",
    "load_pretrained",
    "load_timm_vit_weights",
    "model_config",
    "save_pretrained",
]
