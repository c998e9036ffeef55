"""The checks and input planning of the commands that read images (``segment``, ``features``): option
combinations and ``--preset``, the whole input list and its output stems, this process's slice of it,
and the refusal to replace existing outputs. All of it runs before any weights are loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def plan_inputs(args: argparse.Namespace, place) -> tuple[list[Any], list[Any], list[str]]:
    """Check option combinations, then inputs -> (this process's images, their output stems, notes on
    inputs that gave nothing): :func:`all_inputs`, then :func:`this_slice`."""
    items, stems, notes = all_inputs(args)
    items, stems = this_slice(args, place, items, stems)
    return items, stems, notes if place.is_main else []


def check_common_options(args: argparse.Namespace) -> None:
    """Apply ``--preset``, then raise :class:`LangsegError` for contradicting options of
    :func:`add_model_arguments`."""
    from ..errors import LangsegError

    if args.overwrite and args.skip_existing:
        raise LangsegError("--overwrite and --skip-existing contradict each other; pass one")
    apply_preset_to(args)
    for option, value in (
        ("--scales", args.scales),
        ("--base-size", args.base_size),
        ("--crop-size", args.crop_size),
    ):
        if value is not None and not args.multi_scale:
            hint = " (with --sliding-window, give the window side to it)" if option == "--crop-size" else ""
            raise LangsegError(f"{option} needs --multi-scale or a --preset{hint}")
    if args.multi_scale and args.sliding_window:
        raise LangsegError("--multi-scale and --sliding-window are two protocols; pass one")


def all_inputs(args: argparse.Namespace) -> tuple[list[Any], list[Any], list[str]]:
    """Check option combinations, then the whole input list -> (images, output stems, notes).

    Stems are derived from the whole list, so every slice names files exactly as a single run would.
    Raises :class:`LangsegError` when no image is found: all before any weights are loaded.
    """
    from ..errors import LangsegError
    from ..inputs import expand_inputs, read_inputs_file
    from ..outputs import output_stems

    check_common_options(args)
    if args.out.exists() and not args.out.is_dir():
        raise LangsegError(f"--out {args.out} is a file; give a folder")
    inputs = list(args.inputs)
    if args.inputs_from is not None:
        inputs += read_inputs_file(args.inputs_from)
    if not inputs:
        raise LangsegError("no inputs: give image/video files, folders or patterns, or --inputs-from FILE")
    items, notes = expand_inputs(inputs, exclude=args.out, every=args.every)
    if not items:
        raise LangsegError("no images to process: " + "; ".join(notes or ["no inputs"]))
    return items, output_stems(items), notes


def this_slice(args: argparse.Namespace, place, items: list[Any], stems: list[Any]) -> tuple[list, list]:
    """The ``--shard`` slice of the whole list, then this rank's contiguous part of it."""
    from ..distributed import split
    from ..errors import LangsegError

    if args.shard is not None:
        index, count = args.shard
        total = len(items)
        items, stems = split(items, index, count), split(stems, index, count)
        if not items:
            raise LangsegError(f"--shard {index}/{count}: this slice of the {total} inputs is empty")
    return split(items, place.rank, place.world_size), split(stems, place.rank, place.world_size)


def apply_preset_to(args: argparse.Namespace) -> None:
    """Fill the options the user left unset from ``--preset`` (explicit options win); features'
    ``--resolution`` then defaults to half."""
    from ..presets import apply_preset

    given = {k: v for k, v in vars(args).items() if k != "func"}
    for key, value in apply_preset(getattr(args, "preset", None), given).items():
        setattr(args, key, value)
    if hasattr(args, "resolution") and args.resolution is None:
        args.resolution = "half"


def refuse_existing(args: argparse.Namespace, paths: list[Path]) -> None:
    """Raise :class:`LangsegError` naming the outputs that exist, unless ``--overwrite`` or
    ``--skip-existing`` says what to do with them."""
    from ..errors import LangsegError
    from ..outputs import existing

    if args.overwrite or args.skip_existing:
        return
    clash = existing(paths)
    if clash:
        raise LangsegError(
            f"output files exist: {clash}; pass --overwrite to replace them or "
            "--skip-existing to keep them and do the rest"
        )
