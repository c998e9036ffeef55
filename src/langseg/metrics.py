"""Segmentation metrics as pure functions over confusion matrices and area counts.

Fixed-label evaluation (PyTorch-Encoding's ``SegmentationMetric``, spec 6.4): one ``(K, K)`` confusion
matrix is summed over every image of the split, and the numbers are computed once at the end:

* ``pixAcc = sum_c conf[c, c] / (eps + labeled pixels)``;
* ``IoU_c = inter_c / (eps + union_c)``, ``eps = np.spacing(1)``;
* **official mIoU** = mean over *all* K classes, a class absent from both prediction and ground
  truth (zero union) counting as 0 (:func:`miou`);
* ``per_class`` (:func:`iou_per_class`) reports such classes as ``NaN`` (``null`` in JSON), and
  :func:`miou_present` averages only the classes that occur.

Few-shot evaluation (HSNet, spec 7.4) is accumulated per class over episodes by :class:`FewShotMeter`:
``mIoU`` = mean foreground IoU of the test classes, ``FB-IoU`` = mean of the background and foreground
IoU of the summed areas. Counts are int64 (exact) in both cases.

Distributed evaluation: every rank accumulates its share, then :func:`langseg.distributed.all_reduce` sums the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .distributed import all_reduce

EPS = float(np.spacing(1))  # the official denominator guard, ~2.2e-16

ArrayLike = torch.Tensor | np.ndarray | Sequence[int]


def _as_long(x: ArrayLike) -> torch.Tensor:
    return (x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).long()


def confusion_matrix(
    pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """``(..., H, W)`` predicted and true class indices -> ``(K, K)`` int64 counts on pred's device.

    Row = true class, column = predicted class. Pixels whose target equals ``ignore_index`` (or lies
    outside ``[0, K)``) are not counted. A prediction outside ``[0, K)`` on a counted pixel is an error.
    """
    pred = _as_long(pred)
    target = _as_long(target).to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    p, t = pred[keep], target[keep]
    if p.numel() and (p.min() < 0 or p.max() >= num_classes):
        bad = int(p[(p < 0) | (p >= num_classes)][0])
        raise ValueError(f"predicted class {bad} is outside 0..{num_classes - 1}")
    flat = t * num_classes + p  # (N,) index into the flattened (K, K) matrix
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)  # (K, K): rows true, columns predicted


def areas(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(K, K)`` -> per-class ``(intersection, union, ground-truth area)``, each ``(K,)`` float64."""
    conf = conf.double()
    inter = conf.diagonal()
    gt = conf.sum(dim=1)
    pred = conf.sum(dim=0)
    return inter, gt + pred - inter, gt


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Correct labeled pixels / labeled pixels (``eps`` in the denominator, as the official code)."""
    conf = conf.double()
    return float(conf.diagonal().sum() / (EPS + conf.sum()))


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """``(K, K)`` -> ``(K,)`` float64 IoU; ``NaN`` for a class absent from prediction and ground truth."""
    inter, union, _ = areas(conf)
    iou = inter / (EPS + union)
    return torch.where(union > 0, iou, torch.full_like(iou, float("nan")))


def miou(conf: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The official mIoU (mean over all K classes, absent ones count 0) and :func:`iou_per_class`."""
    per_class = iou_per_class(conf)
    return float(torch.nan_to_num(per_class, nan=0.0).mean()), per_class


def miou_present(conf: torch.Tensor) -> float:
    """Mean IoU over the classes that occur in the prediction or the ground truth (NaN if none)."""
    per_class = iou_per_class(conf)
    present = ~per_class.isnan()
    return float(per_class[present].mean()) if present.any() else float("nan")


# --------------------------------------------------------------------------------- few-shot (HSNet)
def episode_areas(
    pred: ArrayLike, target: ArrayLike, ignore: ArrayLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks ``(B, H, W)`` (0 background, 1 foreground) -> ``(B, 2)`` intersection and union.

    Column 0 is background, column 1 foreground. Pixels where ``ignore`` is true (the PASCAL VOC
    boundary) count for neither prediction nor ground truth, as HSNet's evaluator does.
    """
    pred = _as_long(pred)
    target = _as_long(target).to(pred.device)
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            f"expected (B, H, W) masks of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    B = pred.shape[0]
    valid = torch.ones_like(pred, dtype=torch.bool)
    if ignore is not None:
        valid = ~torch.as_tensor(ignore).to(pred.device).bool()
    valid = valid.reshape(B, -1)
    p, t = pred.reshape(B, -1), target.reshape(B, -1)  # (B, H*W)
    inter = torch.stack([((p == c) & (t == c) & valid).sum(1) for c in (0, 1)], dim=1)  # (B, 2)
    area_p = torch.stack([((p == c) & valid).sum(1) for c in (0, 1)], dim=1)
    area_t = torch.stack([((t == c) & valid).sum(1) for c in (0, 1)], dim=1)
    return inter, area_p + area_t - inter


@dataclass
class FewShotMeter:
    """HSNet's per-class accumulator: ``(2, num_classes)`` intersection and union sums.

    ``class_ids`` are the test classes of the fold (the mean runs over them, including any that no
    episode hit, which then count 0 as in HSNet).
    """

    num_classes: int  # 20 PASCAL, 80 COCO, 1000 FSS-1000
    class_ids: Sequence[int]  # the fold's test classes
    inter: torch.Tensor = field(init=False)  # (2, num_classes) int64, row 0 background, row 1 foreground
    union: torch.Tensor = field(init=False)
    episodes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.class_ids = [int(c) for c in self.class_ids]
        bad = [c for c in self.class_ids if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"class ids {bad} are outside 0..{self.num_classes - 1}")
        self.inter = torch.zeros(2, self.num_classes, dtype=torch.long)
        self.union = torch.zeros(2, self.num_classes, dtype=torch.long)

    def update(self, inter: torch.Tensor, union: torch.Tensor, class_ids: ArrayLike) -> None:
        """Add ``(B, 2)`` episode areas (from :func:`episode_areas`) at each episode's ``(B,)`` class id."""
        ids = _as_long(class_ids).reshape(-1).cpu()
        self.inter.index_add_(1, ids, inter.long().cpu().t())
        self.union.index_add_(1, ids, union.long().cpu().t())
        self.episodes += int(ids.numel())

    def iou(self) -> torch.Tensor:
        """``(2, num_classes)`` float64 IoU = inter / max(union, 1)."""
        return self.inter.double() / self.union.double().clamp(min=1)

    def miou(self) -> float:
        """Mean foreground IoU over the test classes, in percent."""
        return float(self.iou()[1, self.class_ids].mean() * 100)

    def fb_iou(self) -> float:
        """Mean of background and foreground IoU of the areas summed over the test classes, in percent."""
        inter = self.inter[:, self.class_ids].sum(1).double()
        union = self.union[:, self.class_ids].sum(1).double()
        return float((inter / union.clamp(min=1)).mean() * 100)

    def all_reduce(self) -> None:
        """Sum the accumulators (and the episode count) over all ranks, in place."""
        self.inter = all_reduce(self.inter)
        self.union = all_reduce(self.union)
        self.episodes = int(all_reduce(torch.tensor([self.episodes]))[0])
