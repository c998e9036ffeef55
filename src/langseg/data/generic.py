"""The generic layout anyone can produce.

::

    ROOT/labels.txt          one label per line (line i = class index i; ';' separates synonyms)
    ROOT/images/[SPLIT/]*.jpg|png
    ROOT/masks/[SPLIT/]*.png single-channel, values 0..L-1, 255 = ignored

The split sub-folder is optional: without it, ``split`` must be None.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DatasetError, SegmentationSample, load_sample, pair_files


class GenericSegmentation:
    """Full-resolution samples of a generic-layout dataset."""

    ignore_index = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str | None = "val") -> None:
        self.root = Path(root)
        labels_file = self.root / "labels.txt"
        if not labels_file.is_file():
            raise DatasetError(
                f"{labels_file}: labels file not found (generic layout: labels.txt, images/, masks/)"
            )
        self.label_synonyms = [
            tuple(n.strip() for n in ln.split(";"))
            for ln in labels_file.read_text(encoding="utf-8").splitlines()
            if ln.strip()
        ]
        if not self.label_synonyms:
            raise DatasetError(f"{labels_file}: no labels")
        self.labels = [s[0] for s in self.label_synonyms]
        images, masks = self.root / "images", self.root / "masks"
        if split is not None and (images / split).is_dir():
            images, masks = images / split, masks / split
        elif split is not None and images.is_dir() and any(p.is_dir() for p in images.iterdir()):
            raise DatasetError(f"{images / split}: split folder not found")
        self.split = split
        self.pairs = pair_files(images, masks)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> SegmentationSample:
        img_path, mask_path = self.pairs[i]
        image, mask = load_sample(img_path, mask_path)
        bad = (mask != IGNORE_INDEX) & ((mask < 0) | (mask >= len(self.labels)))
        if bad.any():
            v = int(mask[bad][0])
            raise DatasetError(
                f"{mask_path}: value {v} is not a label index (0..{len(self.labels) - 1}) nor {IGNORE_INDEX}"
            )
        return SegmentationSample(image, mask.astype(np.int64), img_path.stem)
