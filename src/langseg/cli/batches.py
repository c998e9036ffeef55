"""Running the network over decoded batches of images with bounded memory: a memory check before each
batch on the CPU, the fallback to one image at a time when a batch runs out of memory, and an image
that fails reported by name while the others go on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

from .report import Report


def batched(iterable, n: int):
    batch = []
    for x in iterable:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def images_per_call(args: argparse.Namespace, predictor) -> int:
    """``--batch-size`` images per network call (default 4); one with a windowed protocol, whose
    ``--batch-size`` counts windows instead."""
    return 1 if predictor.multi_scale is not None else (args.batch_size or 4)


def decoded_batches(args: argparse.Namespace, todo: list, batch_size: int, report: Report, bar):
    """Images decoded on worker threads, in batches of at most ``batch_size``; files that cannot be
    read are reported by name, counted on the progress bar and left out."""
    from ..inputs import iter_decoded

    decoded = iter_decoded(
        todo, max_pixels=args.max_pixels, background=args.background, prefetch=max(2, 2 * batch_size)
    )
    for chunk in batched(decoded, batch_size):
        ok = []
        for d in chunk:
            if d.error is not None:
                report.skip(str(d.error))
                bar.update(1)
            else:
                ok.append(d)
        if ok:
            yield ok


def run_batch(
    predictor,
    decoded: list,
    batch_fn,
    one_fn,
    report: Report,
    *,
    need=None,
    describe=None,
    hint: str = "try a smaller --max-side",
) -> list:
    """``batch_fn(images)``; when that runs out of memory, ``one_fn(image)`` one image at a time, and
    ``None`` (reported by name) for an image that does not fit.

    On the CPU (and MPS, whose memory is the host's) ``need(d)`` - the bytes one image will take - is
    compared with the memory available *before* anything is allocated: the kernel's OOM killer would
    end the whole run, so an image that cannot fit is reported (``describe(d)`` says what it is) and
    skipped, and a batch that cannot fit as a whole runs one image at a time.
    """
    describe = describe or _size_of
    todo, together = list(range(len(decoded))), True
    if need is not None and predictor.device.type in ("cpu", "mps"):
        todo, together = _fitting(decoded, need, describe, hint, report)
    if together:
        try:
            return batch_fn([d.image for d in decoded])
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
        if predictor.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()  # give the failed batch's memory back before retrying one by one
    out: list = [None] * len(decoded)
    for i in todo:
        d = decoded[i]
        try:
            out[i] = one_fn(d.image)
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            report.skip(f"{d.item.path}: out of memory for {describe(d)} on {predictor.device}; {hint}")
    return out


def _size_of(d) -> str:
    return "{}x{}".format(*d.image.shape[1::-1])


def _fitting(decoded: list, need, describe, hint: str, report: Report) -> tuple[list[int], bool]:
    """The images that fit in the memory available now (the others reported by name), and whether the
    whole batch fits at once."""
    from ..predictor import available_memory

    free = available_memory()
    needs = [need(d) for d in decoded]
    for d, n in zip(decoded, needs):
        if n > free:
            report.skip(
                f"{d.item.path}: {describe(d)} needs about {_gib(n)} of memory and {_gib(free)} "
                f"are available; {hint}"
            )
    todo = [i for i, n in enumerate(needs) if n <= free]
    return todo, len(todo) == len(decoded) and sum(needs) <= free


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**50 else f"{n / 2**40:,.0f} TiB"


def run_guarded(predictor, decoded: list, batch_fn, one_fn, report: Report, **options: Any) -> list:
    """:func:`run_batch` (``options`` go to it), and when the batch fails for another reason than memory,
    each image again on its own: an image that still fails is reported by name (``None``) and the others
    go on."""
    try:
        return run_batch(predictor, decoded, batch_fn, one_fn, report, **options)
    except Exception:
        if len(decoded) == 1:
            with report.guard(decoded[0].item.path):
                raise
            return [None]
    out = []
    for d in decoded:
        result = None
        with report.guard(d.item.path):
            result = run_batch(predictor, [d], batch_fn, one_fn, report, **options)[0]
        out.append(result)
    return out


def guarded_results(
    args: argparse.Namespace, predictor, todo: list, report: Report, bar, batch_fn, one_fn, **options: Any
) -> Iterator[tuple[Any, Any, float]]:
    """``(decoded image, result, inference seconds per image)`` for each input of ``todo`` that gave a
    result: decoded in batches of :func:`images_per_call`, run through :func:`run_guarded` (``options``
    go to it). Every input moves the progress bar once, after its result has been used."""
    batch_size = images_per_call(args, predictor)
    for ok in decoded_batches(args, todo, batch_size, report, bar):
        t0 = time.perf_counter()
        results = run_guarded(predictor, ok, batch_fn, one_fn, report, **options)
        per_image = (time.perf_counter() - t0) / len(ok)
        for d, result in zip(ok, results):
            if result is not None:
                yield d, result, per_image
            bar.update(1)
