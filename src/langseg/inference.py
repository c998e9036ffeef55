"""Inference protocols shared by the Predictor, ``langseg segment``/``features`` and evaluation.

* :func:`single_scale` pads the normalized image to a multiple of 32 (with the normalized black
  value) and crops the output back: no hidden resize.
* :func:`multi_scale` is the official evaluator (``MultiEvalModule``): scales of a 520 base size,
  480 crops, stride 320 sliding windows, horizontal flip, outputs summed over flips and scales. The
  windows of all scales are batched instead of run one at a time; the arithmetic is the same.
  :meth:`MultiScaleConfig.sliding_window` runs the same windows over the image at its own size (one
  scale, no resize): memory is bounded by the window batch, not by the image size.

Both take ``fn``: a function from a normalized ``(N, 3, h, w)`` batch to ``(N, C, h, w)`` maps
(logits for segmentation, upsampled embeddings for features).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MapFn = Callable[[torch.Tensor], torch.Tensor]

OFFICIAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(frozen=True)
class MultiScaleConfig:
    """The official evaluator's settings (``base_size`` 520, ``crop_size`` 480, stride 2/3 crop)."""

    scales: tuple[float, ...] = OFFICIAL_SCALES  # multiples of base_size for the long side
    flip: bool = True  # add the horizontally flipped run, flipped back
    base_size: int | None = 520  # long side at scale 1; None: each image's own long side
    crop_size: int = 480  # every network call sees crop_size x crop_size
    stride_rate: float = 2 / 3  # window stride = int(crop_size * stride_rate)
    batch_size: int = 8  # windows per network call

    def __post_init__(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {self.scales}")
        if self.crop_size < 32 or self.crop_size % 32:
            raise ValueError(f"crop_size must be a positive multiple of 32, got {self.crop_size}")
        if not 0 < self.stride_rate <= 1 or self.stride < 1:
            raise ValueError(f"stride_rate must be in (0, 1], got {self.stride_rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.base_size is not None and self.base_size < 1:
            raise ValueError(f"base_size must be positive or None, got {self.base_size}")

    @classmethod
    def sliding_window(
        cls, crop_size: int = 480, *, stride_rate: float = 2 / 3, flip: bool = False, batch_size: int = 8
    ) -> MultiScaleConfig:
        """Windows over the image at its own resolution: one scale, no resize, bounded memory for large images."""
        return cls(
            scales=(1.0,),
            flip=flip,
            base_size=None,
            crop_size=crop_size,
            stride_rate=stride_rate,
            batch_size=batch_size,
        )

    @property
    def stride(self) -> int:
        return int(self.crop_size * self.stride_rate)


def pad_to(x: torch.Tensor, height: int, width: int, value: torch.Tensor) -> torch.Tensor:
    """Pad ``(B, C, h, w)`` at the bottom/right to at least ``height x width`` with a per-channel value."""
    B, C, h, w = x.shape
    ph, pw = max(height - h, 0), max(width - w, 0)
    if ph == 0 and pw == 0:
        return x
    out = value.to(x.dtype).view(1, C, 1, 1).expand(B, C, h + ph, w + pw).clone()
    out[:, :, :h, :w] = x
    return out


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, ``align_corners=True`` (the official up/down-sampling of images and score maps)."""
    if x.shape[-2:] == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=True)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB in [0, 1], ``(..., 3, H, W)`` -> the network's input ``(x - mean) / std`` per channel.

    The one normalization of images for the network: the predictor, the zero-shot episodes and
    the training transforms all use it, with the model config's ``mean`` and ``std``.
    """
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def pad_value(mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The normalized value of a black pixel, ``-mean/std`` per channel."""
    return normalize(torch.zeros(3, 1, 1), mean, std).flatten()


def single_scale(fn: MapFn, image: torch.Tensor, value: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """``(B, 3, h, w)`` normalized -> ``(B, C, h, w)``: pad to a multiple of 32, run once, crop back."""
    _, _, h, w = image.shape
    H, W = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    out = fn(pad_to(image, H, W, value))
    return out[:, :, :h, :w]


def scale_size(h: int, w: int, scale: float, base_size: int) -> tuple[int, int]:
    """The official resized (height, width): long side ``ceil(base*scale)``, short side rounded half up
    (at least one pixel: the official code would make an empty image of a very thin one)."""
    long = max(1, int(math.ceil(base_size * scale)))
    if h > w:
        return long, max(1, int(1.0 * w * long / h + 0.5))
    return max(1, int(1.0 * h * long / w + 0.5)), long


@dataclass
class _Window:
    scale_index: int
    y0: int
    y1: int
    x0: int
    x1: int


def _plan_windows(
    image: torch.Tensor, value: torch.Tensor, cfg: MultiScaleConfig
) -> tuple[list[torch.Tensor], list[tuple[int, int]], list[_Window]]:
    """Per scale, the resized image padded as the official evaluator pads it and its unpadded size;
    and every crop window of every scale, in the evaluator's order."""
    _, _, h, w = image.shape
    crop, stride = cfg.crop_size, cfg.stride
    padded: list[torch.Tensor] = []
    sizes: list[tuple[int, int]] = []
    windows: list[_Window] = []
    base_size = cfg.base_size or max(h, w)
    for si, s in enumerate(cfg.scales):
        height, width = scale_size(h, w, s, base_size)
        img = resize(image, height, width)
        if max(height, width) <= crop or min(height, width) < crop:
            img = pad_to(img, crop, crop, value)
        ph, pw = img.shape[-2:]
        padded.append(img)
        sizes.append((height, width))
        if max(height, width) <= crop:
            windows.append(_Window(si, 0, crop, 0, crop))
            continue
        for iy in range(int(math.ceil((ph - crop) / stride)) + 1):
            for ix in range(int(math.ceil((pw - crop) / stride)) + 1):
                y0, x0 = iy * stride, ix * stride
                windows.append(_Window(si, y0, min(y0 + crop, ph), x0, min(x0 + crop, pw)))
    return padded, sizes, windows


def multi_scale(
    fn: MapFn, image: torch.Tensor, value: torch.Tensor, cfg: MultiScaleConfig = MultiScaleConfig()
) -> torch.Tensor:
    """The official multi-scale, flipped, sliding-window evaluator: ``(1, 3, h, w) -> (1, C, h, w)``."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"multi-scale inference takes one image (1, 3, h, w), got {tuple(image.shape)}")
    _, _, h, w = image.shape
    crop = cfg.crop_size
    padded, sizes, windows = _plan_windows(image, value, cfg)

    accum: list[torch.Tensor | None] = [None] * len(cfg.scales)
    count: list[torch.Tensor | None] = [None] * len(cfg.scales)
    for start in range(0, len(windows), cfg.batch_size):
        chunk = windows[start : start + cfg.batch_size]
        crops = [
            pad_to(padded[wd.scale_index][:, :, wd.y0 : wd.y1, wd.x0 : wd.x1], crop, crop, value)
            for wd in chunk
        ]
        batch = torch.cat(crops, dim=0)  # (n, 3, crop, crop)
        del crops
        n = len(chunk)
        out = fn(torch.cat([batch, batch.flip(-1)], dim=0) if cfg.flip else batch)  # (2n or n, C, crop, crop)
        for i, wd in enumerate(chunk):
            si = wd.scale_index
            if accum[si] is None:
                ph, pw = padded[si].shape[-2:]
                accum[si] = out.new_zeros((out.shape[1], ph, pw))
                count[si] = out.new_zeros((1, ph, pw))
            # the flipped run is flipped back one window at a time: no second batch of maps
            for o in (out[i], out[n + i].flip(-1)) if cfg.flip else (out[i],):
                accum[si][:, wd.y0 : wd.y1, wd.x0 : wd.x1] += o[:, : wd.y1 - wd.y0, : wd.x1 - wd.x0]
            count[si][:, wd.y0 : wd.y1, wd.x0 : wd.x1] += 1
        del batch, out, o  # free this batch's maps (o is a view of out) before the next network call
    scores = None
    for si, (height, width) in enumerate(sizes):
        per_scale = accum[si].div_(count[si])[None, :, :height, :width]
        accum[si] = count[si] = None
        per_scale = resize(per_scale, h, w)
        scores = per_scale if scores is None else scores.add_(per_scale)  # accum is not read again
        del per_scale
    return scores
