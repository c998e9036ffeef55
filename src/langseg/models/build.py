"""Named LSeg variants. Building never downloads; weights are loaded by ``langseg.models.checkpoint``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipVisualConfig,
    LSegConfig,
    ResNetConfig,
    TextConfig,
    ViTConfig,
)
from .dpt import DPTNeck, SpatialBlock
from .lseg import LSeg
from .text import CLIPTextEncoder
from .vit import ResNetEncoder, ViTEncoder

DEMO_LABELS = ("dog", "grass", "other")  # the official demo's default label text
CLIP_VIT_B32 = TextConfig(width=512, layers=12, heads=8, embed_dim=512)
CLIP_VIT_B32_VISUAL = ClipVisualConfig(
    kind="vit", image_size=224, width=768, layers=12, heads=12, patch_size=32
)
CLIP_RN50X16 = TextConfig(width=768, layers=12, heads=12, embed_dim=768)
CLIP_RN50X16_VISUAL = ClipVisualConfig(
    kind="resnet", image_size=384, width=96, layers=(6, 8, 18, 8), heads=48
)


def build_lseg(config: LSegConfig, *, fused_attn: bool = True) -> LSeg:
    """Build a randomly initialized network from a config."""
    if config.vit is not None:
        image_encoder = ViTEncoder(config.vit, config.reassemble_channels)
        image_encoder.set_fused_attn(fused_attn)
    else:
        image_encoder = ResNetEncoder(config.resnet)
    neck = DPTNeck(config.reassemble_channels, config.features)
    text = CLIPTextEncoder(config.text, config.clip_visual)
    block = None
    if config.arch_option:
        kind = "bottleneck" if config.arch_option == 1 else "depthwise"
        block = SpatialBlock(kind, config.activation, config.block_depth)
    return LSeg(config, image_encoder, neck, text, block)


def _vitl16_config(**overrides: Any) -> LSegConfig:
    cfg = LSegConfig(
        name="lseg_vitl16_384",
        vit=ViTConfig(patch_size=16, embed_dim=1024, depth=24, num_heads=16, hooks=(5, 11, 17, 23)),
        reassemble_channels=(256, 512, 1024, 1024),
        text=CLIP_VIT_B32,
        clip_visual=CLIP_VIT_B32_VISUAL,
        labels=DEMO_LABELS,
    )
    return dataclasses.replace(cfg, **overrides)


def lseg_vitl16_384(**overrides: Any) -> LSegConfig:
    """ViT-L/16 image encoder, CLIP ViT-B/32 text encoder (the demo checkpoint)."""
    return _vitl16_config(**overrides)


def lseg_vitb32_384(**overrides: Any) -> LSegConfig:
    """ViT-B/32 image encoder, CLIP ViT-B/32 text encoder (the paper's ablations)."""
    vit = ViTConfig(patch_size=32, embed_dim=768, depth=12, num_heads=12, hooks=(2, 5, 8, 11))
    return _vitl16_config(
        name="lseg_vitb32_384", vit=vit, reassemble_channels=(96, 192, 384, 768), **overrides
    )


def lseg_rn50x16_vitl16_384(**overrides: Any) -> LSegConfig:
    """ViT-L/16 image encoder, CLIP RN50x16 text encoder (768-d embeddings)."""
    return _vitl16_config(
        name="lseg_rn50x16_vitl16_384", text=CLIP_RN50X16, clip_visual=CLIP_RN50X16_VISUAL, **overrides
    )


def lseg_zs_vitl16_384(**overrides: Any) -> LSegConfig:
    """Zero-shot ViT-L/16 (``fss_l16``): same network, two-way ``others`` vs class prompts."""
    base = dict(name="lseg_zs_vitl16_384", activation="relu", labels=("others",))
    return _vitl16_config(**{**base, **overrides})


def lseg_zs_rn101(**overrides: Any) -> LSegConfig:
    """Zero-shot ResNet-101 (``fss_rn101``, PASCAL-5i and COCO-20i folds), ImageNet normalization."""
    cfg = _vitl16_config(
        name="lseg_zs_rn101",
        vit=None,
        resnet=ResNetConfig(layers=(3, 4, 23, 3)),
        reassemble_channels=(256, 512, 1024, 2048),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        activation="relu",
        labels=("others",),
    )
    return dataclasses.replace(cfg, **overrides)


def lseg_tiny(**overrides: Any) -> LSegConfig:
    """A few-MB network from the same code, for tests and toy training (not an official variant).

    Head counts follow the width/64 rule (at least 1) that official files are read with.
    """
    cfg = LSegConfig(
        name="lseg_tiny",
        vit=ViTConfig(
            patch_size=16, embed_dim=64, depth=4, num_heads=1, img_size=64, hooks=(0, 1, 2, 3), num_classes=0
        ),
        reassemble_channels=(16, 32, 64, 64),
        features=32,
        text=TextConfig(width=32, layers=2, heads=1, embed_dim=32),
        clip_visual=None,
        labels=("other",),
    )
    return dataclasses.replace(cfg, **overrides)


MODELS: dict[str, Callable[..., LSegConfig]] = {
    "lseg_vitl16_384": lseg_vitl16_384,
    "lseg_vitb32_384": lseg_vitb32_384,
    "lseg_rn50x16_vitl16_384": lseg_rn50x16_vitl16_384,
    "lseg_zs_vitl16_384": lseg_zs_vitl16_384,
    "lseg_zs_rn101": lseg_zs_rn101,
    "lseg_tiny": lseg_tiny,
}


def list_models() -> list[str]:
    return sorted(MODELS)


def model_config(name: str, **overrides: Any) -> LSegConfig:
    """The config of a named variant, with field overrides."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {list_models()}")
    return MODELS[name](**overrides)


def create_model(name: str, *, fused_attn: bool = True, **overrides: Any) -> LSeg:
    """A randomly initialized network of a named variant."""
    return build_lseg(model_config(name, **overrides), fused_attn=fused_attn)
