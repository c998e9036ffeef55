"""``langseg data``: dataset utilities (the procedurally generated toy dataset and toy 3D scene)."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 45


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="dataset utilities (toy dataset and toy RGB-D scene generators)",
        description="Dataset utilities.",
        epilog="examples:\n  langseg data toy --out data/toy --n-train 2000 --n-val 100\n"
        "  langseg data toy-scene --out data/toy_scene",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    _register_toy(actions)
    _register_example(actions)
    _register_toy_scene(actions)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _register_toy(actions: argparse._SubParsersAction) -> None:
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


def _register_example(actions: argparse._SubParsersAction) -> None:
    example = actions.add_parser(
        "example",
        help="write the quick-start example image (examples/toy_scene.png)",
        description="Write the README's example picture, toy validation scene 60 (a red circle, a blue "
        "square and a yellow diamond), as OUT/toy_scene.png: the same pixels as examples/ in the source "
        "tree. For installs without a checkout (a wheel), so that the README's first command runs as "
        "written. Its ground truth is not written there, so that segmenting the folder segments photos only.",
        epilog='example:\n  langseg data example && langseg segment examples/toy_scene.png --labels "background,'
        'red circle,blue square,green triangle,yellow diamond"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    example.add_argument("--out", type=Path, default=Path("examples"), help="folder (default: examples)")
    example.add_argument("--overwrite", action="store_true", help="replace existing files")
    example.set_defaults(func=run_example)


def _register_toy_scene(actions: argparse._SubParsersAction) -> None:
    scene = actions.add_parser(
        "toy-scene",
        help="render an RGB-D sequence of a toy room (exact depth, poses, ground truth)",
        description="Render a small room whose walls and floor carry the toy dataset's shapes, seen by a "
        "camera going once around a loop, with a panel that hides parts of a wall from some frames. "
        "Writes colour, depth (16-bit PNG), poses, intrinsics, per-frame label images, the ground-truth "
        "point cloud (points.ply, gt_labels.npy), labels.txt and scene.json. Layouts: generic (color/, "
        "depth/ in mm, pose/, intrinsics.txt), scannet (as exported for OpenScene: jpg colour, depth at half "
        "size in mm, intrinsic/intrinsic_{color,depth}.txt) and replica (as processed by OpenScene: depth "
        "scale 6553.5). The same command always writes the same files.",
        epilog="examples:\n  langseg data toy-scene --out data/toy_scene\n"
        "  langseg data toy-scene --out data/toy_scene_tum --pose trajectory\n"
        "  langseg data toy-scene --out data/toy_scannet --layout scannet --size 320x240 --frames 40",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scene.add_argument("--out", type=Path, required=True, help="output folder (must be empty or new)")
    scene.add_argument("--frames", type=int, default=24, help="frames around the loop (default 24)")
    scene.add_argument("--size", default="160x120", help="colour image size WxH (default 160x120)")
    scene.add_argument("--seed", type=int, default=0, help="texture seed (default 0)")
    scene.add_argument(
        "--layout",
        choices=("generic", "scannet", "replica"),
        default="generic",
        help="file layout (default generic)",
    )
    scene.add_argument(
        "--pose",
        choices=("c2w", "w2c", "trajectory"),
        default="c2w",
        help="pose files: camera-to-world or world-to-camera 4x4 per frame, or one trajectory.txt of "
        "'x y z qx qy qz qw' rows (default c2w)",
    )
    scene.add_argument("--no-occluder", action="store_true", help="leave the occluding panel out")
    scene.add_argument("--no-labels", action="store_true", help="do not write per-frame label images")
    scene.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    scene.set_defaults(func=run_toy_scene)


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
    from ..data.toy import ToyConfig, ToySegmentation
    from ..files import write_image

    split, index, size = EXAMPLE_SCENE
    scene = ToySegmentation(index + 1, split, ToyConfig(size=size))[index]
    image = write_image(args.out / "toy_scene.png", scene.image, overwrite=args.overwrite)
    print(f"wrote {image} (labels: background, red circle, blue square, green triangle, yellow diamond)")


def _size(text: str) -> tuple[int, int]:
    from ..errors import LangsegError

    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise LangsegError(f"--size must be WIDTHxHEIGHT, for example 160x120; got {text!r}") from None
    return w, h


def run_toy_scene(args: argparse.Namespace) -> int:
    import time

    from ..data.toy_scene import render_toy_scene

    start = time.perf_counter()
    scene = render_toy_scene(
        args.out,
        frames=args.frames,
        size=_size(args.size),
        seed=args.seed,
        layout=args.layout,
        pose=args.pose,
        occluder=not args.no_occluder,
        overwrite=args.overwrite,
        write_labels=not args.no_labels,
        progress=True,
    )
    w, h = scene.size
    print(
        f"wrote {len(scene.poses_c2w)} frames ({w}x{h}, {args.layout} layout, {args.pose} poses) and "
        f"{len(scene.points)} ground-truth points to {scene.root} in {time.perf_counter() - start:.1f} s"
    )
    print(f"labels: {', '.join(scene.labels)}")
    return 0
