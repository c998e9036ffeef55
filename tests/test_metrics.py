"""Metrics against hand-computed values and independent brute-force / official-style references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from langseg.distributed import all_reduce
from langseg.metrics import (
    FewShotMeter,
    confusion_matrix,
    episode_areas,
    iou_per_class,
    miou,
    miou_present,
    pixel_accuracy,
)

# 2x3 example, 4 classes; class 3 is absent from prediction and ground truth, one pixel is ignored.
PRED = np.array([[0, 1, 1], [2, 2, 0]])
TARGET = np.array([[0, 1, 2], [2, 255, 1]])


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(PRED, TARGET, 4, ignore_index=255)
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    assert conf.dtype == torch.long
    assert torch.equal(conf, expected)


def test_scores_by_hand():
    conf = confusion_matrix(torch.from_numpy(PRED), torch.from_numpy(TARGET), 4, ignore_index=255)
    assert pixel_accuracy(conf) == pytest.approx(3 / 5, abs=1e-12)
    per_class = iou_per_class(conf)
    assert per_class[:3].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 2], abs=1e-12)
    assert math.isnan(per_class[3])
    mean, _ = miou(conf)
    assert mean == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 0) / 4, abs=1e-12)  # official: absent counts 0
    assert miou_present(conf) == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3, abs=1e-12)


def test_class_only_predicted_counts_zero_not_absent():
    pred = np.array([[0, 1], [0, 0]])
    target = np.zeros((2, 2), dtype=np.int64)
    per_class = iou_per_class(confusion_matrix(pred, target, 3))
    assert per_class[0].item() == pytest.approx(3 / 4)
    assert per_class[1].item() == 0.0  # predicted but never true: present, IoU 0
    assert math.isnan(per_class[2])


def test_ignore_and_out_of_range():
    target = np.array([[255, 255]])
    conf = confusion_matrix(np.array([[7, 0]]), target, 2)  # predictions on ignored pixels are not checked
    assert conf.sum() == 0
    assert pixel_accuracy(conf) == 0.0
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([[5]]), np.array([[0]]), 2)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 2)


def _brute_force(pred: np.ndarray, target: np.ndarray, k: int, ignore: int) -> np.ndarray:
    conf = np.zeros((k, k), dtype=np.int64)
    for p, t in zip(pred.ravel(), target.ravel()):
        if t != ignore:
            conf[t, p] += 1
    return conf


def _official_areas(pred: np.ndarray, target: np.ndarray, k: int):
    """Spec 6.4 (PyTorch-Encoding): +1 shift, labeled = target > 0, 1..K histograms."""
    p, t = pred.astype(np.int64) + 1, target.astype(np.int64) + 1
    t[target == 255] = 0
    labeled = t > 0
    correct = int(((p == t) & labeled).sum())
    p = p * labeled
    inter = p * (p == t)
    a_inter, _ = np.histogram(inter, bins=k, range=(1, k))
    a_pred, _ = np.histogram(p, bins=k, range=(1, k))
    a_lab, _ = np.histogram(t, bins=k, range=(1, k))
    return correct, int(labeled.sum()), a_inter, a_pred + a_lab - a_inter


def test_accumulated_over_images_matches_references():
    rng = np.random.default_rng(0)
    k, total = 6, torch.zeros(6, 6, dtype=torch.long)
    correct = labeled = 0
    inter = np.zeros(k)
    union = np.zeros(k)
    for _ in range(5):
        h, w = rng.integers(3, 9, size=2)
        pred = rng.integers(0, k - 1, size=(h, w))  # class k-1 is never predicted
        target = rng.integers(0, k - 1, size=(h, w))
        target[rng.random((h, w)) < 0.2] = 255
        conf = confusion_matrix(pred, target, k)
        assert np.array_equal(conf.numpy(), _brute_force(pred, target, k, 255))
        total += conf
        c, n, i, u = _official_areas(pred, target, k)
        correct, labeled, inter, union = correct + c, labeled + n, inter + i, union + u
    eps = np.spacing(1)
    assert pixel_accuracy(total) == pytest.approx(correct / (eps + labeled), abs=1e-12)
    official_iou = inter / (eps + union)
    mean, per_class = miou(total)
    assert mean == pytest.approx(official_iou.mean(), abs=1e-12)
    assert np.allclose(np.nan_to_num(per_class.numpy()), official_iou, atol=1e-12)
    # a batch (B, H, W) gives the same counts as image by image
    pred = rng.integers(0, k, size=(3, 4, 5))
    target = rng.integers(0, k, size=(3, 4, 5))
    assert torch.equal(
        confusion_matrix(pred, target, k), sum(confusion_matrix(p, t, k) for p, t in zip(pred, target))
    )


def test_fewshot_meter_by_hand():
    meter = FewShotMeter(num_classes=4, class_ids=[0, 1, 2])
    # episode 1, class 0: fg inter 1 / union 2; bg inter 2 / union 3
    i1, u1 = episode_areas(np.array([[[1, 1], [0, 0]]]), np.array([[[1, 0], [0, 0]]]))
    assert i1.tolist() == [[2, 1]] and u1.tolist() == [[3, 2]]
    meter.update(i1, u1, [0])
    # episode 2, class 1, bottom-right pixel ignored: fg inter 2 / union 3; bg inter 0 / union 1
    ignore = np.array([[[False, False], [False, True]]])
    i2, u2 = episode_areas(np.ones((1, 2, 2), dtype=np.int64), np.array([[[1, 1], [0, 0]]]), ignore)
    assert i2.tolist() == [[0, 2]] and u2.tolist() == [[1, 3]]
    meter.update(i2, u2, [1])
    # class 2 had no episode: its IoU counts 0 in the mean (HSNet)
    assert meter.episodes == 2
    assert meter.miou() == pytest.approx((1 / 2 + 2 / 3 + 0) / 3 * 100)
    assert meter.fb_iou() == pytest.approx(((2 + 0) / (3 + 1) + (1 + 2) / (2 + 3)) / 2 * 100)
    with pytest.raises(ValueError, match="outside"):
        FewShotMeter(num_classes=4, class_ids=[4])


def _hsnet_reference(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray):
    """Spec 7.4: gt += 255 at the boundary, pred = 255 there, 2-bin histograms over [0, 1]."""
    gt = gt + 255 * ignore
    pred = np.where(gt == 255, 255, pred)
    inter = pred[pred == gt]
    hist = lambda x: np.array([(x == 0).sum(), (x == 1).sum()])  # noqa: E731 - values 255 fall outside
    a_i, a_p, a_g = hist(inter), hist(pred), hist(gt)
    return a_i, a_p + a_g - a_i


def test_episode_areas_match_hsnet_reference():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 2, size=(4, 7, 9))
    gt = rng.integers(0, 2, size=(4, 7, 9))
    ignore = (rng.random((4, 7, 9)) < 0.3) & (gt == 0)  # the VOC boundary is never foreground
    inter, union = episode_areas(pred, gt, ignore)
    for b in range(4):
        ri, ru = _hsnet_reference(pred[b], gt[b], ignore[b])
        assert inter[b].tolist() == ri.tolist() and union[b].tolist() == ru.tolist()


def test_all_reduce_is_identity_without_distributed():
    t = torch.arange(4)
    assert all_reduce(t) is t
