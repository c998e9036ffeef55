"""``langseg scene``: open-vocabulary 3D maps from RGB-D sequences.

``scene fuse SCENE... --out DIR`` streams each scene's frames through the network and fuses the
per-pixel features onto 3D points (a given point cloud, or voxels of the depth frames);
``scene query DIR --labels ...`` labels the points of a fused map with words.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .common import (
    add_model_arguments,
    check_common_options,
    join_ranks,
    open_session,
    positive_int,
    progress,
    resolution_arg,
)

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
    g = p.add_argument_group("runs")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=50,
        metavar="N",
        help="save the sums every N frames, so --resume can continue (0: never; default: 50)",
    )
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.set_defaults(func=run_fuse)


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
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: auto)")
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


# ------------------------------------------------------------------------------------ fuse
def run_fuse(args: argparse.Namespace) -> int:
    from ..errors import LangsegError
    from ..scenes import FuseConfig, open_scene

    check_common_options(args)
    if args.resume and args.overwrite:
        raise LangsegError("--resume and --overwrite contradict each other; pass one")
    if args.no_depth and args.points is None:
        raise LangsegError(
            "--no-depth needs --points FILE (without depth there is nothing to make points from)"
        )
    if args.out.exists() and not args.out.is_dir():
        raise LangsegError(f"--out {args.out} is a file; give a folder")
    try:
        config = FuseConfig(
            resolution=args.resolution,
            margin=args.margin,
            occlusion=not (args.no_occlusion or args.no_depth),
            tolerance=args.depth_tolerance[0],
            relative=args.depth_tolerance[1],
            weighting=args.weighting,
            voxel_size=args.voxel_size,
            depth_stride=args.depth_stride,
            max_depth=args.max_depth,
            checkpoint_every=max(args.checkpoint_every, 0),
        )
    except ValueError as e:
        raise LangsegError(str(e)) from None
    scenes = [
        open_scene(
            s,
            layout=args.layout,
            pose=args.pose,
            depth_scale=args.depth_scale,
            every=args.every,
            trajectory=args.trajectory,
            use_depth=not args.no_depth,
        )
        for s in args.scenes
    ]
    outs = _map_folders(args.out, scenes)
    place = join_ranks(args)  # torchrun, or srun with --distributed; a single process otherwise
    rank, world = place.rank, place.world_size
    try:
        todo = [(s, o) for s, o in zip(scenes, outs) if not _done_or_clash(args, o)]
        if world > 1:
            from ..distributed import barrier

            barrier()  # every rank has looked at the outputs before any rank writes one
        if len(todo) < len(scenes) and rank == 0:
            kept = len(scenes) - len(todo)
            print(f"kept {kept} map{'s' if kept != 1 else ''} already done (--skip-existing)")
        share_frames = len(todo) <= 1
        mine = todo if share_frames else [todo[i] for i in range(rank, len(todo), world)]
        session = open_session(args, templates=None)
        config.batch_size = (
            args.batch_size if (args.batch_size and session.predictor.multi_scale is None) else 1
        )
        failed = 0
        for scene, out in mine:
            result = _fuse_one(
                args, session, scene, out, config, rank if share_frames else 0, world if share_frames else 1
            )
            failed += not result
        return 1 if failed else 0
    finally:
        if world > 1:
            from ..distributed import close_distributed

            close_distributed()


def _map_folders(out: Path, scenes: list) -> list[Path]:
    from ..errors import LangsegError

    if len(scenes) == 1:
        return [out]
    names = [s.name for s in scenes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise LangsegError(
            f"two scenes are named {sorted(dup)[0]!r}; their maps would share a folder in {out}"
        )
    return [out / n for n in names]


def _done_or_clash(args: argparse.Namespace, out: Path) -> bool:
    """True when ``out`` is complete and --skip-existing keeps it; raises when outputs would be replaced."""
    from ..errors import LangsegError
    from ..outputs import existing
    from ..scenes.fusion import CHECKPOINT_DIR
    from ..scenes.maps import OUTPUT_NAMES, RECORD_NAME

    if args.skip_existing and (out / RECORD_NAME).is_file():
        return True
    clash = existing([out / n for n in OUTPUT_NAMES])
    if clash and not args.overwrite:
        raise LangsegError(
            f"output files exist: {clash}; pass --overwrite to replace them or --skip-existing to keep them"
        )
    if (out / CHECKPOINT_DIR).is_dir() and not (args.resume or args.overwrite):
        raise LangsegError(
            f"{out / CHECKPOINT_DIR} holds the checkpoint of an interrupted run; pass --resume to "
            "continue it or --overwrite to start again"
        )
    return False


def _fuse_one(args, session, scene, out: Path, config, rank: int, world: int) -> bool:
    """Points, fusion, sanity check and files of one scene; returns whether the sanity check passed."""
    import shutil

    from .. import __version__
    from ..scenes import fuse, load_points, sanity, scene_points, write_map
    from ..scenes.fusion import CHECKPOINT_DIR, fingerprint
    from ..scenes.maps import estimate_up

    predictor = session.predictor
    start = time.perf_counter()
    show = rank == 0
    if args.points is not None:
        local = scene.root / args.points
        path = local if local.is_file() else Path(args.points)
        cloud = load_points(path)
        source = {"source": "file", "path": str(path)}
    else:
        with _bar(len(scene.frames), f"{scene.name}: points", show) as bar:
            cloud = scene_points(
                scene, config, predictor.device, max_pixels=args.max_pixels, progress=bar.update
            )
        source = {
            "source": "depth voxels",
            "voxel_size": config.voxel_size,
            "depth_stride": config.depth_stride,
            "max_depth": config.max_depth,
        }
    points_s = time.perf_counter() - start
    key = fingerprint(scene, cloud, config, session.weights.get("sha256"), session.protocol)
    ckpt_dir = out / CHECKPOINT_DIR if config.checkpoint_every else None
    if ckpt_dir is not None and args.overwrite and not args.resume and ckpt_dir.is_dir():
        _barrier_then(rank == 0, lambda: shutil.rmtree(ckpt_dir, ignore_errors=True), world > 1)
    with _bar(len(scene.frames), f"{scene.name}: frames", show) as bar:
        fused = fuse(
            scene,
            predictor,
            cloud,
            config,
            rank=rank,
            world_size=world,
            checkpoint_dir=ckpt_dir,
            resume=args.resume,
            key=key,
            max_pixels=args.max_pixels,
            progress=bar.update,
        )
    check = sanity(fused)
    seconds = time.perf_counter() - start
    if rank == 0:
        record = _record(args, session, scene, fused, config, source, check, seconds, points_s, world)
        record["up"] = estimate_up([f.T_world_cam for f in scene.frames])
        record["langseg_version"] = __version__
        write_map(out, fused, record, overwrite=args.overwrite or args.resume)
        if ckpt_dir is not None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)  # the map is complete
        _summary(scene, fused, check, seconds, out)
    return bool(check["ok"])


def _barrier_then(act: bool, fn, wait: bool) -> None:
    """``fn()`` on one rank; with ``wait``, the ranks sharing this scene wait for it."""
    from ..distributed import barrier

    if act:
        fn()
    if wait:
        barrier()


def _bar(total: int, desc: str, show: bool):
    bar = progress(total, unit="frame")
    bar.set_description(desc)
    if not show:
        bar.disable = True
    return bar


def _record(args, session, scene, fused, config, source, check, seconds, points_s, world) -> dict[str, Any]:
    from dataclasses import asdict

    n = len(fused.xyz)
    n_seen = int(fused.seen.sum())
    timing = fused.stats.get("timing_rank0", {})
    frames = len(scene.frames)
    fusion = asdict(config)
    fusion["resolution"] = (
        config.resolution if isinstance(config.resolution, str) else "{}x{}".format(*config.resolution)
    )
    fusion["depth_test"] = (
        "off"
        if not config.occlusion
        else (f"|d - z| <= {config.tolerance} * d" if config.relative else f"|d - z| <= {config.tolerance} m")
    )
    return {
        "format": "langseg-scene-v1",
        "scene": {
            "root": str(scene.root.resolve()),
            "name": scene.name,
            "layout": scene.layout,
            "pose": scene.pose,
            "pose_internal": "camera-to-world, OpenCV camera (x right, y down, z forward), metres",
            "depth_scale": scene.depth_scale,
            "color_size": list(scene.color_size),
            "depth_size": list(scene.depth_size) if scene.depth_size else None,
            "frames_found": scene.total_frames,
            "every": args.every,
            "frames_used": frames,
            "frames_skipped_nonfinite_pose": len(scene.skipped_poses),
            "skipped_stems": scene.skipped_poses[:50],
        },
        "points": {**source, "count": n, "seen": n_seen},
        "fusion": fusion,
        "weights": session.weights,
        "preprocessing": session.protocol,
        "embed_dim": int(fused.features.shape[1]),
        "sanity": check,
        "distributed": {"world_size": world},
        "timing": {
            "total_s": round(seconds, 3),
            "points_s": round(points_s, 3),
            "frames_per_s": round(frames / seconds, 3) if seconds > 0 else None,
            **timing,
        },
        "outputs": {
            "features": "features.safetensors",
            "openscene": "openscene.pt",
            "pca": "features_pca.ply",
        },
    }


def _summary(scene, fused, check, seconds: float, out: Path) -> None:
    n = len(fused.xyz)
    seen = int(fused.seen.sum())
    frames = len(scene.frames)
    print(
        f"fused {frames} frame{'s' if frames != 1 else ''} of {scene.name} onto {n} points "
        f"({seen / max(n, 1):.0%} seen, {check['multi_view_fraction']:.0%} by several frames"
        + (
            f", {check['depth_agreement']:.0%} depth agreement"
            if check["depth_agreement"] is not None
            else ""
        )
        + ") "
        f"in {seconds:.1f} s ({frames / max(seconds, 1e-9):.2f} frames/s) -> {out}"
    )
    if scene.skipped_poses:
        print(f"skipped {len(scene.skipped_poses)} frames with non-finite poses", file=sys.stderr)
    if not check["ok"]:
        print(f"langseg: sanity check failed: {check['message']}", file=sys.stderr)


# ------------------------------------------------------------------------------------ query
def run_query(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import LangsegError
    from ..files import write_array, write_image, write_json
    from ..labels import check_prompt_lengths, parse_labels, parse_templates, read_labels_file
    from ..outputs import existing
    from ..predictor import resolve_device
    from ..scenes import Scene, write_ply
    from ..scenes.maps import heat_colors, label_colors, topdown
    from ..visualize import palette
    from ..weights import load_model, resolve_weights

    classes = read_labels_file(args.labels_file) if args.labels_file else parse_labels(args.labels)
    templates = parse_templates(args.template)
    check_prompt_lengths(classes, templates)
    scene = Scene.load(args.map)
    out = args.out or args.map / "query"
    heat_names = {
        h: "heat_" + "".join(c if c.isalnum() else "_" for c in h.strip()) + ".ply" for h in args.heatmap
    }
    files = [out / n for n in ("labels.ply", "labels.npy", "query.json", "topdown.png", *heat_names.values())]
    clash = existing(files)
    if clash and not args.overwrite:
        raise LangsegError(f"output files exist: {clash}; pass --overwrite to replace them")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise LangsegError(str(e)) from None
    model = load_model(resolve_weights(args.weights or scene.weights()), device=device)
    result = scene.query(classes, model=model, templates=templates)
    heats = {h: result.heat(h) for h in args.heatmap}  # unknown labels fail before any file is written
    names = result.label_names
    write_ply(
        out / "labels.ply",
        scene.xyz,
        label_colors(result.labels, len(names)),
        scalars={"label": result.labels.astype(np.int32)},
        overwrite=args.overwrite,
    )
    write_array(out / "labels.npy", result.labels.astype(np.int32), "npy", overwrite=args.overwrite)
    for h, values in heats.items():
        write_ply(
            out / heat_names[h],
            scene.xyz,
            heat_colors(values, scene.seen),
            scalars={"score": values.astype(np.float32)},
            overwrite=args.overwrite,
        )
    up = args.up or scene.up_axis()
    cell = (scene.record.get("points") or {}).get("voxel_size")  # None for a given point cloud
    picture = topdown(scene.xyz, result.labels, names, up=up, size=args.topdown_size, cell=cell)
    write_image(out / "topdown.png", picture, overwrite=args.overwrite)
    shares = result.shares()
    colors = palette(len(names))
    counts = np.bincount(result.labels[result.labels >= 0], minlength=len(names))
    record = {
        "map": str(args.map),
        "points": int(len(scene.xyz)),
        "seen": int(scene.seen.sum()),
        "labels": [
            {
                "index": i,
                "name": names[i],
                "synonyms": list(classes[i]),
                "points": int(counts[i]),
                "share": shares[names[i]],
                "color": [int(c) for c in colors[i]],
            }
            for i in range(len(names))
        ],
        "templates": templates,
        "up": up,
        "weights": args.weights or scene.weights(),
        "outputs": {
            "labels_ply": "labels.ply",
            "labels": "labels.npy",
            "topdown": "topdown.png",
            "heatmaps": heat_names,
        },
    }
    write_json(out / "query.json", record, overwrite=args.overwrite)
    top = sorted(((s, n) for n, s in shares.items()), reverse=True)[:5]
    print(
        f"labelled {record['seen']} of {record['points']} points of {args.map}: "
        + ", ".join(f"{n} {s:.0%}" for s, n in top)
        + f" -> {out}"
    )
    return 0
