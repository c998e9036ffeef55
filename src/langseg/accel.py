"""Opt-in accelerators around an :class:`~langseg.models.LSeg`: mixed precision, ``channels_last``,
and ``torch.compile`` with shape buckets.

The model-level fast paths (fused attention, folded BatchNorm, ...) live in the model and are
selected with ``model.set_fast_paths``; everything here wraps a model from the outside.

Compile modes (:class:`CompiledLSeg`):

* ``"exact"``: one compiled graph per exact input shape, at most ``max_shapes`` of them (further
  shapes run eagerly). Outputs equal the eager model's to float rounding.
* ``"bucketed"``: inputs are padded (bottom/right, normalized black, as the predictor pads) to the
  smallest bucket size and the output is cropped back, so a stream of varied image sizes reuses a
  few static-shape graphs (what graph accelerators need). **Approximate**: the ViT attends to the
  padded tokens (and the decoder's convolutions see them at the border), so outputs differ from the
  unpadded run everywhere, most near the padded border; see docs/performance.md for measured sizes.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from .models.lseg import LSeg

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------- precision
def resolve_precision(device: torch.device | str, precision: Precision = "auto") -> str:
    """``"auto"`` -> bf16 on a CUDA GPU that supports it (else fp16), fp32 elsewhere."""
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision not in DTYPES:
        raise ValueError(f"unknown precision {precision!r}; expected 'auto' or one of {sorted(DTYPES)}")
    return precision


def autocast(device: torch.device | str, precision: Precision = "auto") -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` on ``device`` (a no-op for fp32).

    Weights stay fp32; matmuls and convolutions run in the low precision, reductions in fp32. The
    model returns float32 logits either way, and text embeddings are always computed in fp32.
    """
    device = torch.device(device)
    name = resolve_precision(device, precision)
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[name])


def channels_last(model: nn.Module) -> nn.Module:
    """Store every 4-D weight NHWC, so convolutions run (and return maps) in ``channels_last``.

    Inputs need no conversion: a convolution whose weight is ``channels_last`` produces a
    ``channels_last`` output. Returns ``model`` (converted in place).
    """
    return model.to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------ compile
@dataclass(frozen=True)
class ShapeBuckets:
    """Bucket sizes for ``"bucketed"`` compilation."""

    multiple: int = 128  # image sides are padded up to a multiple of this (a multiple of 32)
    max_side: int = 1024  # larger sides are not bucketed (compiled per exact shape instead)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)  # batches are padded up to one of these

    def __post_init__(self) -> None:
        if self.multiple <= 0 or self.multiple % 32:
            raise ValueError(f"bucket multiple must be a positive multiple of 32, got {self.multiple}")
        if not self.batch_sizes or sorted(self.batch_sizes) != list(self.batch_sizes):
            raise ValueError(f"batch_sizes must be increasing, got {self.batch_sizes}")

    def side(self, n: int) -> int:
        """Bucketed side for ``n`` pixels (unchanged above ``max_side``)."""
        if n > self.max_side:
            return n
        return math.ceil(n / self.multiple) * self.multiple

    def batch(self, n: int) -> int:
        """Bucketed batch size (unchanged above the largest bucket)."""
        return next((b for b in self.batch_sizes if b >= n), n)


class CompiledLSeg(nn.Module):
    """An :class:`LSeg` whose image path (``forward_embeddings``) runs through ``torch.compile``.

    It offers the model's inference API (``forward``, ``encode_image``, ``forward_embeddings``,
    ``encode_text``, ``config``), so it can stand in for the model, e.g. in ``LSegPredictor``.
    Text encoding and the small logits step stay eager, so new label sets never recompile.

    Expect the first call per shape to take tens of seconds (minutes for ViT-L on a small CPU).
    """

    def __init__(
        self,
        model: LSeg,
        *,
        mode: Literal["exact", "bucketed"] = "exact",
        buckets: ShapeBuckets = ShapeBuckets(),
        max_shapes: int = 8,
        backend: str = "inductor",
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("exact", "bucketed"):
            raise ValueError(f"unknown compile mode {mode!r}; expected 'exact' or 'bucketed'")
        limit = torch._dynamo.config.recompile_limit
        if max_shapes < 1 or max_shapes > limit:
            raise ValueError(f"max_shapes must be between 1 and torch._dynamo's recompile limit ({limit})")
        self.model = model
        self.mode = mode
        self.buckets = buckets
        self.max_shapes = max_shapes
        self._compiled = torch.compile(
            model.forward_embeddings, dynamic=False, backend=backend, options=options
        )
        self._shapes: OrderedDict[tuple, None] = OrderedDict()  # shapes compiled so far
        self._warned = False
        from .inference import pad_value

        self.register_buffer("pad", pad_value(model.config.mean, model.config.std), persistent=False)

    # ---------------------------------------------------------------- delegation
    @property
    def config(self):
        return self.model.config

    @property
    def logit_scale(self) -> float:
        return self.model.logit_scale

    @property
    def stride(self) -> int:
        return self.model.stride

    def encode_text(self, labels, templates=None) -> torch.Tensor:
        return self.model.encode_text(labels, templates)

    def text_features(self, labels) -> torch.Tensor:
        return self.model.text_features(labels)

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """Input shapes that have a compiled graph, oldest first."""
        return list(self._shapes)

    # -------------------------------------------------------------------- running
    def input_shape(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        """The shape the compiled graph sees for an input of ``shape`` ``(B, 3, H, W)``."""
        B, C, H, W = shape
        if self.mode == "exact":
            return (B, C, H, W)
        return (self.buckets.batch(B), C, self.buckets.side(H), self.buckets.side(W))

    def forward_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, D, H/2, W/2)`` un-normalized embeddings, through the compiled graph."""
        self.model.check_input(images)
        B, _, H, W = images.shape
        shape = self.input_shape(images.shape)
        x = images
        if shape != tuple(images.shape):
            x = self._pad(images, shape)
        if shape not in self._shapes and len(self._shapes) >= self.max_shapes:
            if not self._warned:
                logger.warning(
                    "compiled %d shapes already; running %s (and later new shapes) eagerly",
                    self.max_shapes,
                    shape,
                )
                self._warned = True
            return self.model.forward_embeddings(images)
        self._shapes[shape] = None
        out = self._compiled(x)
        return out[:B, :, : H // 2, : W // 2]

    def _pad(self, images: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
        Bp, C, Hp, Wp = shape
        B, _, H, W = images.shape
        out = self.pad.to(images.dtype).view(1, C, 1, 1).expand(Bp, C, Hp, Wp).clone()  # normalized black
        out[:B, :, :H, :W] = images
        return out

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, D, H/2, W/2)`` unit-norm embeddings."""
        return torch.nn.functional.normalize(self.forward_embeddings(images).float(), dim=1)

    def forward(self, images: torch.Tensor, labels) -> torch.Tensor:
        """``(B, 3, H, W)`` and K labels (or text features) -> ``(B, K, H, W)`` float32 logits."""
        text = self.model.text_features(labels)
        if text.ndim == 3 and text.shape[0] != images.shape[0]:
            raise ValueError(f"{text.shape[0]} per-image label sets for {images.shape[0]} images")
        return self.model.logits_from_embeddings(self.forward_embeddings(images), text)
