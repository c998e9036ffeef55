"""Fixed-label evaluation: one confusion matrix over the whole split, scored once at the end.

Each image is segmented by :meth:`LSegPredictor.predict` at its full size, exactly as ``langseg
segment`` does (single scale: pad to a multiple of 32 and crop back; multi-scale: the official
evaluator), and the ``(H, W)`` label map is compared with the mask. No resize or crop is hidden in
between. Under ``torch.distributed`` every rank takes every ``world``-th image and the confusion
matrices are summed (:func:`langseg.distributed.all_reduce`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from ..data.base import SegmentationDataset
from ..distributed import all_reduce
from ..errors import LangsegError
from ..labels import display_names
from ..metrics import confusion_matrix, miou, miou_present, pixel_accuracy
from ..predictor import LSegPredictor

log = logging.getLogger(__name__)

Label = str | tuple[str, ...]


@dataclass
class EvalResult:
    """Accumulated counts of an evaluation (possibly of a prefix of the split)."""

    confusion: torch.Tensor  # (K, K) int64, rows true class, columns predicted
    labels: list[str]  # display name per class
    images: int  # images covered (scored or skipped)
    seconds: float  # wall time of the loop
    skipped: list[str] = field(default_factory=list)  # one message per unreadable image, naming it

    def metrics(self) -> dict[str, Any]:
        """``pixAcc``, official ``mIoU`` (absent classes count 0), ``mIoU_present``, ``per_class_iou``.

        ``per_class_iou`` maps each label to its IoU, or None for a class absent from both prediction
        and ground truth; a repeated name (ADE20K's two ``screen``) gets its class index appended.
        """
        mean, per_class = miou(self.confusion)
        present = miou_present(self.confusion)
        return {
            "pixAcc": pixel_accuracy(self.confusion),
            "mIoU": mean,
            "mIoU_present": None if present != present else present,  # NaN -> None
            "per_class_iou": {
                key: (None if v != v else float(v))
                for key, v in zip(unique_keys(self.labels), per_class.tolist())
            },
        }


def unique_keys(names: Sequence[str]) -> list[str]:
    """Names made unique for JSON keys: a repeated name becomes ``"name (index)"``."""
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        out.append(n if n not in seen else f"{n} ({i})")
        seen.add(n)
    return out


class Guarded(Dataset):
    """``dataset[indices[i]]``, or the :class:`LangsegError` reading it raised, returned as the item.

    Loader workers would re-raise an error wrapped in a traceback text; returned as a value, it is
    re-raised in the main process with its own message (naming the file).
    """

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        try:
            return self.dataset[self.indices[i]]
        except LangsegError as e:
            return e
        except Exception as e:  # a reader bug must not stop the run either; it is reported as such
            return LangsegError(f"image {self.indices[i]} of the split: {type(e).__name__}: {e}")


def collate_list(batch: list) -> list:
    """Keep samples (and reading errors, in their place) as a list."""
    return batch


def collate_tensors(batch: list) -> Any:
    """``default_collate`` (or pass on the first reading error)."""
    return next((b for b in batch if isinstance(b, LangsegError)), None) or default_collate(batch)


def raise_if_error(batch: Any) -> Any:
    if isinstance(batch, LangsegError):
        raise batch
    return batch


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def evaluate(
    predictor: LSegPredictor,
    dataset: SegmentationDataset,
    labels: Sequence[Label] | None = None,
    *,
    start: int = 0,
    limit: int | None = None,
    confusion: torch.Tensor | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool = True,
    checkpoint: Callable[[EvalResult], None] | None = None,
    checkpoint_every: int = 50,
) -> EvalResult:
    """Segment images ``start .. limit-1`` of ``dataset`` and accumulate their confusion matrix.

    ``labels``: one prompt (or synonym tuple) per dataset class, in class order; default the
    dataset's own (``label_synonyms`` when it has them). ``confusion``: counts of images ``0..start-1``
    from an earlier run, to resume. ``checkpoint`` is called with the running result every
    ``checkpoint_every`` images (single process only). The returned result covers ``0..limit-1``.
    """
    labels, stop, conf = _check_run(dataset, labels, start, limit, confusion)
    rank, world = rank_and_world()
    indices = list(range(start + rank, stop, world))
    loader = DataLoader(
        Guarded(dataset, indices),
        batch_size=max(1, batch_size),
        num_workers=num_workers,
        collate_fn=collate_list,
    )
    done = start  # images covered by `conf` (single process)
    t0 = time.perf_counter()
    show = progress and rank == 0
    bar = tqdm(total=len(indices), disable=not show, desc="eval", unit="img", dynamic_ncols=True)
    skipped: list[str] = []
    for batch in loader:
        scored = _score_batch(predictor, batch, labels, batch_size, dataset.ignore_index, conf, skipped)
        done += len(batch)
        bar.update(len(batch))
        if show:
            _show_metrics(bar, conf)
        if (
            checkpoint is not None
            and world == 1
            and done < stop
            and (done - start) % checkpoint_every < scored
        ):
            elapsed = time.perf_counter() - t0
            checkpoint(EvalResult(conf.clone(), display_names(labels), done, elapsed, list(skipped)))
    bar.close()
    conf = _gather(conf, skipped)
    return EvalResult(conf, display_names(labels), stop, time.perf_counter() - t0, skipped)


def _check_run(
    dataset: SegmentationDataset,
    labels: Sequence[Label] | None,
    start: int,
    limit: int | None,
    confusion: torch.Tensor | None,
) -> tuple[list[Label], int, torch.Tensor]:
    """The labels (one per class), the image to stop before, and the confusion matrix to add to."""
    names = list(dataset.labels)
    if labels is None:
        labels = list(getattr(dataset, "label_synonyms", names))
    labels = [lab if isinstance(lab, str) else tuple(lab) for lab in labels]
    if len(labels) != len(names):
        raise LangsegError(f"{len(labels)} labels given for a dataset with {len(names)} classes")
    K = len(labels)
    stop = len(dataset) if limit is None else min(int(limit), len(dataset))
    if not 0 <= start <= stop:
        raise LangsegError(f"cannot start at image {start}: the run covers images 0..{stop - 1}")
    conf = torch.zeros(K, K, dtype=torch.long) if confusion is None else confusion.clone().long().cpu()
    if conf.shape != (K, K):
        raise LangsegError(f"resumed confusion matrix is {tuple(conf.shape)}, expected ({K}, {K})")
    return labels, stop, conf


def _score_batch(
    predictor: LSegPredictor,
    batch: list,
    labels: list[Label],
    batch_size: int,
    ignore_index: int,
    conf: torch.Tensor,
    skipped: list[str],
) -> int:
    """Add the batch's confusion matrices to ``conf``; returns the number of images scored.

    Each reading error in the batch is reported and added to ``skipped``.
    """
    for e in batch:
        if isinstance(e, LangsegError):  # an unreadable image or mask: reported, left out
            skipped.append(str(e))
            tqdm.write(f"langseg: skipped {e}", file=sys.stderr)
    samples = [s for s in batch if not isinstance(s, LangsegError)]
    preds = predictor.predict([s.image for s in samples], labels, batch_size=batch_size) if samples else []
    for s, p in zip(samples, preds):
        conf += _confusion(s, p, len(labels), ignore_index)
    return len(samples)


def _show_metrics(bar: tqdm, conf: torch.Tensor) -> None:
    bar.set_postfix(
        pixAcc=f"{pixel_accuracy(conf):.4f}",
        mIoU=f"{miou(conf)[0]:.4f}",
        present=f"{miou_present(conf):.4f}",
        refresh=False,
    )


def _gather(conf: torch.Tensor, skipped: list[str]) -> torch.Tensor:
    """The confusion matrix summed over processes; ``skipped`` notes how many images others skipped."""
    conf = all_reduce(conf)
    total = int(all_reduce(torch.tensor([len(skipped)], dtype=torch.long))[0])
    if total > len(skipped):  # the other processes' messages stay in their own logs
        skipped.append(f"... and {total - len(skipped)} more on other processes")
    return conf


def _confusion(sample: Any, prediction: Any, K: int, ignore_index: int) -> torch.Tensor:
    """The ``(K, K)`` confusion matrix of one prediction against its mask."""
    if prediction.labels.shape != sample.mask.shape:  # the predictor promises the input size
        raise LangsegError(
            f"{sample.name}: prediction {prediction.labels.shape} does not match mask {sample.mask.shape}"
        )
    return confusion_matrix(
        torch.from_numpy(prediction.labels), torch.from_numpy(sample.mask), K, ignore_index
    )
