"""LSegPredictor: images in (paths, PIL, numpy), label maps and features out, at the original size."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .accel import Precision, autocast, resolve_precision
from .images import DEFAULT_MAX_PIXELS, to_rgb_array
from .inference import MapFn, MultiScaleConfig, multi_scale, normalize, pad_to, pad_value, single_scale
from .labels import display_names, parse_labels
from .models.lseg import LSeg
from .upsample import BAND_BYTES, label_map, row_bands, upsample_rows

__all__ = [
    "BAND_BYTES",
    "LSegPredictor",
    "Prediction",
    "available_memory",
    "label_map",
    "memory_estimate",
    "resolve_device",
    "row_bands",
    "upsample_rows",
]

ImageLike = str | Path | Image.Image | np.ndarray


@dataclass
class Prediction:
    """Result for one image at its original (EXIF-upright) size.

    With ``return_logits`` the network's logits are kept at the size the network saw (bounded by
    ``max_side``); :attr:`logits` upsamples them to the original size on access (``K x H x W``
    float32, as much memory as that takes), :meth:`logit_rows` streams them in bands of rows.
    """

    labels: np.ndarray  # (H, W) int32 index into `label_names`
    scores: np.ndarray  # (H, W) float32 softmax probability of the chosen label
    label_names: list[str]  # display name of each index
    processed_logits: torch.Tensor | None = None  # (K, h, w) float32 on the CPU, when asked for

    @property
    def logits(self) -> torch.Tensor | None:
        """``(K, H, W)`` float32 logits at the original size (``None`` unless asked for)."""
        if self.processed_logits is None:
            return None
        return upsample_rows(self.processed_logits, self.labels.shape, 0, self.labels.shape[0])

    def logit_rows(self, band_bytes: int = BAND_BYTES) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(y0, y1, (K, y1 - y0, W) float32)`` bands of the full-size logits, top to bottom."""
        if self.processed_logits is None:
            raise ValueError("no logits kept; predict with return_logits=True")
        size = self.labels.shape
        for y0, y1 in row_bands(size, len(self.label_names), band_bytes):
            yield y0, y1, upsample_rows(self.processed_logits, size, y0, y1)

    def shares(self) -> dict[str, float]:
        """Fraction of pixels per label (every label listed, summing to 1)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.label_names))
        total = max(int(counts.sum()), 1)
        return {name: float(c) / total for name, c in zip(self.label_names, counts)}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> CUDA if present, else MPS, else CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but PyTorch sees no CUDA GPU")
    return dev


class LSegPredictor:
    """Runs an :class:`LSeg` on ordinary images with the checkpoint's own preprocessing.

    Single scale pads each image to a multiple of 32 (normalized black) and crops back; multi-scale
    runs the official evaluator. ``precision`` sets autocast (the model's weights stay as loaded);
    ``"auto"`` is bf16 on CUDA and fp32 elsewhere.
    ``flip`` adds the horizontally flipped run to single-scale inference, as the official
    ``module_inference`` does (multi-scale takes its flip from its :class:`MultiScaleConfig`).
    ``background`` is the colour transparent pixels are composited on.
    """

    def __init__(
        self,
        model: LSeg,
        *,
        device: str | torch.device | None = None,
        precision: Precision = "auto",
        templates: Sequence[str] | None = None,
        multi_scale: MultiScaleConfig | bool | None = None,
        max_side: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        flip: bool = False,
        background: tuple[int, int, int] = (255, 255, 255),
    ) -> None:
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be at least 32, got {max_side}")
        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.precision = resolve_precision(self.device, precision)  # "auto": bf16 on CUDA, fp32 elsewhere
        self.templates = list(templates) if templates else None
        if multi_scale is True:
            multi_scale = MultiScaleConfig()
        self.multi_scale = multi_scale or None
        self.max_side = max_side
        self.max_pixels = max_pixels
        self.flip = bool(flip)
        self.background = tuple(background)
        cfg = model.config
        self.pad = pad_value(cfg.mean, cfg.std).to(self.device)

    # ---------------------------------------------------------------- helpers
    def _autocast(self):
        return autocast(self.device, self.precision)

    def processed_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` the network sees for an upright ``height x width`` image (``max_side`` applied)."""
        if self.max_side is None or max(height, width) <= self.max_side:
            return height, width
        s = self.max_side / max(height, width)
        return max(1, round(height * s)), max(1, round(width * s))

    def preprocess(self, image: ImageLike) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> normalized ``(1, 3, h, w)`` float32 on the device, and the original ``(H, W)``."""
        arr = to_rgb_array(image, max_pixels=self.max_pixels, background=self.background)
        H, W = arr.shape[:2]
        h, w = self.processed_size(H, W)
        if (h, w) != (H, W):
            arr = np.array(Image.fromarray(arr).resize((w, h), Image.BILINEAR))  # writable, for torch
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.array(arr)  # torch.from_numpy needs a writable, contiguous array
        x = torch.from_numpy(arr).permute(2, 0, 1).float().div(255)[None]  # (1, 3, h, w)
        x = normalize(x, self.model.config.mean, self.model.config.std)
        return x.to(self.device), (H, W)

    def text_features(self, labels: Sequence[str | Sequence[str]] | str) -> tuple[torch.Tensor, list[str]]:
        """Labels (a string is parsed: commas, ``;`` synonyms) -> ``(K, D)`` cached embeddings and names."""
        classes = (
            parse_labels(labels)
            if isinstance(labels, str)
            else [(lab,) if isinstance(lab, str) else tuple(lab) for lab in labels]
        )
        return self.model.encode_text(classes, self.templates), display_names(classes)

    def _flipped(self, net, batch: torch.Tensor) -> torch.Tensor:
        """``net(x) + flip(net(flip(x)))`` when single-scale flip is on (the official ``module_inference``)."""
        if not self.flip or self.multi_scale is not None:
            return net(batch)
        return net(batch) + net(batch.flip(-1)).flip(-1)

    def _map_fn(self, text: torch.Tensor):
        def fn(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), self._autocast():
                return self._flipped(lambda b: self.model(b, text).float(), batch)

        return fn

    def logits_tensor(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Normalized ``(B, 3, h, w)`` -> ``(B, K, h, w)`` float32 logits under the chosen protocol."""
        return self._run_protocol(self._map_fn(text), x)

    def _run_protocol(self, fn: MapFn, x: torch.Tensor) -> torch.Tensor:
        """``fn`` over a normalized batch: single scale (padded to 32), or multi-scale image by image."""
        if self.multi_scale is None:
            return single_scale(fn, x, self.pad)
        return torch.cat([multi_scale(fn, xi[None], self.pad, self.multi_scale) for xi in x], dim=0)

    # ------------------------------------------------------------------- API
    def predict(
        self,
        images: ImageLike | Iterable[ImageLike],
        labels: Sequence[str | Sequence[str]] | str | None = None,
        *,
        batch_size: int = 1,
        return_logits: bool = False,
    ) -> Prediction | list[Prediction]:
        """Segment one image or a list; ``labels`` default to the checkpoint's own label set."""
        single = isinstance(images, (str, Path, Image.Image, np.ndarray))
        items = [images] if single else list(images)
        text, names = self.text_features(labels if labels is not None else list(self.model.config.labels))
        results: list[Prediction] = []
        for x, sizes in self._batches(items, batch_size):
            logits = self.logits_tensor(x, text)  # (B, K, h, w)
            results += [self._finish(lg, size, names, return_logits) for lg, size in zip(logits, sizes)]
        return results[0] if single else results

    def _batches(
        self, items: Iterable[ImageLike], batch_size: int
    ) -> Iterator[tuple[torch.Tensor, list[tuple[int, int]]]]:
        """Preprocess lazily and group consecutive images of one processed size, at most ``batch_size``
        (one at a time with multi-scale) -> normalized ``(B, 3, h, w)`` and each original ``(H, W)``."""
        pending: list[tuple[torch.Tensor, tuple[int, int]]] = []
        for item in items:
            x, size = self.preprocess(item)
            if pending and (pending[0][0].shape != x.shape or len(pending) >= batch_size or self.multi_scale):
                yield torch.cat([p[0] for p in pending], dim=0), [p[1] for p in pending]
                pending = []
            pending.append((x, size))
        if pending:
            yield torch.cat([p[0] for p in pending], dim=0), [p[1] for p in pending]

    def _finish(
        self, logits: torch.Tensor, size: tuple[int, int], names: list[str], keep: bool
    ) -> Prediction:
        labels, scores = label_map(logits, size)
        return Prediction(labels, scores, names, logits.float().cpu() if keep else None)

    def memory_estimate(self, height: int, width: int, n_labels: int, *, images: int = 1) -> int:
        """Bytes of host (or device) memory one ``height x width`` image with ``n_labels`` labels needs
        beyond the loaded model, under this predictor's settings (an upper estimate, see
        ``docs/performance.md``). ``images``: that many such images in one network call."""
        return memory_estimate(
            self.model.config,
            (height, width),
            self.processed_size(height, width),
            n_labels,
            multi_scale=self.multi_scale,
            flip=self.flip,
            images=images,
        )

    def features(
        self,
        images: ImageLike | Iterable[ImageLike],
        *,
        resolution: Literal["half", "full"] | tuple[int, int] = "half",
        batch_size: int = 1,
        keep_on_device: bool = True,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Unit-norm per-pixel embeddings ``(D, h, w)``: half resolution (default), full, or ``(W, H)``.

        One image gives a tensor, a list gives a list. Consecutive images of the same processed size go
        through the network ``batch_size`` at a time (single scale; multi-scale takes one at a time).
        The results stay on the model's device (no host copy) unless ``keep_on_device=False``.
        """
        single = isinstance(images, (str, Path, Image.Image, np.ndarray))
        items = [images] if single else list(images)
        _feature_size(resolution, (1, 1), (1, 1))  # an unknown resolution fails before any image work
        results: list[torch.Tensor] = []
        for x, sizes in self._batches(items, batch_size):
            results += self._embed(x, sizes, resolution)
        if not keep_on_device:
            results = [f.cpu() for f in results]
        return results[0] if single else results

    def _embed(
        self,
        x: torch.Tensor,
        sizes: list[tuple[int, int]],
        resolution: Literal["half", "full"] | tuple[int, int],
    ) -> list[torch.Tensor]:
        """Normalized ``(B, 3, h, w)`` and the originals' ``(H, W)`` -> B unit-norm ``(D, h', w')`` maps."""
        h, w = x.shape[-2:]

        def encode(batch: torch.Tensor) -> torch.Tensor:  # (N, 3, s, s) -> (N, D, s/2, s/2)
            return self.model.encode_image(batch).float()

        def fn(batch: torch.Tensor) -> torch.Tensor:  # (N, 3, s, s) -> (N, D, s, s) unit-norm embeddings
            with torch.inference_mode(), self._autocast():
                emb = self._flipped(encode, batch)
            return F.interpolate(emb, scale_factor=2, mode="bilinear", align_corners=True)

        feats: list[torch.Tensor] = []
        if self.multi_scale is None and resolution == "half":
            with torch.inference_mode(), self._autocast():
                H32, W32 = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
                emb = self._flipped(encode, pad_to(x, H32, W32, self.pad))  # (B, D, H32/2, W32/2)
            out_h, out_w = _feature_size(resolution, (h, w), sizes[0])
            for e in emb[:, :, :out_h, :out_w]:  # (D, h/2, w/2) each
                feats.append(F.normalize(e, dim=0) if self.flip else e)
        else:
            emb = self._run_protocol(fn, x)  # (B, D, h, w)
            for e, size in zip(emb, sizes):
                out_size = _feature_size(resolution, (h, w), size)
                if e.shape[-2:] != out_size:
                    e = F.interpolate(e[None], size=out_size, mode="bilinear", align_corners=True)[0]
                feats.append(F.normalize(e, dim=0))
        return [f.contiguous() for f in feats]


def available_memory() -> int:
    """Bytes the system can give this process now without swapping (``psutil``'s "available")."""
    import psutil

    return int(psutil.virtual_memory().available)


def memory_estimate(
    config,
    size: tuple[int, int],
    processed: tuple[int, int],
    n_labels: int,
    *,
    multi_scale: MultiScaleConfig | None = None,
    flip: bool = False,
    images: int = 1,
) -> int:
    """Upper estimate of the bytes one prediction needs beyond the model (see ``docs/performance.md``).

    * per original pixel: the decoded image, its network copy, label map, scores and their encodings
      (``PIXEL_BYTES``), whatever the label count;
    * the logits at the size the network sees (bounded by ``max_side``), one copy, and one band
      of full-size rows (``BAND_BYTES``);
    * the network's activations at the size it sees (or at the window size with windows).
    """
    H, W = size
    h, w = processed
    h32, w32 = -(-h // 32) * 32, -(-w // 32) * 32
    dim = config.text.embed_dim
    per_net_px = 2 * (config.features + dim) + 5 * n_labels  # decoder maps, embeddings, logits
    if multi_scale is None:
        net = per_net_px * h32 * w32 * (2 if flip else 1)
        maps = 2 * 4 * n_labels * h * w  # logits at the network's size and one copy
    else:
        crop = multi_scale.crop_size
        net = per_net_px * crop * crop * multi_scale.batch_size * (2 if multi_scale.flip else 1)
        base = multi_scale.base_size or max(h, w)
        maps = 2 * 4 * n_labels * h * w
        for s in multi_scale.scales:
            long = math.ceil(base * s)
            short = max(1, round(min(h, w) * long / max(h, w)))
            maps += 4 * (n_labels + 1) * max(long, crop) * max(short, crop)  # accumulator and count
    band = 3 * min(max(BAND_BYTES, 4 * n_labels * W), 4 * n_labels * H * W)  # rows, softmax, copy
    return images * (PIXEL_BYTES * H * W + net + maps) + band


PIXEL_BYTES = 64  # per original pixel: RGB in and its copies, int32 labels, float32 scores, overlay, PNGs


def _feature_size(
    resolution: Literal["half", "full"] | tuple[int, int],
    processed: tuple[int, int],
    original: tuple[int, int],
) -> tuple[int, int]:
    """``(h, w)`` of a feature map: half the processed size (rounded up), the original, or ``(W, H)`` given."""
    if resolution == "half":
        return math.ceil(processed[0] / 2), math.ceil(processed[1] / 2)
    if resolution == "full":
        return original
    if isinstance(resolution, tuple) and len(resolution) == 2:
        return int(resolution[1]), int(resolution[0])
    raise ValueError(f"unknown resolution {resolution!r}; expected 'half', 'full' or (width, height)")
