"""Zero-shot (0-shot few-shot benchmark) evaluation loop, HSNet metrics (spec 7.2-7.4).

Each episode's image is resized to 480x480 and segmented with the two prompts ``["others", name]``
(per-image text features ``(B, 2, D)``); the prediction is the argmax (ties -> 0, background). The
per-class areas are accumulated by :class:`langseg.metrics.FewShotMeter`; ``mIoU`` and ``FB-IoU`` are
percentages, as the papers report them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..accel import Precision, autocast, resolve_precision
from ..metrics import FewShotMeter, episode_areas
from ..models.lseg import LSeg
from .evaluate import Guarded, collate_tensors, raise_if_error, rank_and_world
from .fewshot import EpisodeDataset, FewShotBenchmark

BACKGROUND_PROMPT = "others"  # the official first prompt of every pair


@dataclass
class ZeroShotResult:
    """Accumulated areas of a zero-shot run."""

    benchmark: str
    fold: int
    meter: FewShotMeter
    class_names: dict[int, str]
    seconds: float

    def metrics(self) -> dict[str, Any]:
        """``mIoU`` and ``FB-IoU`` (percent), foreground IoU per test class (percent), episodes."""
        iou = self.meter.iou()[1]
        return {
            "mIoU": self.meter.miou(),
            "FB-IoU": self.meter.fb_iou(),
            "per_class_iou": {self.class_names[c]: float(iou[c] * 100) for c in self.meter.class_ids},
            "episodes": self.meter.episodes,
        }


def pair_text(model: LSeg, bench: FewShotBenchmark) -> tuple[torch.Tensor, dict[int, int]]:
    """``(1 + C, D)`` embeddings of ``others`` and each test class name, and class id -> row."""
    names = [bench.class_names[c] for c in bench.class_ids]
    text = model.encode_text([BACKGROUND_PROMPT, *names])  # (1 + C, D) unit-norm
    return text, {c: i + 1 for i, c in enumerate(bench.class_ids)}


def label_pairs(text: torch.Tensor, rows: dict[int, int], class_ids: torch.Tensor) -> torch.Tensor:
    """Per-image text features ``(B, 2, D)``: row 0 ``others``, row 1 the episode's class."""
    index = torch.tensor([[0, rows[int(c)]] for c in class_ids], device=text.device)  # (B, 2)
    return text[index]  # (B, 2, D)


def evaluate_zeroshot(
    model: LSeg,
    bench: FewShotBenchmark,
    *,
    precision: Precision = "fp32",
    batch_size: int = 8,
    num_workers: int = 0,
    limit: int | None = None,
    image_size: int = 480,
    progress: bool = True,
) -> ZeroShotResult:
    """Run the first ``limit`` (default all) episodes of ``bench`` through ``model`` (on its device)."""
    device = next(model.parameters()).device
    resolve_precision(device, precision)  # an unknown name fails before any work
    model.eval()
    text, rows = pair_text(model, bench)
    meter = FewShotMeter(bench.num_classes, bench.class_ids)
    stop = len(bench.episodes) if limit is None else min(int(limit), len(bench.episodes))
    rank, world = rank_and_world()
    data = Guarded(
        EpisodeDataset(bench, model.config.mean, model.config.std, image_size), range(rank, stop, world)
    )
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_tensors)
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(data),
        disable=not progress or rank != 0,
        desc=f"{bench.name} fold {bench.fold}",
        unit="ep",
        dynamic_ncols=True,
    )
    for images, target, ignore, class_ids in map(raise_if_error, loader):
        with torch.inference_mode(), autocast(device, precision):
            logits = model(images.to(device), label_pairs(text, rows, class_ids))  # (B, 2, S, S)
        pred = logits.float().argmax(dim=1)  # (B, S, S); ties -> 0 ("others")
        inter, union = episode_areas(pred, target.to(device), ignore.to(device))
        meter.update(inter, union, class_ids)
        bar.update(len(class_ids))
        if progress and rank == 0:
            bar.set_postfix(mIoU=f"{meter.miou():.2f}", FB_IoU=f"{meter.fb_iou():.2f}", refresh=False)
    bar.close()
    meter.all_reduce()
    return ZeroShotResult(bench.name, bench.fold, meter, dict(bench.class_names), time.perf_counter() - t0)
