"""ADE20K SceneParsing (``ADEChallengeData2016``): 150 classes, raw mask value 0 = unlabeled.

::

    ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg
    ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png   (0 = unlabeled, 1..150)

``ROOT`` may also be the ``ADEChallengeData2016`` folder itself. Masks are returned as class
indices 0..149 with unlabeled pixels at IGNORE_INDEX (the official code's ``mask - 1``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DatasetError, SegmentationSample, load_sample, pair_files

_LABEL_FILE = Path(__file__).with_name("ade20k_objectinfo150.txt")
SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


@lru_cache(maxsize=2)
def ade20k_labels(full_names: bool = False) -> tuple[str, ...]:
    """The 150 class prompts in class order.

    Default: the official prompts (first word of each name, e.g. ``coffee`` for coffee table; ``screen``
    appears twice), which the official numbers were produced with. ``full_names=True``: whole names.
    """
    rows = [
        ln.split("\t")
        for ln in _LABEL_FILE.read_text(encoding="utf-8").splitlines()
        if not ln.startswith("#")
    ]
    return tuple(r[1] if full_names else r[0] for r in rows)


class ADE20K:
    """Full-resolution ADE20K samples (no resize or crop)."""

    ignore_index = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str = "val", *, full_names: bool = False) -> None:
        root = Path(root)
        if (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        if split not in SPLITS:
            raise DatasetError(f"unknown ADE20K split {split!r}; expected one of {sorted(SPLITS)}")
        if not (root / "images").is_dir():
            raise DatasetError(
                f"{root}: not an ADE20K folder (expected ADEChallengeData2016/images/{SPLITS[split]} and "
                f"annotations/{SPLITS[split]})"
            )
        self.root = root
        self.split = SPLITS[split]
        self.labels = list(ade20k_labels(full_names))
        self.pairs = pair_files(root / "images" / self.split, root / "annotations" / self.split)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> SegmentationSample:
        img_path, mask_path = self.pairs[i]
        image, raw = load_sample(img_path, mask_path)
        if raw.max(initial=0) > 150:
            raise DatasetError(f"{mask_path}: value {int(raw.max())} is above 150 (ADE20K has 150 classes)")
        mask = raw - 1  # class indices 0..149, unlabeled -> -1
        mask[mask < 0] = IGNORE_INDEX
        return SegmentationSample(image, mask.astype(np.int64), img_path.stem)
