"""Datasets: raw readers (full images and masks) for ADE20K and the generic layout, plus training data.

Training pieces: :mod:`.toy` (procedural toy scenes), :mod:`.transforms` (the official joint
augmentation), :mod:`.multi` (several datasets with their own label sets, label mappings, batches
that stay within one dataset).
"""

from .ade20k import ADE20K, ade20k_labels
from .base import IGNORE_INDEX, DatasetError, SegmentationDataset, SegmentationSample
from .generic import GenericSegmentation
from .toy import TOY_LABELS, ToyConfig, ToySegmentation, write_toy_dataset

__all__ = [
    "ADE20K",
    "IGNORE_INDEX",
    "TOY_LABELS",
    "DatasetError",
    "GenericSegmentation",
    "SegmentationDataset",
    "SegmentationSample",
    "ToyConfig",
    "ToySegmentation",
    "ade20k_labels",
    "write_toy_dataset",
]
