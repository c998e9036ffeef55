"""Shared pieces of the dataset readers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ..errors import LangsegError
from ..images import load_image

IGNORE_INDEX = 255  # mask value of pixels that carry no label


class DatasetError(LangsegError, ValueError):
    """A dataset folder that is missing or not laid out as expected; the message names the path."""


@dataclass
class SegmentationSample:
    """One full-resolution image with its mask."""

    image: Image.Image  # RGB, EXIF-upright
    mask: np.ndarray  # (H, W) int64: label indices 0..L-1, IGNORE_INDEX where unlabeled
    name: str  # file stem, for outputs and records


class SegmentationDataset(Protocol):
    """What every reader (``ADE20K``, ``GenericSegmentation``, ``ToySegmentation``) offers to the
    evaluation loop and to training."""

    labels: list[str]
    ignore_index: int

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> SegmentationSample: ...


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse to write a dataset into ``out`` when it is a file, or a non-empty folder unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DatasetError(
            f"{out}: folder exists and is not empty; choose another folder or pass --overwrite"
        )


def read_mask(path: Path) -> np.ndarray:
    """A single-channel PNG mask -> (H, W) int64 array."""
    try:
        with Image.open(path) as m:
            if m.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"{path}: mask must be single-channel (L/P/I mode), got mode {m.mode}")
            return np.asarray(m).astype(np.int64)
    except DatasetError:
        raise
    except Exception as e:  # PIL raises many types for bad files
        raise DatasetError(f"{path}: unreadable mask: {e}") from None


def pair_files(images_dir: Path, masks_dir: Path, mask_suffix: str = ".png") -> list[tuple[Path, Path]]:
    """Image files with a mask of the same stem; a missing mask is an error naming the image."""
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: images folder not found")
    if not masks_dir.is_dir():
        raise DatasetError(f"{masks_dir}: masks folder not found")
    from ..images import IMAGE_SUFFIXES

    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{images_dir}: no images found")
    pairs = []
    for img in images:
        mask = masks_dir / (img.stem + mask_suffix)
        if not mask.is_file():
            raise DatasetError(f"{mask}: mask missing for image {img.name}")
        pairs.append((img, mask))
    return pairs


def load_sample(image_path: Path, mask_path: Path) -> tuple[Image.Image, np.ndarray]:
    image = load_image(image_path, max_pixels=None)
    mask = read_mask(mask_path)
    if mask.shape != (image.height, image.width):
        raise DatasetError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image {image_path.name} is "
            f"{image.width}x{image.height}"
        )
    return image, mask
