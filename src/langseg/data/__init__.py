"""Datasets: raw readers (full images and masks) for ADE20K and the generic layout, plus training data."""

from .ade20k import ADE20K, ade20k_labels
from .base import IGNORE_INDEX, DatasetError, SegmentationSample
from .generic import GenericSegmentation

__all__ = ["ADE20K", "IGNORE_INDEX", "DatasetError", "GenericSegmentation", "SegmentationSample", "ade20k_labels"]
