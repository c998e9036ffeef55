"""Checkpoints of a run directory, written atomically.

::

    RUN/checkpoints/last.ckpt   Lightning's full state (weights, optimizer, schedule, loops, data position)
    RUN/last/                   model.safetensors + config.json (our format; load_model accepts it)
    RUN/best/                   the same, for the best value of the monitored metric
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ..files import publish, temp_path
from ..models import save_pretrained

log = logging.getLogger(__name__)

LAST_CKPT = "last.ckpt"


class RunCheckpoints(Callback):
    """Saves ``last.ckpt`` + ``last/`` every ``every_n_steps`` optimizer steps and at every epoch end,
    and ``best/`` whenever validation improves ``monitor`` (higher is better)."""

    def __init__(self, run_dir: str | Path, *, every_n_steps: int = 0, monitor: str = "val/miou") -> None:
        self.run_dir = Path(run_dir)
        self.every_n_steps = every_n_steps
        self.monitor = monitor
        self.best: float = -math.inf
        self.best_step: int = -1
        self._last_saved_step = -1

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "checkpoints" / LAST_CKPT

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "monitor": self.monitor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", -math.inf))
        self.best_step = int(state.get("best_step", -1))

    # ------------------------------------------------------------------------------- hooks
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if (
            self.every_n_steps > 0
            and step > 0
            and step % self.every_n_steps == 0
            and step != self._last_saved_step
        ):
            self.save_last(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_saved_step:
            self.save_last(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if math.isnan(value) or value <= self.best:
            return
        self.best, self.best_step = value, trainer.global_step
        if trainer.is_global_zero:
            save_pretrained(
                pl_module.model, self.run_dir / "best", extra=self._extra(trainer), overwrite=True
            )
            log.info(
                "best %s = %.4f at step %d -> %s", self.monitor, value, self.best_step, self.run_dir / "best"
            )

    # ------------------------------------------------------------------------------ saving
    def _extra(self, trainer: L.Trainer) -> dict[str, Any]:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        return {
            "train": {
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "metrics": metrics,
                "run": str(self.run_dir),
            }
        }

    def save_last(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Full Lightning state to ``checkpoints/last.ckpt`` and the weights to ``last/`` (all ranks call)."""
        final = self.ckpt_path
        tmp = temp_path(final)  # the same name on every rank; rank 0 writes it
        if trainer.is_global_zero:
            final.parent.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier("langseg.save_last")
        trainer.save_checkpoint(tmp, weights_only=False)  # rank 0 writes; ends with a barrier
        if trainer.is_global_zero:
            publish(tmp, final, overwrite=True)
            save_pretrained(
                pl_module.model, self.run_dir / "last", extra=self._extra(trainer), overwrite=True
            )
        self._last_saved_step = trainer.global_step
