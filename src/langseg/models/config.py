"""Configuration dataclasses for the LSeg network.

An :class:`LSegConfig` fully describes a network: building it twice from the same config gives
the same module tree (and state-dict keys). Configs are stored in every checkpoint of ours
(``config.json``) so a model rebuilds without flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..typecheck import from_dict, show

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


@dataclass
class ViTConfig:
    """Image trunk: a timm ``VisionTransformer`` read at four blocks."""

    patch_size: int = 16  # patch side in pixels
    embed_dim: int = 1024  # token width
    depth: int = 24  # number of transformer blocks
    num_heads: int = 16  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / token width
    img_size: int = 384  # native input side; the position-embedding grid is img_size // patch_size
    hooks: tuple[int, int, int, int] = (5, 11, 17, 23)  # 0-based blocks whose outputs feed the decoder
    num_classes: int = 1000  # size of timm's (unused) classifier head; 0 drops it
    readout: Literal["project", "add", "ignore"] = "project"  # how the class token enters patch tokens


@dataclass
class ResNetConfig:
    """Image trunk: a torchvision bottleneck ResNet read at its four stages."""

    layers: tuple[int, int, int, int] = (3, 4, 23, 3)  # blocks per stage (ResNet-101)
    width: int = 64  # bottleneck width per group (torchvision `width_per_group`)


@dataclass
class TextConfig:
    """CLIP text tower (OpenAI layout, QuickGELU)."""

    width: int = 512  # transformer width
    layers: int = 12  # transformer blocks
    heads: int = 8  # attention heads
    context_length: int = 77  # tokens per prompt
    vocab_size: int = 49408  # BPE vocabulary
    embed_dim: int = 512  # output (projection) dimension


@dataclass
class ClipVisualConfig:
    """The CLIP image tower that the official checkpoints carry but never run.

    It is built only so that official files load strictly; ``langseg convert`` can drop it.
    """

    kind: Literal["vit", "resnet"] = "vit"
    image_size: int = 224
    width: int = 768
    layers: int | tuple[int, int, int, int] = 12  # int for "vit", 4-tuple for "resnet"
    heads: int = 12
    patch_size: int = 32  # "vit" only


@dataclass
class LSegConfig:
    """Architecture and preprocessing of one LSeg network."""

    name: str = "lseg_vitl16_384"  # variant name (see langseg.models.build.MODELS)
    vit: ViTConfig | None = field(default_factory=ViTConfig)  # ViT trunk, or None with `resnet`
    resnet: ResNetConfig | None = None  # ResNet trunk, or None with `vit`
    reassemble_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)  # trunk maps at stride 4..32
    features: int = 256  # decoder width
    text: TextConfig = field(default_factory=TextConfig)
    clip_visual: ClipVisualConfig | None = None  # unused CLIP image tower kept for strict loading
    arch_option: int = 0  # 0: none, 1: bottleneck block, 2: depthwise block (spatial regularization)
    block_depth: int = 0  # applications of the spatial block
    activation: Literal["relu", "lrelu", "tanh"] = "lrelu"  # activation of the spatial block
    logit_scale: float = 1 / 0.07  # constant temperature; the official value is 1/0.07
    mean: tuple[float, float, float] = HALF_MEAN  # input normalization
    std: tuple[float, float, float] = HALF_STD
    labels: tuple[str, ...] = ("other",)  # default label set (official demo: "dog, grass, other")

    def __post_init__(self) -> None:
        if (self.vit is None) == (self.resnet is None):
            raise ValueError("LSegConfig needs exactly one image trunk: set `vit` or `resnet`")
        if self.arch_option not in (0, 1, 2):
            raise ValueError(f"unknown arch_option {self.arch_option!r}; expected 0, 1 or 2")
        if self.activation not in ("relu", "lrelu", "tanh"):
            raise ValueError(f"unknown activation {self.activation!r}; expected 'relu', 'lrelu' or 'tanh'")
        if self.vit is not None and self.vit.readout not in ("project", "add", "ignore"):
            raise ValueError(f"unknown readout {self.vit.readout!r}; expected 'project', 'add' or 'ignore'")

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint pixel/text embedding space."""
        return self.text.embed_dim

    @property
    def scale(self) -> float:
        """The logit scale as the official code computes it: float32 exp(float32 log(s))."""
        import torch

        return float(torch.tensor(math.log(self.logit_scale), dtype=torch.float32).exp())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LSegConfig:
        """Rebuild a config from :meth:`to_dict` output (e.g. a ``config.json``), checking every value.

        Unknown keys, values of the wrong type (``"depth": "4"``) and values out of range
        (``"num_heads": 0``, hooks past the last block) raise :class:`ValueError` naming the key
        (a :class:`langseg.typecheck.ConfigError` for the first two).
        """
        if isinstance(d, dict) and "zero_shot" in d:
            d = {k: v for k, v in d.items() if k != "zero_shot"}  # a flag earlier versions saved, never read
        cfg = from_dict(cls, d, "model")
        check_ranges(cfg)
        return cfg


def _at_least(where: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise ValueError(f"{where} must be >= {low}, got {value}")


def check_ranges(cfg: LSegConfig) -> None:
    """Raise :class:`ValueError` naming the first field whose value cannot build a network."""
    if cfg.vit is not None:
        v = cfg.vit
        for key in ("patch_size", "embed_dim", "depth", "num_heads", "img_size"):
            _at_least(f"model.vit.{key}", getattr(v, key), 1)
        _at_least("model.vit.num_classes", v.num_classes, 0)
        if v.embed_dim % v.num_heads:
            raise ValueError(
                f"model.vit.embed_dim ({v.embed_dim}) must be a multiple of model.vit.num_heads ({v.num_heads})"
            )
        if not v.mlp_ratio > 0:
            raise ValueError(f"model.vit.mlp_ratio must be > 0, got {v.mlp_ratio}")
        if v.img_size % v.patch_size:
            raise ValueError(
                f"model.vit.img_size ({v.img_size}) must be a multiple of model.vit.patch_size ({v.patch_size})"
            )
        if list(v.hooks) != sorted(set(v.hooks)) or not all(0 <= h < v.depth for h in v.hooks):
            raise ValueError(
                f"model.vit.hooks must be 4 increasing block indices in [0, {v.depth}), got {list(v.hooks)}"
            )
    if cfg.resnet is not None:
        for i, n in enumerate(cfg.resnet.layers):
            _at_least(f"model.resnet.layers.{i}", n, 1)
        _at_least("model.resnet.width", cfg.resnet.width, 1)
    t = cfg.text
    for key in ("width", "layers", "heads", "context_length", "vocab_size", "embed_dim"):
        _at_least(f"model.text.{key}", getattr(t, key), 1)
    if t.width % t.heads:
        raise ValueError(f"model.text.width ({t.width}) must be a multiple of model.text.heads ({t.heads})")
    if cfg.clip_visual is not None:
        c = cfg.clip_visual
        for key in ("image_size", "width", "heads", "patch_size"):
            _at_least(f"model.clip_visual.{key}", getattr(c, key), 1)
        layers = c.layers if isinstance(c.layers, tuple) else (c.layers,)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layers):
            raise ValueError(f"model.clip_visual.layers must be positive integers, got {show(c.layers)}")
    for i, n in enumerate(cfg.reassemble_channels):
        _at_least(f"model.reassemble_channels.{i}", n, 1)
    _at_least("model.features", cfg.features, 1)
    _at_least("model.block_depth", cfg.block_depth, 0)
    if not cfg.logit_scale > 0:
        raise ValueError(f"model.logit_scale must be > 0, got {cfg.logit_scale}")
    if not all(s > 0 for s in cfg.std):
        raise ValueError(f"model.std must be positive, got {list(cfg.std)}")
    if not cfg.labels:
        raise ValueError("model.labels must hold at least one label")
