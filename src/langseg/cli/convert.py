"""``langseg convert``: an official lang-seg checkpoint -> our safetensors format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORDER = 50


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an official lang-seg .ckpt to langseg's safetensors folder",
        description="Convert an official lang-seg Lightning checkpoint (read safely, without running "
        "pickled code) into a folder with model.safetensors + config.json that loads without Lightning.",
        epilog="example:\n  langseg convert checkpoints/demo_e200.ckpt lseg-demo/ --drop-unused --dtype float16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="official .ckpt file")
    p.add_argument("out", type=Path, help="output folder (must not exist unless --overwrite)")
    p.add_argument(
        "--drop-unused",
        action="store_true",
        help="drop the never-run CLIP image tower and ViT classifier head (smaller, same outputs)",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="store all floating-point weights in this dtype (default: each tensor as in the file)",
    )
    p.add_argument(
        "--arch-option",
        type=int,
        choices=[1, 2],
        default=None,
        help="spatial block kind for checkpoints that have one (1 bottleneck, 2 depthwise)",
    )
    p.add_argument("--block-depth", type=int, default=None, help="spatial block depth (with --arch-option)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import LangsegError
    from ..hub import REGISTRY
    from ..models.checkpoint import CONFIG_NAME, convert_official

    src = args.checkpoint
    if src.is_dir() and (src / CONFIG_NAME).is_file():
        raise LangsegError(
            f"{src} is a langseg folder already (model.safetensors + config.json): use it as it is "
            "(--weights), there is nothing to convert"
        )
    if args.out.exists() and not args.out.is_dir():
        raise LangsegError(f"{args.out} is a file; the output must be a folder")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise LangsegError(f"{args.out} exists and is not empty; pass --overwrite to replace it")
    overrides: dict = {}
    known = next((e for e in REGISTRY.values() if e.filename == src.name), None)
    if known is not None:  # an official file under its own name: the settings the weights cannot tell
        overrides.update(known.overrides)
        print(
            f"{src.name}: the official file of {known.name}; its labels and settings come from the registry"
        )
    if args.arch_option is not None:
        overrides["arch_option"] = args.arch_option
    if args.block_depth is not None:
        overrides["block_depth"] = args.block_depth
    dtype = getattr(torch, args.dtype) if args.dtype else None
    out = convert_official(
        src,
        args.out,
        drop_unused=args.drop_unused,
        dtype=dtype,
        overwrite=args.overwrite,
        **overrides,
    )
    print(f"wrote {out}")
    if "labels" not in overrides:
        print(
            f"note: {src.name} stores no label list, so the converted model has none; "
            "give labels when you use it (langseg segment --labels ...)",
            file=sys.stderr,
        )
    return 0
