"""``langseg data``: dataset utilities (the procedurally generated toy dataset)."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 45


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="dataset utilities (toy dataset generator)",
        description="Dataset utilities.",
        epilog="example:\n  langseg data toy --out data/toy --n-train 2000 --n-val 100",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    toy = actions.add_parser(
        "toy",
        help="write the procedurally generated toy dataset (generic layout)",
        description="Write scenes of coloured shapes on textured backgrounds, each class named by words "
        "(background, red circle, blue square, green triangle, yellow diamond), in the generic layout: "
        "labels.txt, images/{train,val}/*.png, masks/{train,val}/*.png (values = label indices). "
        "Scenes are a function of --seed: the same command always writes the same files.",
        epilog="examples:\n  langseg data toy --out data/toy\n"
        "  langseg data toy --out data/toy_big --n-train 10000 --n-val 500 --size 128\n"
        "  langseg train --config configs/toy.yaml data.datasets.0.kind=generic data.datasets.0.root=data/toy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    toy.add_argument("--out", type=Path, required=True, help="output folder (must be empty or new)")
    toy.add_argument("--n-train", type=int, default=2000, help="training scenes (default 2000)")
    toy.add_argument("--n-val", type=int, default=100, help="validation scenes (default 100)")
    toy.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    toy.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    toy.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    toy.set_defaults(func=run_toy)
    example = actions.add_parser(
        "example",
        help="write the quick-start example image (examples/toy_scene.png) and its mask",
        description="Write the README's example picture, toy validation scene 60 (a red circle, a blue "
        "square and a yellow diamond), and its ground-truth mask: OUT/toy_scene.png and "
        "OUT/toy_scene_mask.png, the same pixels as examples/ in the source tree. For installs without a "
        "checkout (a wheel), so that the README's first command runs as written.",
        epilog='example:\n  langseg data example && langseg segment examples/toy_scene.png --labels "background,'
        'red circle,blue square,green triangle,yellow diamond"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    example.add_argument("--out", type=Path, default=Path("examples"), help="folder (default: examples)")
    example.add_argument("--overwrite", action="store_true", help="replace existing files")
    example.set_defaults(func=run_example)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_toy(args: argparse.Namespace) -> int:
    from ..data.toy import TOY_LABELS, ToyConfig, write_toy_dataset
    from ..errors import LangsegError

    try:
        cfg = ToyConfig(size=args.size, seed=args.seed)
    except ValueError as e:
        raise LangsegError(str(e)) from None
    out = write_toy_dataset(args.out, args.n_train, args.n_val, cfg, overwrite=args.overwrite)
    print(f"wrote {args.n_train} train + {args.n_val} val scenes to {out}")
    print(f"labels: {', '.join(TOY_LABELS)}")
    return 0


EXAMPLE_SCENE = ("val", 60, 96)  # split, index, size of examples/toy_scene.png


def run_example(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..data.toy import ToyConfig, ToySegmentation
    from ..outputs import write_image

    split, index, size = EXAMPLE_SCENE
    scene = ToySegmentation(index + 1, split, ToyConfig(size=size))[index]
    image = write_image(args.out / "toy_scene.png", scene.image, overwrite=args.overwrite)
    mask = Image.fromarray(scene.mask.astype("uint8"), "L")
    write_image(args.out / "toy_scene_mask.png", mask, overwrite=args.overwrite)
    print(
        f"wrote {image} and its mask (labels: background, red circle, blue square, green triangle, yellow diamond)"
    )
    return 0
