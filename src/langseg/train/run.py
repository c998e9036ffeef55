"""One training run: config -> model, data, Lightning Trainer -> a run directory.

::

    RUN/config.yaml             the resolved config
    RUN/checkpoints/last.ckpt   full state for --resume
    RUN/last/  RUN/best/        our format (load_model, `langseg segment --weights RUN/best`)
    RUN/logs/tensorboard/       TensorBoard events;  RUN/logs/csv/metrics.csv (csv_resume1/, ... after --resume)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from ..models import LSeg, LSegConfig, build_lseg, load_clip_text_weights, load_timm_vit_weights, model_config
from .callbacks import RunCheckpoints
from .config import ConfigError, ModelSpec, TrainConfig, dump_config, merge_tree
from .data import SegDataModule
from .module import LSegTrainModule
from .params import freeze_unused

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished (or stopped) run left behind."""

    run_dir: Path
    last: Path | None  # our-format folder of the last weights
    best: Path | None  # our-format folder of the best weights (None without validation)
    global_step: int
    metrics: dict[str, float]
    rank: int = 0  # global rank of this process (DDP runs return on every rank)


def build_model(spec: ModelSpec) -> LSeg:
    """The network to train: a named variant (+ overrides and pretrained parts) or ``init`` weights."""
    if spec.init:
        from ..weights import load_model

        if spec.overrides:
            raise ConfigError("model.overrides do not apply to model.init (its config is in the weights)")
        return load_model(spec.init, device="cpu")
    try:
        cfg = model_config(spec.name)
        if spec.overrides:
            cfg = LSegConfig.from_dict(merge_tree(cfg.to_dict(), spec.overrides))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: {e}") from None
    for key, path, what in (
        ("vit_weights", spec.vit_weights, "a timm ViT checkpoint"),
        ("clip_weights", spec.clip_weights, "an OpenAI CLIP file such as ViT-B-32.pt"),
    ):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(
                f"model.{key}: {path} not found (expected {what}; see docs/training.md, "
                f"or set model.{key}=null to start from random weights)"
            )
    model = build_lseg(cfg)
    if spec.vit_weights:
        load_timm_vit_weights(model, Path(spec.vit_weights).expanduser())
    if spec.clip_weights:
        load_clip_text_weights(model, Path(spec.clip_weights).expanduser())
    return model


def _csv_version(run_dir: Path) -> str:
    """``csv`` for a fresh run; a resumed run writes beside it (Lightning's CSVLogger would delete it)."""
    version, n = "csv", 0
    while (run_dir / "logs" / version / "metrics.csv").exists():
        n += 1
        version = f"csv_resume{n}"
    return version


def _loggers(cfg: TrainConfig, run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger

    loggers: list = []
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(
            TensorBoardLogger(
                save_dir=str(run_dir), name="logs", version="tensorboard", default_hp_metric=False
            )
        )
    except ModuleNotFoundError:  # tensorboard is optional
        log.warning("tensorboard is not installed; logging to CSV only")
    loggers.append(CSVLogger(save_dir=str(run_dir), name="logs", version=_csv_version(run_dir)))
    if cfg.trainer.wandb_project:
        try:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(project=cfg.trainer.wandb_project, save_dir=str(run_dir)))
        except ModuleNotFoundError:
            raise ConfigError("trainer.wandb_project needs the wandb package: pip install wandb") from None
    return loggers


def _on_gpu(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def make_trainer(cfg: TrainConfig, run_dir: Path, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    t = cfg.trainer
    kwargs: dict[str, Any] = {}
    sync_bn = t.sync_batchnorm and _on_gpu(t.accelerator)
    if t.sync_batchnorm and not sync_bn:
        log.info("sync_batchnorm is off: torch's SyncBatchNorm runs on GPUs only")
    if t.val_check_interval is not None:
        kwargs["val_check_interval"] = t.val_check_interval
    return L.Trainer(
        default_root_dir=str(run_dir),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        sync_batchnorm=sync_bn,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        num_sanity_val_steps=t.num_sanity_val_steps,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        benchmark=t.benchmark,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,  # RunCheckpoints writes the checkpoints
        use_distributed_sampler=False,  # GroupedBatchSampler shards by rank itself
        logger=_loggers(cfg, run_dir),
        callbacks=[
            RunCheckpoints(run_dir, every_n_steps=t.checkpoint_every_n_steps, monitor=cfg.monitor),
            *callbacks,
        ],
        **kwargs,
    )


def find_resume(run_dir: Path, resume: bool | str | Path) -> Path | None:
    """The ``.ckpt`` to resume from, or None for a fresh run (which must not clobber an old one)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        path = last if resume is True else Path(resume)
        if not path.is_file():
            raise ConfigError(f"{path}: no checkpoint to resume from (a run saves checkpoints/last.ckpt)")
        return path
    if last.exists() or (run_dir / "last").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    return None


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool | str | Path = False,
    callbacks: Sequence[L.Callback] = (),
) -> RunResult:
    """Train (or resume) a run in ``run_dir``; returns where its checkpoints are."""
    run_dir = Path(run_dir).expanduser()
    ckpt = find_resume(run_dir, resume)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    model = build_model(cfg.model)
    data = SegDataModule(cfg.data, model.config.mean, model.config.std, seed=cfg.trainer.seed)
    # `langseg segment` defaults to the (first) training label set
    model.config = dataclasses.replace(model.config, labels=tuple(data.label_sets[0]))
    freeze_unused(model)
    module = LSegTrainModule(model, cfg, data.label_sets, data.val_label_sets, data.val_names)
    trainer = make_trainer(cfg, run_dir, callbacks)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
    trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    last, best = run_dir / "last", run_dir / "best"
    step = trainer.global_step
    if (last / "config.json").is_file():  # after ddp_spawn only the workers knew the step
        step = json.loads((last / "config.json").read_text()).get("train", {}).get("global_step", step)
    return RunResult(
        run_dir=run_dir,
        last=last if last.is_dir() else None,
        best=best if best.is_dir() else None,
        global_step=step,
        metrics={k: float(v) for k, v in trainer.callback_metrics.items()},
        rank=trainer.global_rank,
    )
