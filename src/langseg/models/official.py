"""Official lang-seg checkpoints: their key names mapped onto ours, and the architecture read from them.

The official Lightning ``.ckpt`` files store no hyper-parameters: :func:`infer_config` tells the
variant from the key names and tensor shapes (after :func:`official_to_langseg`), and the few
fields the weights cannot tell come in as ``overrides``.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .build import build_lseg, model_config
from .config import ClipVisualConfig, LSegConfig, ResNetConfig, TextConfig, ViTConfig, check_ranges
from .lseg import LSeg
from .state_dict import CheckpointError, load_weights, read_torch_file, strip_prefix, unwrap_state_dict

# ------------------------------------------------------------------------------ official key names
# One table read in both directions: (official prefix, our prefix, official index - our index).
# "{}" stands for a stage number; the first matching prefix wins, so specific entries come first.
_KEY_PREFIXES = [
    ("clip_pretrained.", "text_encoder.", 0),
    ("pretrained.model.", "image_encoder.vit.", 0),
    ("pretrained.act_postprocess{}.0.", "image_encoder.reassemble.{}.readout.", 1),
    ("pretrained.act_postprocess{}.3.", "image_encoder.reassemble.{}.proj.", 1),
    ("pretrained.act_postprocess{}.4.", "image_encoder.reassemble.{}.resample.", 1),
    ("pretrained.layer1.0.", "image_encoder.resnet.conv1.", 0),  # official Sequential(conv1, bn1, relu,
    ("pretrained.layer1.1.", "image_encoder.resnet.bn1.", 0),  # maxpool, layer1)
    ("pretrained.layer1.4.", "image_encoder.resnet.layer1.", 0),
    ("pretrained.layer{}.", "image_encoder.resnet.layer{}.", 0),
    ("scratch.layer{}_rn.", "neck.proj.{}.", 1),
    ("scratch.refinenet{}.", "neck.fusion.{}.", 1),
    ("scratch.head1.", "pixel_embed.", 0),
    ("scratch.head_block.depthwise.depthwise.", "spatial_block.conv.", 0),
]
_KEY_INFIXES = [(".resConfUnit{}.", ".rcu{}.", 0)]


def _template_regex(template: str, anchored: bool) -> re.Pattern:
    return re.compile(("^" if anchored else "") + re.escape(template).replace(r"\{\}", r"(\d+)"))


def _rename(key: str, to_official: bool) -> str:
    """Apply the first matching prefix rule and every infix rule in one direction."""
    for table, anchored in ((_KEY_PREFIXES, True), (_KEY_INFIXES, False)):
        for official, ours, offset in table:
            src, dst, shift = (ours, official, offset) if to_official else (official, ours, -offset)
            rx = _template_regex(src, anchored)
            new = rx.sub(
                lambda m, dst=dst, shift=shift: dst.format(*(int(g) + shift for g in m.groups())), key
            )
            if new != key:
                key = new
                if anchored:
                    break
    return key


def official_to_langseg(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Rename official lang-seg keys (with or without ``net.``) to ours."""
    return OrderedDict((_rename(k, to_official=False), v) for k, v in strip_prefix(sd, "net.").items())


def langseg_to_official(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Our key names -> official lang-seg names with the ``net.`` prefix (inverse of official_to_langseg)."""
    return OrderedDict(("net." + _rename(k, to_official=True), v) for k, v in sd.items())


def is_official(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("net.scratch.", "scratch.", "net.pretrained.", "pretrained.")) for k in sd)


# --------------------------------------------------------------------------- architecture from keys
def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m[1] for k in sd if (m := rx.match(k))})


def _grid(positions: int) -> int:
    """The side of a square grid of ``positions - 1`` tokens (one class token)."""
    return int(round((positions - 1) ** 0.5))


def _text_config(sd: Mapping[str, torch.Tensor]) -> TextConfig:
    width = sd["text_encoder.token_embedding.weight"].shape[1]
    return TextConfig(
        width=width,
        layers=_count(sd, r"text_encoder\.transformer\.resblocks\.(\d+)\."),
        heads=max(1, width // 64),
        context_length=sd["text_encoder.positional_embedding"].shape[0],
        vocab_size=sd["text_encoder.token_embedding.weight"].shape[0],
        embed_dim=sd["text_encoder.text_projection"].shape[1],
    )


def _clip_visual_config(sd: Mapping[str, torch.Tensor]) -> ClipVisualConfig | None:
    """The unused CLIP image tower the file carries (a ViT or a ResNet), or None."""
    if "text_encoder.visual.attnpool.c_proj.weight" in sd:
        width = sd["text_encoder.visual.conv1.weight"].shape[0] * 2
        layers = tuple(_count(sd, rf"text_encoder\.visual\.layer{i}\.(\d+)\.") for i in range(1, 5))
        side = _grid(sd["text_encoder.visual.attnpool.positional_embedding"].shape[0])
        return ClipVisualConfig("resnet", side * 32, width, layers, width * 32 // 64)
    if "text_encoder.visual.conv1.weight" in sd:
        w = sd["text_encoder.visual.conv1.weight"]
        width, patch = w.shape[0], w.shape[-1]
        grid = _grid(sd["text_encoder.visual.positional_embedding"].shape[0])
        layers = _count(sd, r"text_encoder\.visual\.transformer\.resblocks\.(\d+)\.")
        return ClipVisualConfig("vit", grid * patch, width, layers, width // 64, patch)
    return None


_VIT_VARIANTS = {  # (patch, trunk width, text embedding dim) -> the variant whose other fields apply
    (16, 1024, 512): "lseg_vitl16_384",
    (32, 768, 512): "lseg_vitb32_384",
    (16, 1024, 768): "lseg_rn50x16_vitl16_384",
}


def _trunk_config(sd: Mapping[str, torch.Tensor], text: TextConfig) -> LSegConfig:
    """The variant with the image trunk the keys describe (a ViT or a ResNet)."""
    if "image_encoder.resnet.conv1.weight" in sd:
        layers = tuple(_count(sd, rf"image_encoder\.resnet\.layer{i}\.(\d+)\.") for i in range(1, 5))
        return dataclasses.replace(model_config("lseg_zs_rn101"), resnet=ResNetConfig(layers=layers))
    if "image_encoder.vit.pos_embed" not in sd:
        raise CheckpointError("cannot tell the image encoder: neither ViT nor ResNet keys are present")
    pos = sd["image_encoder.vit.pos_embed"]
    dim, patch = pos.shape[2], sd["image_encoder.vit.patch_embed.proj.weight"].shape[-1]
    depth = _count(sd, r"image_encoder\.vit\.blocks\.(\d+)\.")
    head = sd.get("image_encoder.vit.head.weight")
    vit = ViTConfig(
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=max(1, dim // 64),
        mlp_ratio=sd["image_encoder.vit.blocks.0.mlp.fc1.weight"].shape[0] / dim,
        img_size=_grid(pos.shape[1]) * patch,
        hooks=tuple(depth // 4 * (i + 1) - 1 for i in range(4)),
        num_classes=0 if head is None else head.shape[0],
    )
    base = _VIT_VARIANTS.get((patch, dim, text.embed_dim), "lseg_tiny")
    return dataclasses.replace(model_config(base), vit=vit, resnet=None)


def infer_config(sd: Mapping[str, torch.Tensor], **overrides: Any) -> LSegConfig:
    """Infer the architecture from our key names and shapes (official files store no hyper-parameters)."""
    arch_option = overrides.pop("arch_option", None)
    if "spatial_block.conv.weight" in sd and arch_option is None:
        raise CheckpointError(
            "the checkpoint has a spatial regularization block (scratch.head_block), whose kind cannot be read "
            "from the weights: pass arch_option=1 (bottleneck) or 2 (depthwise) and block_depth"
        )
    try:
        text = _text_config(sd)
        cfg = dataclasses.replace(
            _trunk_config(sd, text),
            text=text,
            clip_visual=_clip_visual_config(sd),
            features=sd["neck.proj.0.weight"].shape[0],
            reassemble_channels=tuple(sd[f"neck.proj.{i}.weight"].shape[1] for i in range(4)),
            arch_option=arch_option or 0,
        )
        cfg = dataclasses.replace(cfg, **overrides)
        check_ranges(cfg)
        return cfg
    except KeyError as e:
        raise CheckpointError(f"cannot tell the LSeg variant: key {e} is missing") from None
    except (IndexError, ValueError, TypeError, ZeroDivisionError, AttributeError) as e:
        raise CheckpointError(f"cannot tell the LSeg variant from the tensor shapes: {e}") from None


# ------------------------------------------------------------------------------------ loading
def read_official(path: str | Path, **overrides: Any) -> tuple[LSeg, dict[str, torch.dtype]]:
    """The network of an official ``.ckpt`` and the dtype of each of its tensors in the file."""
    sd = unwrap_state_dict(read_torch_file(path), path)
    if not is_official(sd):
        raise CheckpointError(f"{path}: not an official lang-seg checkpoint (no 'net.scratch.*' keys)")
    sd = official_to_langseg(sd)
    try:
        cfg = infer_config(sd, **overrides)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    model = build_lseg(cfg)
    load_weights(model, sd, str(path))
    return model.eval(), {k: v.dtype for k, v in sd.items()}


def load_official_checkpoint(path: str | Path, **overrides: Any) -> LSeg:
    """Build and load a network from an official lang-seg Lightning ``.ckpt``."""
    return read_official(path, **overrides)[0]
