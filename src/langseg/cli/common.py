"""Options and helpers shared by the commands that read images (``segment``, ``features``) and the
evaluators: argument types, the common options, input planning, loading the weights into a
predictor, decoding in batches with an out-of-memory fallback, progress and the end-of-run report.

Not a command itself (no ``register``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..presets import PRESETS

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


def add_flip_argument(p: argparse.ArgumentParser) -> None:
    """``--flip/--no-flip``: None (the protocol's default) unless given."""
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the horizontally flipped run (default: on with --multi-scale, off without)",
    )


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
    p.add_argument(
        "--weights",
        default=None,
        metavar="NAME_OR_PATH",
        help="a weights name (see 'langseg weights list'), a folder of ours or an official "
        ".ckpt (default: the bundled lseg-toy)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: auto)")
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


@dataclass
class Session:
    """What both commands set up before touching images."""

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


def open_session(args: argparse.Namespace, templates: list[str] | None) -> Session:
    """Load the weights and build the predictor (after all cheap checks have passed)."""
    from PIL import Image

    from .. import LSegPredictor, MultiScaleConfig
    from ..errors import LangsegError
    from ..inference import OFFICIAL_SCALES
    from ..provenance import weights_record
    from ..weights import TOY_WEIGHTS, load_model

    # Our --max-pixels check runs first; Pillow's process-wide guard refuses above twice its own
    # limit, so lift that when the user allows more (the CLI owns this process).
    if args.max_pixels is None:
        Image.MAX_IMAGE_PIXELS = None
    elif Image.MAX_IMAGE_PIXELS is not None and args.max_pixels > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = args.max_pixels
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
    ms = None
    if args.multi_scale:
        ms = MultiScaleConfig(
            scales=args.scales or OFFICIAL_SCALES,
            flip=args.flip is not False,
            base_size=520 if args.base_size is None else (args.base_size or None),
            crop_size=args.crop_size or 480,
            batch_size=args.batch_size or 8,
        )
    elif args.sliding_window:
        ms = MultiScaleConfig.sliding_window(
            args.sliding_window, flip=bool(args.flip), batch_size=args.batch_size or 8
        )
    max_side = args.max_side if args.max_side is not None else (0 if args.sliding_window else 1024)
    predictor = LSegPredictor(
        model,
        precision=precision,
        templates=templates,
        multi_scale=ms,
        max_side=max_side or None,
        max_pixels=args.max_pixels,
        flip=bool(args.flip),
        background=args.background,
    )
    protocol = _protocol(args, predictor, numerics)
    return Session(predictor, weights_record(spec, path, model.config.name), protocol)


def _protocol(args: argparse.Namespace, predictor, numerics: str) -> dict[str, Any]:
    """Preprocessing and test-time augmentation, as the records describe them."""
    cfg, ms = predictor.model.config, predictor.multi_scale
    max_side = predictor.max_side
    return {
        "color": "RGB, EXIF orientation applied, transparency composited on the background",
        "background": list(args.background),
        "max_side": max_side,
        "resize": "PIL bilinear to fit max_side (long side), when larger",
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "padding": "bottom/right to a multiple of 32 with -mean/std (black); outputs cropped back",
        "preset": args.preset,
        "mode": "multi-scale" if args.multi_scale else "sliding-window" if ms else "single-scale",
        "multi_scale": None
        if ms is None
        else {
            "scales": list(ms.scales),
            "flip": ms.flip,
            "base_size": ms.base_size,
            "crop_size": ms.crop_size,
            "stride": ms.stride,
        },
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


def batched(iterable, n: int):
    batch = []
    for x in iterable:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def add_numerics_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--numerics",
        choices=["fp32", "official"],
        default="fp32",
        help="'official': the official CUDA code's float16 text tower and similarity, to reproduce "
        "its outputs exactly (within one float16 step); the image network runs in fp32 "
        "(default: fp32)",
    )


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
    out: list = [None] * len(decoded)
    todo = list(range(len(decoded)))
    together = True
    if need is not None and predictor.device.type in ("cpu", "mps"):
        from ..predictor import available_memory

        free = available_memory()
        needs = [need(d) for d in decoded]
        for d, n in zip(decoded, needs):
            if n > free:
                what = describe(d) if describe is not None else "{}x{}".format(*d.image.shape[1::-1])
                report.skip(
                    f"{d.item.path}: {what} needs about {_gib(n)} of memory and {_gib(free)} "
                    f"are available; {hint}"
                )
        todo = [i for i, n in enumerate(needs) if n <= free]
        together = len(todo) == len(decoded) and sum(needs) <= free
    if together:
        try:
            return batch_fn([d.image for d in decoded])
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
        if predictor.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()  # give the failed batch's memory back before retrying one by one
    for i in todo:
        d = decoded[i]
        try:
            out[i] = one_fn(d.image)
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            what = describe(d) if describe is not None else "{}x{}".format(*d.image.shape[1::-1])
            report.skip(f"{d.item.path}: out of memory for {what} on {predictor.device}; {hint}")
    return out


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


class Report:
    """Counts outcomes and tells the user about skipped inputs as they happen and at the end."""

    def __init__(self, notes: list[str]) -> None:
        self.done = 0
        self.kept = 0
        self.skipped: list[str] = []
        self.internal = 0  # inputs lost to an unexpected error (a bug): exit status 70
        for note in notes:
            self.skip(note)

    @contextlib.contextmanager
    def guard(self, path: Path | str):
        """Run one input's work; an error is reported with the input's name and the run goes on.

        :class:`LangsegError` (a problem with that input) skips it; any other exception is an
        internal error, reported as such (traceback only under ``--verbose``).
        """
        from ..cli import INTERNAL_ERROR
        from ..errors import LangsegError

        try:
            yield
        except LangsegError as e:
            text = str(e)
            self.skip(text if text.startswith(str(path)) else f"{path}: {text}")
        except Exception as e:
            logging.getLogger(__name__).info("details of the internal error:", exc_info=True)
            self.internal += 1
            first = str(e).splitlines()[0] if str(e) else ""
            self.skip(f"{path}: {INTERNAL_ERROR} ({type(e).__name__}: {first[:200]})")

    def skip(self, message: str) -> None:
        from tqdm.auto import tqdm

        self.skipped.append(message)
        tqdm.write(f"langseg: skipped {message}", file=sys.stderr)

    def summary(self, verb: str, seconds: float, out: Path) -> int:
        """Print the totals (summed over all processes, by rank 0 alone) and return the exit status,
        the same on every rank. Each process reported its own skipped inputs as they happened."""
        from ..distributed import all_reduce, world

        done, kept, skipped = self.done, self.kept, len(self.skipped)
        rank, size = world()
        if size > 1:
            import torch

            totals = all_reduce(torch.tensor([done, kept, skipped], dtype=torch.int64))
            done, kept, skipped = (int(v) for v in totals)
            if rank != 0:
                return 1 if skipped else 0
        rate = done / seconds if seconds > 0 else 0.0
        processes = f" on {size} processes" if size > 1 else ""
        print(
            f"{verb} {done} image{'s' if done != 1 else ''} in {seconds:.1f} s "
            f"({rate:.2f} images/s{processes}) -> {out}"
        )
        if kept:
            print(f"kept {kept} already done (--skip-existing)")
        if skipped:
            print(f"skipped {skipped} input{'s' if skipped != 1 else ''}:", file=sys.stderr)
            for message in self.skipped[:20]:
                print(f"  {message}", file=sys.stderr)
            if len(self.skipped) > 20:
                print(f"  ... and {len(self.skipped) - 20} more", file=sys.stderr)
            if skipped > len(self.skipped):
                print(
                    f"  ({skipped - len(self.skipped)} reported above by the other processes)",
                    file=sys.stderr,
                )
        if self.internal:
            from ..cli import EXIT_INTERNAL

            return EXIT_INTERNAL
        return 1 if skipped else 0


def progress(total: int, unit: str = "img"):
    """A progress bar on stderr (rank 0 only, for its own share, when several processes run)."""
    from tqdm.auto import tqdm

    from ..distributed import world

    disable = None if world()[0] == 0 else True
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True)
