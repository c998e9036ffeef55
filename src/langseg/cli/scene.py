"""``langseg scene``: open-vocabulary 3D maps from RGB-D sequences.

``scene fuse SCENE... --out DIR`` streams each scene's frames through the network and fuses the
per-pixel features onto 3D points (a given point cloud, or voxels of the depth frames);
``scene query DIR --labels ...`` labels the points of a fused map with words.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import add_device_argument, add_model_arguments, positive_int, resolution_arg
from .scene_fuse import run_fuse
from .scene_query import run_query

ORDER = 25

FUSE_EPILOG = """examples:
  langseg data toy-scene --out toy_scene
  langseg scene fuse toy_scene --out toy_map
  langseg scene fuse scannet/scene0000_00 --out maps/scene0000_00 --weights lseg-demo-vitl16 --voxel-size 0.02
  langseg scene fuse replica/room0 --layout replica --points replica/room0.ply --out maps/room0
  langseg scene fuse vlmaps_seq --trajectory poses.txt --pose c2w --every 5 --out maps/seq
  torchrun --nproc-per-node 4 -m langseg scene fuse scans/scene0000_00 --out maps/scene0000_00
  torchrun --nproc-per-node 4 -m langseg scene fuse scans/* --out maps/ --preset openscene

pose convention (never guessed): --pose c2w reads camera-to-world matrices (ScanNet, Replica, the
generic layout), --pose w2c world-to-camera (extrinsics). Cameras are OpenCV: x right, y down, z forward.

exit status: 0 done, 1 a map failed its sanity check (most points unseen: check --pose and
--depth-scale), 2 bad options, scene files or weights.
"""

QUERY_EPILOG = """examples:
  langseg scene query toy_map --labels "red circle,blue square,green triangle,yellow diamond,background"
  langseg scene query maps/scene0000_00 --labels "chair;seat,table;desk,floor,wall,other" --heatmap chair

writes (into --out, default DIR/query): labels.ply (points coloured by label), labels.npy ((N,) int32,
-1 = never seen), query.json (labels, synonyms, colours, shares of the seen points), topdown.png (each
cell: the label of its highest point, with a legend), heat_<label>.ply for each --heatmap.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scene",
        help="open-vocabulary 3D maps: fuse RGB-D frames onto points, query them with words",
        description="Fuse per-pixel features of RGB-D frames onto 3D points, then label the points with words.",
    )
    actions = p.add_subparsers(dest="scene_action", metavar="ACTION")
    _register_fuse(actions)
    _register_query(actions)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _register_fuse(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "fuse",
        help="fuse the features of RGB-D sequences onto 3D points (one map per scene)",
        description="For every frame: features from the network (any protocol: single scale, --flip, "
        "--multi-scale, --sliding-window), the points the frame sees (in front, inside the frame with "
        "--margin, passing the depth test) take the feature under their pixel; features are averaged "
        "per point in one streaming pass. Writes features.safetensors, scene.json, openscene.pt and "
        "features_pca.ply into --out (one sub-folder per scene when several are given).",
        epilog=FUSE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenes",
        nargs="+",
        metavar="SCENE",
        help="scene folders: color/, depth/, pose/ (or a trajectory file) and intrinsics",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="map folder (one sub-folder per scene when several)"
    )
    add_model_arguments(p)
    _add_scene_options(p)
    _add_points_options(p)
    _add_fusion_options(p)
    _add_run_options(p)
    p.set_defaults(func=run_fuse)


def _add_scene_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scene input")
    g.add_argument(
        "--layout",
        choices=["auto", "generic", "scannet", "replica"],
        default="auto",
        help="file layout (default: auto = scannet when intrinsic/intrinsic_color.txt exists, else "
        "generic; replica must be named, it differs only in its depth scale)",
    )
    g.add_argument(
        "--pose",
        choices=["c2w", "w2c"],
        default="c2w",
        help="how the pose files are written: camera-to-world (ScanNet, Replica, TUM, VLMaps) or "
        "world-to-camera (default: c2w)",
    )
    g.add_argument(
        "--trajectory",
        default=None,
        metavar="FILE",
        help="poses as 'x y z qx qy qz qw' rows, one per frame in frame order (default: pose/ if "
        "present, else trajectory.txt in the scene folder)",
    )
    g.add_argument(
        "--depth-scale",
        type=float,
        default=None,
        metavar="S",
        help="raw depth units per metre (default: 1000 = millimetres; 6553.5 with --layout replica)",
    )
    g.add_argument(
        "--every", type=positive_int, default=1, metavar="N", help="use every N-th frame (default: 1)"
    )
    g.add_argument(
        "--no-depth",
        action="store_true",
        help="ignore depth frames: no depth test (noisier; needs --points)",
    )


def _add_points_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("points")
    g.add_argument(
        "--points",
        default=None,
        metavar="FILE",
        help="fuse onto this point cloud (.ply, or .npy/.pt holding (N, 3) xyz; a relative name is "
        "looked up in each scene folder first) instead of voxels of the depth frames",
    )
    g.add_argument(
        "--voxel-size", type=float, default=0.05, metavar="M", help="voxel side in metres (default: 0.05)"
    )
    g.add_argument(
        "--depth-stride",
        type=positive_int,
        default=1,
        metavar="N",
        help="back-project every N-th depth pixel in each direction (default: 1)",
    )
    g.add_argument(
        "--max-depth", type=float, default=None, metavar="M", help="do not back-project depth beyond M metres"
    )


def _add_fusion_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fusion")
    g.add_argument(
        "--resolution",
        type=resolution_arg,
        default=None,
        metavar="half|full|WxH",
        help="feature map the points sample (default: half, the network's own output, or the --preset's)",
    )
    g.add_argument(
        "--margin",
        type=int,
        default=0,
        metavar="PX",
        help="ignore points within PX pixels of the colour frame's border (default: 0)",
    )
    g.add_argument(
        "--depth-tolerance",
        type=_tolerance_arg,
        default=(0.25, True),
        metavar="T|Tm",
        help="depth test: |depth - z| <= T * depth, or <= T metres with an 'm' suffix (default: 0.25, "
        "as OpenScene)",
    )
    g.add_argument(
        "--no-occlusion", action="store_true", help="no depth test: every point in the frustum counts"
    )
    g.add_argument(
        "--weighting",
        choices=["mean", "distance"],
        default="mean",
        help="mean of the views, or weighted by 1/depth (closer views count more) (default: mean)",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runs")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=50,
        metavar="N",
        help="save the sums every N frames, so --resume can continue (0: never; default: 50)",
    )
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")


def _register_query(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "query",
        help="label the points of a fused map with words (PLY, JSON shares, top-down picture)",
        description="Score every point of a map written by 'scene fuse' against the labels (cosine "
        "similarity to their text embeddings) and write the labelled map.",
        epilog=QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("map", type=Path, metavar="DIR", help="a folder written by 'langseg scene fuse'")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--labels",
        "-l",
        metavar="LABELS",
        help='comma-separated labels, ";" between synonyms: "chair;seat,floor"',
    )
    group.add_argument("--labels-file", type=Path, metavar="FILE", help="labels one per line")
    p.add_argument(
        "--template",
        action="append",
        default=None,
        metavar="TEXT",
        help='prompt template, e.g. "a photo of a {}."',
    )
    p.add_argument(
        "--heatmap",
        action="append",
        default=[],
        metavar="LABEL",
        help="also write heat_<LABEL>.ply: every point coloured by its similarity to LABEL (repeatable)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: DIR/query)")
    p.add_argument(
        "--up",
        default=None,
        metavar="AXIS",
        help="up axis of the top-down picture: x, y, z, -x, ... (default: as recorded)",
    )
    p.add_argument(
        "--topdown-size",
        type=positive_int,
        default=512,
        metavar="PX",
        help="long side of topdown.png (default: 512)",
    )
    p.add_argument(
        "--weights", default=None, metavar="NAME_OR_PATH", help="text tower (default: the map's own weights)"
    )
    add_device_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run_query)


def _tolerance_arg(text: str) -> tuple[float, bool]:
    absolute = text.strip().lower().endswith("m")
    try:
        value = float(text.strip()[:-1] if absolute else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number like 0.25 or 0.1m, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value, not absolute
