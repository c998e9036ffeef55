"""The model side of the demo: one loaded model per process behind a bounded queue.

:class:`LocalBackend` owns the model and two :class:`~langseg.LSegPredictor` views of it (single and
multi-scale, sharing one text-embedding cache). Every inference, from the UI or the HTTP API, takes a
slot: at most ``concurrency`` run at once, at most ``queue_size`` wait, the rest get :class:`BusyError`.
Images arriving as bytes are decoded inside the slot, so memory stays bounded by the slot count.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..errors import LabelError, LangsegError
from ..labels import Label, parse_labels
from .codec import decode_image
from .config import AppConfig

log = logging.getLogger(__name__)

ImageInput = Image.Image | bytes  # a decoded RGB image, or an encoded file as uploaded


class BusyError(LangsegError):
    """Every inference slot is taken and the waiting queue is full (HTTP 503)."""


class BackendError(LangsegError):
    """A remote backend could not be reached or answered something unusable (HTTP 502)."""


@dataclass
class BackendInfo:
    """What a frontend needs to know about the backend it talks to."""

    model: str  # weights name or path
    device: str  # where inference runs
    default_labels: str  # the checkpoint's labels as a label string ("dog, grass, other")
    max_pixels: int  # images above this are refused
    max_upload_bytes: int  # uploads above this are refused
    max_labels: int  # longer label lists are refused

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SegmentResult:
    """One segmentation at the original (EXIF-upright) image size."""

    names: list[str]  # display name of each label index
    mask: np.ndarray  # (H, W) int32 label index per pixel
    shares: dict[str, float]  # fraction of pixels per label, summing to 1
    seconds: float  # inference time (decode + model), excluding time spent waiting for a slot
    multi_scale: bool  # whether the multi-scale evaluator was used


@dataclass
class FeatureResult:
    """Dense features of one image, reduced to what the UI shows."""

    names: list[str]  # display name of each label
    pca: np.ndarray  # (h, w, 3) uint8: first three principal components of the feature grid
    similarity: np.ndarray  # (K, h, w) float32 cosine similarity of each grid cell to each label
    logit_scale: float  # the model's temperature: softmax(logit_scale * similarity) = label probabilities
    size: tuple[int, int]  # (H, W) of the original image; the grid covers it proportionally
    seconds: float  # inference time


class Backend(Protocol):
    """What the UI and the HTTP API call: a local model or a remote ``langseg app``."""

    def info(self) -> BackendInfo: ...

    def segment(
        self, image: ImageInput, labels: str | None = None, multi_scale: bool = False, *, name: str = "image"
    ) -> SegmentResult: ...

    def features(
        self, image: ImageInput, labels: str | None = None, *, name: str = "image"
    ) -> FeatureResult: ...


def label_string(labels: tuple[str | tuple[str, ...], ...] | list) -> str:
    """Config labels -> the text a user would type (``"dog, grass, other"``, ``;`` for synonyms)."""
    return ", ".join(lab if isinstance(lab, str) else ";".join(lab) for lab in labels)


class LocalBackend:
    """Serves one in-process model; thread-safe, with bounded concurrency."""

    def __init__(self, model: torch.nn.Module, config: AppConfig) -> None:
        from ..predictor import LSegPredictor

        self.config = config
        self.model = model
        common = {"precision": config.precision, "max_side": config.max_side, "max_pixels": None}
        self.single = LSegPredictor(model, **common)
        self.multi = LSegPredictor(model, multi_scale=config.multi_scale or True, **common)
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._count_lock = threading.Lock()
        self.pending = 0  # requests running or waiting
        self.active = 0  # requests running
        self.peak_active = 0  # most requests ever running at once (for monitoring and tests)

    @classmethod
    def from_config(cls, config: AppConfig) -> LocalBackend:
        """Load ``config.weights`` once onto ``config.device``."""
        from ..weights import load_model

        device = None if config.device == "auto" else config.device
        model = load_model(config.weights, device=device)
        log.info("loaded %s on %s", config.weights, next(model.parameters()).device)
        return cls(model, config)

    # ------------------------------------------------------------ plumbing
    def info(self) -> BackendInfo:
        return BackendInfo(
            model=str(getattr(self.model, "source", self.config.weights)),
            device=str(self.single.device),
            default_labels=self.config.default_labels or label_string(self.model.config.labels),
            max_pixels=self.config.max_pixels,
            max_upload_bytes=self.config.max_upload_bytes,
            max_labels=self.config.max_labels,
        )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for an inference slot, or raise :class:`BusyError` when the queue is full."""
        with self._count_lock:
            if self.pending >= self.config.concurrency + self.config.queue_size:
                raise BusyError(
                    f"the server is busy ({self.pending} requests running or waiting); try again shortly"
                )
            self.pending += 1
        try:
            with self._slots:
                with self._count_lock:
                    self.active += 1
                    self.peak_active = max(self.peak_active, self.active)
                try:
                    yield
                finally:
                    with self._count_lock:
                        self.active -= 1
        finally:
            with self._count_lock:
                self.pending -= 1

    def parse(self, labels: str | None) -> list[Label]:
        """A label string (``None``/blank = the defaults) -> validated classes."""
        text = labels if labels is not None and labels.strip() else self.info().default_labels
        classes = parse_labels(text)
        if len(classes) > self.config.max_labels:
            raise LabelError(
                f"{len(classes)} labels given; this server accepts at most {self.config.max_labels}"
            )
        return classes

    def _image(self, image: ImageInput, name: str) -> Image.Image:
        if isinstance(image, Image.Image):
            w, h = image.size
            if w * h > self.config.max_pixels:
                from .codec import ImageTooLargeError

                raise ImageTooLargeError(
                    f"{name}: {w}x{h} = {w * h:,} pixels is above the limit of {self.config.max_pixels:,}"
                )
            return image.convert("RGB") if image.mode != "RGB" else image
        return decode_image(
            image, name=name, max_pixels=self.config.max_pixels, max_bytes=self.config.max_upload_bytes
        )

    def _text(self, classes: list[Label]) -> tuple[torch.Tensor, list[str]]:
        return self.single.text_features(classes)  # fills the model's cache; predict() then finds it

    # ------------------------------------------------------------------ API
    def segment(
        self, image: ImageInput, labels: str | None = None, multi_scale: bool = False, *, name: str = "image"
    ) -> SegmentResult:
        """Label every pixel of ``image`` (called ``name`` in error messages) with one of ``labels``."""
        classes = self.parse(labels)
        with self.slot():
            start = time.perf_counter()
            img = self._image(image, name)
            self._text(classes)
            predictor = self.multi if multi_scale else self.single
            pred = predictor.predict(np.array(img), classes)  # a writable (H, W, 3) uint8 copy
            seconds = time.perf_counter() - start
        log.info("segmented %dx%d, %d labels in %.2f s", img.width, img.height, len(classes), seconds)
        return SegmentResult(pred.label_names, pred.labels, pred.shares(), seconds, multi_scale)

    def features(self, image: ImageInput, labels: str | None = None, *, name: str = "image") -> FeatureResult:
        """PCA picture of the dense features, and each grid cell's similarity to each label."""
        from ..visualize import pca_rgb

        classes = self.parse(labels)
        with self.slot():
            start = time.perf_counter()
            img = self._image(image, name)
            text, names = self._text(classes)  # (K, D) unit norm
            feats = self.single.features(np.array(img), keep_on_device=False)  # (D, h, w) unit norm, CPU
            sim = torch.einsum("kd,dhw->khw", text.float().cpu(), feats.float())  # (K, h, w) cosine
            pca = np.asarray(pca_rgb(feats))
            seconds = time.perf_counter() - start
        return FeatureResult(
            names, pca, sim.numpy(), float(self.model.logit_scale), (img.height, img.width), seconds
        )
