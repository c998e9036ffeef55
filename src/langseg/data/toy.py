"""A procedurally generated toy dataset: coloured shapes on textured backgrounds.

Every class is named by words (``"red circle"``, ``"blue square"``, ...), so the toy is a complete,
tiny instance of language-driven segmentation: it smoke-tests the whole pipeline on a CPU in minutes
and is small enough to read as a teaching example.

A scene is a pure function of ``(seed, split, index)``: the same call always draws the same pixels,
whatever the order or process it runs in. :func:`write_toy_dataset` stores scenes in the generic layout
(``labels.txt``, ``images/<split>/*.png``, ``masks/<split>/*.png``); :class:`ToySegmentation` serves the
same scenes from memory, without touching the disk.
"""

from __future__ import annotations

import colorsys
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .base import IGNORE_INDEX, DatasetError, SegmentationSample, check_output_folder

log = logging.getLogger(__name__)

BACKGROUND = "background"
# class name -> (hue in [0, 1), shape); class 0 is the textured background
SHAPES: dict[str, tuple[float, str]] = {
    "red circle": (0.0, "circle"),
    "blue square": (0.62, "square"),
    "green triangle": (0.33, "triangle"),
    "yellow diamond": (0.15, "diamond"),
}
TOY_LABELS: tuple[str, ...] = (BACKGROUND, *SHAPES)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
TEXTURES = ("gradient", "stripes", "checker", "noise")


@dataclass
class ToyConfig:
    """How toy scenes are drawn."""

    size: int = 96  # image side in pixels (square scenes)
    min_shapes: int = 1  # shapes per scene, inclusive range
    max_shapes: int = 3
    min_radius: float = 0.2  # shape radius as a fraction of `size`
    max_radius: float = 0.32
    seed: int = 0  # scenes are a function of (seed, split, index)

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"toy size {self.size} is too small; use at least 16 pixels")
        if not 1 <= self.min_shapes <= self.max_shapes:
            raise ValueError(
                f"toy shapes per scene: need 1 <= min_shapes <= max_shapes, got "
                f"{self.min_shapes}..{self.max_shapes}"
            )
        if not 0 < self.min_radius <= self.max_radius < 0.5:
            raise ValueError(
                f"toy radius fractions must satisfy 0 < min <= max < 0.5, got "
                f"{self.min_radius}..{self.max_radius}"
            )


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one scene."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown toy split {split!r}; expected one of {sorted(SPLIT_IDS)}")
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-saturation textured background, ``(size, size, 3)`` float32 in [0, 255]."""
    c1 = _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.25, 0.9))
    c2 = _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.25, 0.9))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    angle = rng.uniform(0, math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)  # (size, size) coordinate along a direction
    if kind == "gradient":
        t = along - along.min()
        t = t / max(float(t.max()), 1e-6)
    elif kind == "stripes":
        period = rng.uniform(0.08, 0.25)
        t = (np.floor(along / period) % 2).astype(np.float32)
    elif kind == "checker":
        cell = rng.uniform(0.08, 0.25)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    else:  # smooth noise: a coarse random grid upsampled
        coarse = Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8))
        t = np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return c1 * (1 - t[..., None]) + c2 * t[..., None]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    corners = {"square": 4, "triangle": 3, "diamond": 4}[shape]
    if shape == "diamond":  # a rhombus: elongated along one axis
        radii = [r, 0.7 * r, r, 0.7 * r]
    else:
        radii = [r * (1.25 if shape == "square" else 1.15)] * corners  # similar areas to the circle
    return [
        (
            cx + rad * math.cos(angle + 2 * math.pi * k / corners),
            cy + rad * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k, rad in enumerate(radii)
    ]


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """``(size, size)`` bool: the pixels inside one shape."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=1)
    return np.asarray(canvas, dtype=bool)


def toy_scene(rng: np.random.Generator, cfg: ToyConfig) -> tuple[Image.Image, np.ndarray]:
    """Draw one scene -> (RGB image, ``(size, size)`` int64 mask of class indices into TOY_LABELS)."""
    S = cfg.size
    image = _background(rng, S)
    mask = np.zeros((S, S), dtype=np.int64)
    names = list(SHAPES)
    placed: list[tuple[float, float, float]] = []  # (cx, cy, r) of the shapes drawn so far
    for _ in range(int(rng.integers(cfg.min_shapes, cfg.max_shapes + 1))):
        cls = int(rng.integers(len(names)))
        hue, shape = SHAPES[names[cls]]
        r = rng.uniform(cfg.min_radius, cfg.max_radius) * S
        for _attempt in range(8):  # shapes may touch and overlap a little, not hide each other
            cx, cy = rng.uniform(0.15 * S, 0.85 * S, size=2)
            if all(math.hypot(cx - x, cy - y) > 0.8 * (r + q) for x, y, q in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        inside = _shape_mask(shape, S, cx, cy, r, rng.uniform(0, 2 * math.pi))
        colour = _hsv(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))
        # a faint texture inside the shape: brightness stripes in a random direction
        yy, xx = np.nonzero(inside)
        a, period = rng.uniform(0, math.pi), rng.uniform(4.0, 10.0)
        shade = 1.0 - 0.12 * (np.floor((xx * math.cos(a) + yy * math.sin(a)) / period) % 2)
        image[yy, xx] = colour[None, :] * shade[:, None].astype(np.float32)
        mask[inside] = cls + 1  # later shapes cover earlier ones
    image = image + rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)  # sensor noise
    return Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8), "RGB"), mask


class ToySegmentation:
    """In-memory toy scenes of one split, the same as :func:`write_toy_dataset` writes."""

    ignore_index = IGNORE_INDEX
    labels = list(TOY_LABELS)

    def __init__(self, n: int, split: str = "train", cfg: ToyConfig | None = None) -> None:
        if n < 1:
            raise DatasetError(f"toy {split} split needs at least one scene, got {n}")
        if split not in SPLIT_IDS:
            raise DatasetError(f"unknown toy split {split!r}; expected one of {sorted(SPLIT_IDS)}")
        self.n = n
        self.split = split
        self.cfg = cfg or ToyConfig()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> SegmentationSample:
        if not 0 <= i < self.n:
            raise IndexError(f"toy scene {i} out of range 0..{self.n - 1}")
        image, mask = toy_scene(scene_rng(self.cfg.seed, self.split, i), self.cfg)
        return SegmentationSample(image, mask, f"{self.split}_{i:05d}")


def write_toy_dataset(
    out: str | Path, n_train: int, n_val: int, cfg: ToyConfig | None = None, *, overwrite: bool = False
) -> Path:
    """Write toy scenes in the generic layout; refuses a non-empty folder unless ``overwrite``.

    ``overwrite`` replaces only the files this function writes (labels.txt and the scene PNGs).
    """
    out = Path(out)
    check_output_folder(out, overwrite)
    cfg = cfg or ToyConfig()
    for split, n in (("train", n_train), ("val", n_val)):
        if n < 0:
            raise DatasetError(f"toy {split} split: the number of scenes must be >= 0, got {n}")
        if n == 0:
            continue
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "masks" / split).mkdir(parents=True, exist_ok=True)
        data = ToySegmentation(n, split, cfg)
        for i in range(n):
            sample = data[i]
            sample.image.save(out / "images" / split / f"{sample.name}.png")
            Image.fromarray(sample.mask.astype(np.uint8), "L").save(
                out / "masks" / split / f"{sample.name}.png"
            )
    (out / "labels.txt").write_text("\n".join(TOY_LABELS) + "\n", encoding="utf-8")
    log.info("wrote %d train and %d val toy scenes to %s", n_train, n_val, out)
    return out
