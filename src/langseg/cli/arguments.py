"""Argument types and the option declarations the commands share: inputs and outputs of ``segment``
and ``features``, the weights, device, preprocessing and protocol options (also ``scene fuse``),
``--flip`` and ``--numerics`` (also the evaluators). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..presets import PRESETS
from . import EXIT_INPUTS, EXIT_INTERNAL, EXIT_USAGE

COLORS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "grey": (128, 128, 128)}


# ----------------------------------------------------------------------------- argument types
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def max_side_arg(text: str) -> int:
    value = int(text)
    if value != 0 and value < 32:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or >= 32, got {value}")
    return value


def window_arg(text: str) -> int:
    value = int(text)
    if value < 32 or value % 32:
        raise argparse.ArgumentTypeError(f"window side must be a multiple of 32 (e.g. 480), got {value}")
    return value


def max_pixels_arg(text: str) -> int | None:
    value = int(text.replace("_", ""))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: no limit), got {value}")
    return value or None


def scales_arg(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 0.75,1,1.25, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be positive numbers, got {text!r}")
    return values


def base_size_arg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: each image's own long side), got {value}")
    return value


def color_arg(text: str) -> tuple[int, int, int]:
    if text.lower() in COLORS:
        return COLORS[text.lower()]
    try:
        rgb = tuple(int(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise argparse.ArgumentTypeError(f"expected white, black, gray or R,G,B (0-255), got {text!r}")
    return rgb  # type: ignore[return-value]


def shard_arg(text: str) -> tuple[int, int]:
    from ..inputs import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def resolution_arg(text: str) -> str | tuple[int, int]:
    if text in ("half", "full"):
        return text
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected half, full or WIDTHxHEIGHT like 640x480, got {text!r}"
        ) from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return (w, h)


# --------------------------------------------------------------------------- shared options
def add_common_arguments(p: argparse.ArgumentParser, default_out: str | None) -> None:
    """Inputs, outputs and :func:`add_model_arguments`: the options of ``segment`` and ``features``."""
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUTS",
        help="image or video files, folders (searched recursively) or quoted glob patterns",
    )
    p.add_argument(
        "--inputs-from",
        type=Path,
        default=None,
        metavar="FILE",
        help="read more inputs from FILE, one per line ('#' comments; relative paths are relative "
        "to FILE's folder): large lists without shell globbing",
    )
    p.add_argument(
        "--every",
        type=positive_int,
        default=1,
        metavar="N",
        help="take every N-th frame of video inputs (default: 1, every frame)",
    )
    p.add_argument(
        "--shard",
        type=shard_arg,
        default=None,
        metavar="I/N",
        help="process only the I-th of N equal, deterministic slices of the inputs (0 <= I < N), "
        "e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; outputs are named as in a full run",
    )
    if default_out is None:
        p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    else:
        p.add_argument(
            "--out",
            type=Path,
            default=Path(default_out),
            help=f"output folder (created if missing; default: {default_out})",
        )
    add_model_arguments(p)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Weights, device, preprocessing, protocol, process and overwrite options: shared by ``segment``,
    ``features`` and ``scene fuse``."""
    _add_weights_options(p)
    _add_image_options(p)
    _add_protocol_options(p)
    _add_run_options(p)


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: auto)")


def _add_weights_options(p: argparse.ArgumentParser) -> None:
    """``--weights``, ``--device``, ``--precision``, ``--compile``."""
    p.add_argument(
        "--weights",
        default=None,
        metavar="NAME_OR_PATH",
        help="a weights name (see 'langseg weights list'), a folder of ours or an official "
        ".ckpt (default: the bundled lseg-toy)",
    )
    add_device_argument(p)
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="autocast precision of the image network (default: auto = bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument(
        "--compile",
        choices=["off", "exact", "bucketed"],
        default="off",
        help="torch.compile the image network: 'exact' compiles each input shape (at most 8, "
        "then eager); 'bucketed' pads sizes up to multiples of 128 so few graphs serve "
        "many sizes (outputs then differ slightly near the padded border). Pays off on "
        "GPUs over many frames; the first call per shape is slow (default: off)",
    )


def _add_image_options(p: argparse.ArgumentParser) -> None:
    """What the network sees of each image: ``--max-side``, ``--max-pixels``, ``--background``,
    ``--batch-size``."""
    p.add_argument(
        "--max-side",
        type=max_side_arg,
        default=None,
        metavar="N",
        help="shrink images whose long side exceeds N before the network (results are scaled "
        "back to the input size); 0: never (default: 1024, or 0 with --sliding-window)",
    )
    p.add_argument(
        "--max-pixels",
        type=max_pixels_arg,
        default=100_000_000,
        metavar="N",
        help="refuse images with more pixels than this before decoding them (decompression-"
        "bomb guard); 0: no limit (default: 100000000)",
    )
    p.add_argument(
        "--background",
        type=color_arg,
        default=(255, 255, 255),
        metavar="COLOR",
        help="colour transparent pixels are composited on: white, black, gray or R,G,B (default: white)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="images per network call (same-size images are batched; default 4), or windows "
        "per call with --multi-scale/--sliding-window (default 8)",
    )


def _add_protocol_options(p: argparse.ArgumentParser) -> None:
    """Test-time augmentation: ``--preset``, ``--multi-scale``, ``--sliding-window`` and their settings,
    ``--flip``."""
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="extraction recipe of a project by name (sizes, scales, flip; see docs/cli.md); options "
        "given explicitly override it",
    )
    p.add_argument(
        "--multi-scale",
        action="store_true",
        help="the official evaluator: scales 0.5-1.75 of a 520 base, 480 sliding windows, flip",
    )
    p.add_argument(
        "--sliding-window",
        type=window_arg,
        nargs="?",
        const=480,
        default=None,
        metavar="SIDE",
        help="run SIDE x SIDE windows (default 480, stride 2/3 of it) over the image at its own "
        "resolution, overlaps averaged: large images in bounded memory",
    )
    p.add_argument(
        "--scales",
        type=scales_arg,
        default=None,
        metavar="S1,S2,...",
        help="scales for --multi-scale (default: 0.5,0.75,1,1.25,1.5,1.75)",
    )
    p.add_argument(
        "--base-size",
        type=base_size_arg,
        default=None,
        metavar="N",
        help="with --multi-scale: the long side at scale 1 (default: 520); 0: each image's own long side",
    )
    p.add_argument(
        "--crop-size",
        type=window_arg,
        default=None,
        metavar="N",
        help="with --multi-scale: the side of the square windows the network sees (default: 480)",
    )
    add_flip_argument(p)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """``--distributed``, ``--overwrite``, ``--skip-existing``."""
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one process per GPU: join the process group of SLURM srun (automatic under torchrun); "
        "the inputs are split between the processes",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep existing output files and only write the missing ones (resume a run)",
    )


def add_flip_argument(p: argparse.ArgumentParser) -> None:
    """``--flip/--no-flip``: None (the protocol's default) unless given."""
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the horizontally flipped run (default: on with --multi-scale, off without)",
    )


def add_numerics_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--numerics",
        choices=["fp32", "official"],
        default="fp32",
        help="'official': the official CUDA code's float16 text tower and similarity, to reproduce "
        "its outputs exactly (within one float16 step); the image network runs in fp32 "
        "(default: fp32)",
    )


def exit_status(usage: str) -> str:
    """The exit-status lines of the help of a command that processes its inputs one by one."""
    return (
        f"exit status: 0 all images done, {EXIT_INPUTS} some inputs skipped (reported by name), "
        f"{EXIT_USAGE} bad {usage},\n{EXIT_INTERNAL} internal error (a bug; please report it).\n"
    )
