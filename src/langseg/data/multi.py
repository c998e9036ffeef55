"""Several segmentation datasets in one run, each with its own label set.

LSeg scores pixels against whatever label names a batch comes with, so datasets with different
taxonomies train together as long as every batch stays inside one dataset (its label set is then the
batch's label set). :class:`GroupedBatchSampler` builds such batches; :class:`TrainingSet` serves them.

A dataset may be relabelled to a shared taxonomy with a mapping file (:func:`read_label_map`)::

    # source label -> shared label; '-' drops the class (its pixels are ignored)
    rider -> person
    wall-other-merged -> wall
    banner -> -
    * -> -          # optional: every label not listed is dropped (default: kept under its own name)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .base import IGNORE_INDEX, DatasetError, SegmentationDataset

log = logging.getLogger(__name__)

DROP = "-"


# ------------------------------------------------------------------------------------ label maps
def read_label_map(path: str | Path, source_labels: Sequence[str]) -> dict[str, str]:
    """Parse a mapping file -> ``{source label: shared label or '-'}`` for every source label."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the label mapping: {e.strerror or e}") from None
    known = set(source_labels)
    mapping: dict[str, str] = {}
    default: str | None = None  # None: unlisted labels keep their names
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "->" not in line:
            raise DatasetError(f"{path}:{n}: expected 'source label -> shared label', got {raw.strip()!r}")
        src, dst = (s.strip() for s in line.split("->", 1))
        if not src or not dst:
            raise DatasetError(f"{path}:{n}: empty label in {raw.strip()!r}")
        if src == "*":
            default = dst
            continue
        if src not in known:
            raise DatasetError(
                f"{path}:{n}: {src!r} is not a label of this dataset (labels: "
                f"{', '.join(list(source_labels)[:12])}{', ...' if len(known) > 12 else ''})"
            )
        if src in mapping and mapping[src] != dst:
            raise DatasetError(f"{path}:{n}: {src!r} is mapped twice ({mapping[src]!r} and {dst!r})")
        mapping[src] = dst
    return {s: mapping.get(s, s if default is None else default) for s in source_labels}


def relabel(source_labels: Sequence[str], mapping: dict[str, str] | None) -> tuple[list[str], np.ndarray]:
    """Source labels and a name mapping -> (shared label list, ``(256,)`` uint8 lookup table).

    The shared list keeps the order of first appearance. The table sends a source index to its shared
    index, dropped classes and IGNORE_INDEX to IGNORE_INDEX.
    """
    mapping = mapping or {s: s for s in source_labels}
    shared: list[str] = []
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for i, name in enumerate(source_labels):
        dst = mapping.get(name, name)
        if dst == DROP:
            continue
        if dst not in shared:
            shared.append(dst)
        lut[i] = shared.index(dst)
    if not shared:
        raise DatasetError("the label mapping drops every class")
    if len(shared) >= IGNORE_INDEX or len(source_labels) >= IGNORE_INDEX:
        raise DatasetError(
            f"at most {IGNORE_INDEX - 1} labels per dataset are supported, got {len(source_labels)}"
        )
    return shared, lut


# ------------------------------------------------------------------------------- training data
@dataclass
class Source:
    """One dataset of a run: its reader, its label set and how its mask values map onto it."""

    name: str  # short name, used in logs (val/<name>/miou)
    dataset: SegmentationDataset
    labels: list[str]  # the batch label set of this source (after relabelling)
    lut: np.ndarray = field(repr=False)  # (256,) uint8: raw mask value -> index into `labels` (or 255)


def make_source(name: str, dataset: SegmentationDataset, mapping: dict[str, str] | None = None) -> Source:
    labels, lut = relabel(list(dataset.labels), mapping)
    return Source(name, dataset, labels, lut)


def unify(sources: Sequence[Source]) -> list[Source]:
    """The same sources scored against the union of their label sets (one shared label list)."""
    union: list[str] = []
    for s in sources:
        union += [n for n in s.labels if n not in union]
    if len(union) >= IGNORE_INDEX:
        raise DatasetError(
            f"the union label set has {len(union)} labels; at most {IGNORE_INDEX - 1} are supported"
        )
    out = []
    for s in sources:
        to_union = np.array(
            [union.index(n) for n in s.labels] + [IGNORE_INDEX] * (256 - len(s.labels)), np.uint8
        )
        lut = np.where(s.lut == IGNORE_INDEX, IGNORE_INDEX, to_union[np.minimum(s.lut, 255)]).astype(np.uint8)
        out.append(Source(s.name, s.dataset, list(union), lut))
    return out


Key = tuple[int, int, int]  # (source, index in the source, augmentation seed)


class TrainingSet(Dataset):
    """Transformed samples of several sources, addressed by :data:`Key` (see GroupedBatchSampler).

    Returns ``{"image": (3, h, w) float32, "mask": (h, w) int64, "source": int}``. The transform runs
    under a torch generator seeded from the key, so a sample is a pure function of its key (resumed
    runs and any number of DataLoader workers see the same augmentation).
    """

    def __init__(self, sources: Sequence[Source], transform: Any) -> None:
        if not sources:
            raise DatasetError("no datasets given")
        self.sources = list(sources)
        self.transform = transform

    def __len__(self) -> int:
        return sum(len(s.dataset) for s in self.sources)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        src, index, seed = key
        source = self.sources[src]
        sample = source.dataset[index]
        mask = source.lut[np.clip(sample.mask, 0, 255)].astype(np.int64)  # (H, W) source -> batch label ids
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, target = self.transform(sample.image, mask)
        return {"image": image, "mask": target, "source": src}


def sample_seed(seed: int, epoch: int, source: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, source, index]).generate_state(1)[0])


class GroupedBatchSampler(Sampler[list[Key]]):
    """Batches that stay within one source; shuffled per epoch, sharded across ranks, resumable.

    Each source's indices are permuted (if ``shuffle``) and cut into batches; the batches of all
    sources are interleaved in a random order. Rank ``r`` of ``world_size`` takes every
    ``world_size``-th batch; the list is padded with its own first batches so all ranks run the same
    number of steps (training). With ``shard_samples`` every rank takes every ``world_size``-th sample
    of each source instead and batches those, unpadded (validation: each sample counted once, and
    every rank gets work as long as there are ``world_size`` samples). Everything is a function of
    ``(seed, epoch)``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        shard_samples: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.sizes = list(sizes)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.pad = seed, rank, world_size, pad
        self.shard_samples = shard_samples
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already done in it)
        if self._num_batches() == 0:
            raise DatasetError(
                f"no complete batch of {batch_size} (datasets of {self.sizes} samples with drop_last); "
                "lower the batch size"
            )

    @property
    def sampler(self) -> GroupedBatchSampler:
        """Lightning calls ``batch_sampler.sampler.set_epoch(epoch)``; the epoch lives here."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, done: int) -> None:
        """Make the next iteration over ``epoch`` skip its first ``done`` batches."""
        self._resume = (epoch, done)

    def _local_sizes(self) -> list[int]:
        """Samples per source that this rank batches itself."""
        if self.shard_samples:
            return [len(range(self.rank, n, self.world_size)) for n in self.sizes]
        return self.sizes

    def _num_batches(self) -> int:
        sizes = self._local_sizes()
        per = [n // self.batch_size if self.drop_last else -(-n // self.batch_size) for n in sizes]
        return sum(per)

    def __len__(self) -> int:
        total = self._num_batches()
        if self.shard_samples:
            return total
        if self.pad:
            return -(-total // self.world_size)
        return len(range(self.rank, total, self.world_size))

    def plan(self, epoch: int) -> list[list[Key]]:
        """All batches of this rank in ``epoch``, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[list[Key]] = []
        for src, n in enumerate(self.sizes):
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            if self.shard_samples:
                order = order[self.rank :: self.world_size]
            stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
            for start in range(0, stop, self.batch_size):
                idx = order[start : start + self.batch_size]
                batches.append([(src, int(i), sample_seed(self.seed, epoch, src, int(i))) for i in idx])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.shard_samples:
            return batches
        if self.pad and len(batches) % self.world_size:
            batches += batches[: self.world_size - len(batches) % self.world_size]
        return batches[self.rank :: self.world_size]

    def __iter__(self):
        start = 0
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            if epoch == self.epoch:
                start = done
        yield from self.plan(self.epoch)[start:]


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader over a :class:`GroupedBatchSampler` whose position survives a checkpoint.

    Lightning stores ``state_dict()`` in its checkpoints and calls ``load_state_dict()`` before
    iterating again, so a resumed run continues with the next batch of the interrupted epoch.
    """

    def __init__(self, dataset: Dataset, batch_sampler: GroupedBatchSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._epoch = 0
        self._yielded = 0

    def __iter__(self):
        sampler: GroupedBatchSampler = self.batch_sampler
        start = sampler._resume[1] if sampler._resume and sampler._resume[0] == sampler.epoch else 0
        self._epoch, self._yielded = sampler.epoch, start
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(int(state["epoch"]), int(state["batches"]))
