"""``langseg convert``: an official lang-seg checkpoint -> our safetensors format."""

from __future__ import annotations

import argparse
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
        help="store floating-point weights in this dtype (default: as in the file)",
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
    from ..models.checkpoint import convert_official

    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise LangsegError(f"{args.out} exists and is not empty; pass --overwrite to replace it")
    overrides = {}
    if args.arch_option is not None:
        overrides["arch_option"] = args.arch_option
    if args.block_depth is not None:
        overrides["block_depth"] = args.block_depth
    dtype = getattr(torch, args.dtype) if args.dtype else None
    out = convert_official(
        args.checkpoint,
        args.out,
        drop_unused=args.drop_unused,
        dtype=dtype,
        overwrite=args.overwrite,
        **overrides,
    )
    print(f"wrote {out}")
    return 0
