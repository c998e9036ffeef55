"""Setting up a run of the commands that read images (``segment``, ``features``, ``scene fuse``): joining
the processes of a distributed launch, loading the weights into a predictor for the chosen protocol,
and the records of the weights and the protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Session:
    """What the commands set up before touching images."""

    predictor: Any  # LSegPredictor
    weights: dict[str, Any]  # provenance record (name, path, sha256, model)
    protocol: dict[str, Any]  # preprocessing and test-time augmentation, for the records


def join_ranks(args: argparse.Namespace):
    """This process's :class:`~langseg.distributed.Place`: joins the launcher's process group under
    torchrun (a world of more than one) or with ``--distributed``; sets ``args.device`` to the rank's."""
    from ..distributed import Place, init_distributed, launcher_env

    env = launcher_env()
    torchrun = env is not None and "RANK" in os.environ and env["world_size"] > 1
    if not (args.distributed or torchrun):
        return Place(args.device)
    device = None if args.device == "auto" else args.device
    place = init_distributed(device)
    args.device = place.device
    return place


@contextlib.contextmanager
def joined_ranks(args: argparse.Namespace) -> Iterator[Any]:
    """:func:`join_ranks` for the duration of a run; the process group (if any) is closed after it."""
    from ..distributed import close_distributed  # imports torch

    place = join_ranks(args)
    try:
        yield place
    finally:
        close_distributed()


def open_session(args: argparse.Namespace, templates: list[str] | None) -> Session:
    """Load the weights and build the predictor (after all cheap checks have passed)."""
    from .. import LSegPredictor
    from ..errors import LangsegError
    from ..provenance import weights_record
    from ..weights import TOY_WEIGHTS, load_model

    _allow_max_pixels(args.max_pixels)
    spec = args.weights or TOY_WEIGHTS
    path = _resolve_once(spec)
    try:
        model = load_model(path, device=args.device)
    except ValueError as e:  # an unknown or unavailable device
        raise LangsegError(str(e)) from None
    numerics = getattr(args, "numerics", "fp32")  # segment has it; features computes no logits
    precision = numerics_precision(numerics, args.precision)
    model.set_numerics(numerics)
    if args.compile != "off":
        from ..accel import CompiledLSeg

        model = CompiledLSeg(model, mode=args.compile)
    max_side = args.max_side if args.max_side is not None else (0 if args.sliding_window else 1024)
    predictor = LSegPredictor(
        model,
        precision=precision,
        templates=templates,
        multi_scale=_multi_scale(args),
        max_side=max_side or None,
        max_pixels=args.max_pixels,
        flip=bool(args.flip),
        background=args.background,
    )
    protocol = _protocol(args, predictor, numerics)
    return Session(predictor, weights_record(spec, path, model.config.name), protocol)


def _allow_max_pixels(max_pixels: int | None) -> None:
    """Our --max-pixels check runs first; Pillow's process-wide guard refuses above twice its own
    limit, so lift that when the user allows more (the CLI owns this process)."""
    from PIL import Image

    if max_pixels is None:
        Image.MAX_IMAGE_PIXELS = None
    elif Image.MAX_IMAGE_PIXELS is not None and max_pixels > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _multi_scale(args: argparse.Namespace):
    """The windowed protocol of ``--multi-scale`` or ``--sliding-window``; None for a single scale."""
    from .. import MultiScaleConfig
    from ..inference import OFFICIAL_SCALES

    if args.multi_scale:
        return MultiScaleConfig(
            scales=args.scales or OFFICIAL_SCALES,
            flip=args.flip is not False,
            base_size=520 if args.base_size is None else (args.base_size or None),
            crop_size=args.crop_size or 480,
            batch_size=args.batch_size or 8,
        )
    if args.sliding_window:
        return MultiScaleConfig.sliding_window(
            args.sliding_window, flip=bool(args.flip), batch_size=args.batch_size or 8
        )
    return None


def multi_scale_record(ms) -> dict[str, Any] | None:
    """A windowed protocol's settings as the records show them (None for a single scale)."""
    if ms is None:
        return None
    return {k: getattr(ms, k) for k in ("scales", "flip", "base_size", "crop_size", "stride")}


def _protocol(args: argparse.Namespace, predictor, numerics: str) -> dict[str, Any]:
    """Preprocessing and test-time augmentation, as the records describe them."""
    cfg, ms = predictor.model.config, predictor.multi_scale
    return {
        "color": "RGB, EXIF orientation applied, transparency composited on the background",
        "background": list(args.background),
        "max_side": predictor.max_side,
        "resize": "PIL bilinear to fit max_side (long side), when larger",
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "padding": "bottom/right to a multiple of 32 with -mean/std (black); outputs cropped back",
        "preset": args.preset,
        "mode": "multi-scale" if args.multi_scale else "sliding-window" if ms else "single-scale",
        "multi_scale": None if ms is None else {**multi_scale_record(ms), "scales": list(ms.scales)},
        "flip": ms.flip if ms is not None else bool(args.flip),
        "precision": predictor.precision,
        "compile": args.compile,
        "numerics": numerics,
        "device": str(predictor.device),
    }


def _resolve_once(spec: str):
    """Resolve (and if needed download) weights on rank 0 first, so ranks never fetch at once."""
    from ..distributed import barrier, world
    from ..weights import resolve_weights

    rank, _ = world()
    if rank != 0:
        barrier()  # rank 0 is fetching
    path = resolve_weights(spec, progress=rank == 0)
    if rank == 0:
        barrier()
    return path


def numerics_precision(numerics: str, precision: str) -> str:
    """The image-network precision to use: ``--numerics official`` runs it in fp32, as the official code."""
    from ..errors import LangsegError

    if numerics != "official":
        return precision
    if precision not in ("auto", "fp32"):
        raise LangsegError(
            f"--numerics official runs the image network in fp32 as the official code does; "
            f"drop --precision {precision}"
        )
    return "fp32"
