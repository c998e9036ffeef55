"""The LightningDataModule: datasets of the config -> batches that stay within one dataset."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Subset

from ..data.base import DatasetError
from ..data.multi import (
    GroupedBatchSampler,
    ResumableLoader,
    Source,
    TrainingSet,
    make_source,
    read_label_map,
    unify,
)
from ..data.transforms import AugmentConfig, train_transform, val_transform
from .config import DataConfig, DatasetSpec

log = logging.getLogger(__name__)


def resolve_root(spec: DatasetSpec, data_root: str | None) -> Path:
    root = Path(spec.root).expanduser()
    if not root.is_absolute() and data_root is not None:
        root = Path(data_root).expanduser() / root
    return root


def open_dataset(spec: DatasetSpec, split: str | None, data_root: str | None):
    """The raw reader of one dataset split (full-resolution samples)."""
    if spec.kind == "toy":
        from ..data.toy import ToyConfig, ToySegmentation

        n = spec.toy.n_train if split == spec.train_split else spec.toy.n_val
        try:
            cfg = ToyConfig(size=spec.toy.size, seed=spec.toy.seed)
        except ValueError as e:
            raise DatasetError(f"dataset {spec.name!r}: {e}") from None
        return ToySegmentation(n, split or "train", cfg)
    root = resolve_root(spec, data_root)
    if not root.exists():
        raise DatasetError(
            f"{root}: dataset {spec.name!r} not found (kind {spec.kind}; set data.root / --data-root "
            "or the dataset's root)"
        )
    if spec.kind == "ade20k":
        from ..data.ade20k import ADE20K

        return ADE20K(root, split, full_names=spec.full_names)
    if spec.kind == "generic":
        from ..data.generic import GenericSegmentation

        return GenericSegmentation(root, split)
    raise DatasetError(f"dataset {spec.name!r}: unknown kind {spec.kind!r}; expected ade20k, generic or toy")


def _source(spec: DatasetSpec, split: str | None, data_root: str | None, limit: int | None = None) -> Source:
    dataset = open_dataset(spec, split, data_root)
    mapping = None
    if spec.mapping:
        mapping = read_label_map(Path(spec.mapping).expanduser(), list(dataset.labels))
    source = make_source(spec.name, dataset, mapping)
    if limit is not None and limit < len(dataset):
        source.dataset = Subset(dataset, range(limit))
    return source


class SegDataModule(L.LightningDataModule):
    """Training and validation loaders of one run.

    The sources are opened at construction (listing files only), so label sets are known before the
    model is built. Sharding across processes is done here (``use_distributed_sampler=False``).
    """

    def __init__(self, cfg: DataConfig, mean: Sequence[float], std: Sequence[float], seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = AugmentConfig(cfg.base_size, cfg.crop_size, tuple(cfg.scale_range), cfg.flip)
        self.train_sources = [_source(s, s.train_split, cfg.root) for s in cfg.datasets]
        self.val_sources = [
            _source(s, s.val_split, cfg.root, cfg.max_val_samples)
            for s in cfg.datasets
            if s.val_split is not None
        ]
        for spec, train in zip(cfg.datasets, self.train_sources):
            val = next((v for v in self.val_sources if v.name == spec.name), None)
            pairs = getattr(train.dataset, "pairs", None)
            if val is not None and pairs is not None and pairs == getattr(val.dataset, "pairs", None):
                raise DatasetError(
                    f"dataset {spec.name!r}: splits {spec.train_split!r} and {spec.val_split!r} are the same files "
                    f"({resolve_root(spec, cfg.root)} has no split folders); add images/<split>/ folders or set "
                    f"data.datasets.<i>.val_split=null"
                )
        if cfg.label_space == "union":
            union = unify(self.train_sources + self.val_sources)
            self.train_sources, self.val_sources = (
                union[: len(self.train_sources)],
                union[len(self.train_sources) :],
            )
        for s in self.train_sources + self.val_sources:
            log.info("dataset %s: %d samples, %d labels", s.name, len(s.dataset), len(s.labels))

    @property
    def label_sets(self) -> list[list[str]]:
        return [s.labels for s in self.train_sources]

    @property
    def val_label_sets(self) -> list[list[str]]:
        return [s.labels for s in self.val_sources]

    @property
    def val_names(self) -> list[str]:
        return [s.name for s in self.val_sources]

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _loader_kwargs(self) -> dict:
        workers = self.cfg.num_workers
        pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": pin}

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        data = TrainingSet(self.train_sources, train_transform(self.augment, self.mean, self.std))
        sampler = GroupedBatchSampler(
            [len(s.dataset) for s in self.train_sources],
            self.cfg.batch_size,
            shuffle=True,
            drop_last=self.cfg.drop_last,
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
        return ResumableLoader(data, sampler, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_sources:
            return []
        rank, world = self._rank_world()
        data = TrainingSet(self.val_sources, val_transform(self.augment, self.mean, self.std))
        sizes = [len(s.dataset) for s in self.val_sources]
        if sum(sizes) < world:
            raise DatasetError(f"{sum(sizes)} validation samples cannot be shared by {world} processes")
        sampler = GroupedBatchSampler(
            sizes,
            self.cfg.val_batch_size or self.cfg.batch_size,
            shuffle=False,
            seed=self.seed,
            rank=rank,
            world_size=world,
            pad=False,
            shard_samples=True,
        )
        return DataLoader(data, batch_sampler=sampler, **self._loader_kwargs())
