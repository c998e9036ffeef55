"""The LightningModule: pixel-wise cross-entropy over scaled pixel/label cosine similarities."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from ..data.base import IGNORE_INDEX
from ..distributed import all_reduce
from ..metrics import confusion_matrix, miou, pixel_accuracy
from ..models import LSeg
from .config import TrainConfig
from .params import build_optimizer
from .schedule import PolyLambda


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """``(B, K, H, W)`` logits, ``(B, H, W)`` int64 target -> mean cross-entropy over labeled pixels.

    A batch without any labeled pixel gives a zero loss that is still attached to the graph (plain
    ``cross_entropy`` would return NaN). Nothing here waits for the device (no host-side test).
    """
    labeled = (target != ignore_index).sum()
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / labeled.clamp(min=1)


class LSegTrainModule(L.LightningModule):
    """Trains an :class:`LSeg` on batches ``{"image", "mask", "source"}`` whose label set is their source's.

    ``label_sets[s]`` are the label names of source ``s`` (training), ``val_label_sets`` and
    ``val_names`` those of the validation sources.
    """

    def __init__(
        self,
        model: LSeg,
        cfg: TrainConfig,
        label_sets: Sequence[Sequence[str]],
        val_label_sets: Sequence[Sequence[str]] = (),
        val_names: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.label_sets = [list(s) for s in label_sets]
        self.val_label_sets = [list(s) for s in val_label_sets]
        self.val_names = list(val_names)
        self._conf: list[torch.Tensor] = []
        self._tic: float | None = None

    def forward(self, images: torch.Tensor, labels: Any) -> torch.Tensor:
        return self.model(images, labels)

    def _text(self, labels: Sequence[str]) -> torch.Tensor:
        """``K names -> (K, D)`` frozen, cached text embeddings."""
        return self.model.encode_text(labels, self.cfg.model.templates)

    @staticmethod
    def _source(batch: dict[str, Any]) -> int:
        src = batch["source"]
        if torch.is_tensor(src):
            if (src != src[0]).any():
                raise RuntimeError("a batch mixes datasets; use GroupedBatchSampler")
            return int(src[0])
        return int(src)

    # ---------------------------------------------------------------------------- training
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._tic is not None:  # a whole iteration: data loading, step, logging
            imgs = batch["image"].shape[0] * self.trainer.world_size
            self.log("img_s", imgs / max(now - self._tic, 1e-9), prog_bar=True, batch_size=1)
        self._tic = now

    def on_train_epoch_start(self) -> None:
        self._tic = None  # the pause between epochs (validation, checkpoints) is not a step

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, target = batch["image"], batch["mask"]  # (B, 3, H, W), (B, H, W)
        text = self._text(self.label_sets[self._source(batch)])
        logits = self.model(images, text)  # (B, K, H, W)
        loss = segmentation_loss(logits, target)
        with torch.no_grad():
            labeled = target != IGNORE_INDEX
            acc = (
                (logits.argmax(1) == target)[labeled].float().mean() if labeled.any() else loss.new_zeros(())
            )
        B = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/acc", acc, prog_bar=False, batch_size=B)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False, batch_size=1)

    # -------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._conf = [
            torch.zeros(len(s), len(s), dtype=torch.long, device=self.device) for s in self.val_label_sets
        ]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        src = self._source(batch)
        labels = self.val_label_sets[src]
        logits = self.model(batch["image"], self._text(labels))
        self._conf[src] += confusion_matrix(logits.argmax(1), batch["mask"], len(labels), IGNORE_INDEX)

    def on_validation_epoch_end(self) -> None:
        scores, accs = [], []
        for name, conf in zip(self.val_names, self._conf):
            conf = all_reduce(conf)  # every rank validated its own share
            if conf.sum() == 0:
                continue
            m, _ = miou(conf)
            a = pixel_accuracy(conf)
            scores.append(m)
            accs.append(a)
            if len(self.val_names) > 1:
                self.log(f"val/{name}/miou", m, batch_size=1, sync_dist=True)
                self.log(f"val/{name}/pixacc", a, batch_size=1, sync_dist=True)
        # the counts were summed over ranks, so every rank holds the same values (sync_dist averages equals)
        if scores:
            self.log("val/miou", sum(scores) / len(scores), prog_bar=True, batch_size=1, sync_dist=True)
            self.log("val/pixacc", sum(accs) / len(accs), batch_size=1, sync_dist=True)

    # --------------------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        optimizer = build_optimizer(self.model, o, self.cfg.data.batch_size)
        if o.schedule == "epoch":
            total, interval = self.cfg.trainer.max_epochs, "epoch"
        else:
            total, interval = int(self.trainer.estimated_stepping_batches), "step"
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, PolyLambda(total, o.poly_power, o.warmup_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
