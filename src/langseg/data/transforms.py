"""Joint image/mask transforms of the official recipe, on torchvision's v2 transforms.

Training (PyTorch-Encoding ``_sync_transform``, spec 4.6)::

    flip (p=0.5) -> long side to an integer drawn from [lo*base, hi*base] (image bilinear, mask nearest)
    -> pad right/bottom to at least crop (image 0 = black, mask IGNORE) -> random crop x crop
    -> tensor, normalize

Validation (``_val_sync_transform``): short side to ``crop`` (long side truncated), centre crop.

Both take a PIL RGB image and an ``(H, W)`` int mask (class indices, IGNORE_INDEX for unlabeled) and
return ``(3, crop, crop)`` float32 normalized and ``(crop, crop)`` int64. Randomness comes from torch's
global generator; :class:`langseg.data.multi.TrainingSet` seeds it per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..inference import normalize
from .base import IGNORE_INDEX, DatasetError


def _image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    """(H, W) of the image among the transform inputs."""
    for x in flat_inputs:
        if isinstance(x, (Image.Image, tv_tensors.Image)):
            h, w = TF.get_size(x)
            return h, w
    raise TypeError("joint transform needs an image (PIL or tv_tensors.Image) among its inputs")


class RandomLongSideResize(v2.Transform):
    """Resize so the long side is a uniform integer in ``[min_long, max_long]`` (inclusive).

    The short side follows with round-half-up, ``int(short * long / L + 0.5)``, as the official code.
    Images are resized bilinearly, masks with nearest neighbour.
    """

    def __init__(self, min_long: int, max_long: int) -> None:
        super().__init__()
        if not 1 <= min_long <= max_long:
            raise ValueError(f"long-side range must satisfy 1 <= min <= max, got {min_long}..{max_long}")
        self.min_long, self.max_long = min_long, max_long

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        long = int(torch.randint(self.min_long, self.max_long + 1, ()).item())
        if h > w:
            return {"size": [long, int(w * long / h + 0.5)]}
        return {"size": [int(h * long / w + 0.5), long]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(inpt, params["size"])


def _resize(inpt: Any, size: list[int]) -> Any:
    """Images bilinear, masks nearest, both through PIL as in the official code (bit-exact)."""
    if isinstance(inpt, tv_tensors.Mask):
        if inpt.ndim != 2 or inpt.dtype != torch.uint8:
            raise TypeError(f"expected an (H, W) uint8 mask, got {tuple(inpt.shape)} {inpt.dtype}")
        h, w = size
        resized = Image.fromarray(inpt.numpy()).resize((w, h), Image.NEAREST)
        return tv_tensors.Mask(torch.from_numpy(np.array(resized)))
    return TF.resize(inpt, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


class ShortSideResize(v2.Transform):
    """Resize so the short side is ``size``; the long side is truncated, ``int(long * size / short)``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        if w > h:
            return {"size": [self.size, int(w * self.size / h)]}
        return {"size": [int(h * self.size / w), self.size]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(inpt, params["size"])


class PadRightBottom(v2.Transform):
    """Pad on the right and bottom to at least ``size x size``: images with 0, masks with ``mask_fill``."""

    def __init__(self, size: int, mask_fill: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.size, self.mask_fill = size, mask_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        return {"padding": [0, 0, max(self.size - w, 0), max(self.size - h, 0)]}  # left, top, right, bottom

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else 0
        return TF.pad(inpt, params["padding"], fill=fill)


@dataclass
class AugmentConfig:
    """Sizes and ranges of the joint transforms (official values by default)."""

    base_size: int = 520  # the random rescale is relative to this long side
    crop_size: int = 480  # square training / validation crop; a multiple of 32
    scale_range: tuple[float, float] = (0.5, 2.0)  # long side drawn from [lo, hi] x base_size
    flip: bool = True  # random horizontal flip, p = 0.5

    def __post_init__(self) -> None:
        self.scale_range = tuple(self.scale_range)
        if self.crop_size % 32:
            raise ValueError(f"crop_size {self.crop_size} must be a multiple of 32 (the network's stride)")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
        if self.base_size < 1:
            raise ValueError(f"base_size must be positive, got {self.base_size}")


class JointTransform:
    """``(PIL image, (H, W) mask) -> ((3, crop, crop) float32 normalized, (crop, crop) int64)``."""

    def __init__(self, ops: Sequence[v2.Transform], mean: Sequence[float], std: Sequence[float]) -> None:
        self.ops = v2.Compose(
            [
                *ops,
                v2.ToImage(),
                v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            ]
        )
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if mask.shape != (image.height, image.width):
            raise DatasetError(f"mask {mask.shape[::-1]} and image {image.size} differ in size")
        if mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
            raise DatasetError(
                f"mask values must lie in 0..255 (255 = ignore), got {mask.min()}..{mask.max()}"
            )
        m = tv_tensors.Mask(torch.from_numpy(mask.astype(np.uint8)))  # uint8: resize/pad kernels support it
        img, m = self.ops(image, m)
        return normalize(img.as_subclass(torch.Tensor), self.mean, self.std), m.as_subclass(
            torch.Tensor
        ).long()


def train_transform(cfg: AugmentConfig, mean: Sequence[float], std: Sequence[float]) -> JointTransform:
    """The official training augmentation."""
    lo, hi = cfg.scale_range
    ops: list[v2.Transform] = [v2.RandomHorizontalFlip(0.5)] if cfg.flip else []
    ops += [
        RandomLongSideResize(max(1, int(round(lo * cfg.base_size))), max(1, int(round(hi * cfg.base_size)))),
        PadRightBottom(cfg.crop_size, IGNORE_INDEX),
        v2.RandomCrop(cfg.crop_size),
    ]
    return JointTransform(ops, mean, std)


def val_transform(cfg: AugmentConfig, mean: Sequence[float], std: Sequence[float]) -> JointTransform:
    """The official validation transform: short side to ``crop_size``, centre crop."""
    ops = [ShortSideResize(cfg.crop_size), v2.CenterCrop(cfg.crop_size)]
    return JointTransform(ops, mean, std)
