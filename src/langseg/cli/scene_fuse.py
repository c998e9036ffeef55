"""``langseg scene fuse``: stream each scene's frames through the network and fuse the per-pixel
features onto 3D points (a given point cloud, or voxels of the depth frames); one map per scene."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .plan import check_common_options
from .report import progress
from .session import joined_ranks, open_session


def run_fuse(args: argparse.Namespace) -> int:
    from ..scenes import open_scene

    config = _fuse_config(args)
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
    with joined_ranks(args) as place:  # torchrun, or srun with --distributed; a single process otherwise
        return _fuse_all(args, config, scenes, outs, place.rank, place.world_size)


def _fuse_config(args: argparse.Namespace):
    """The fusion settings, after the checks of the options that contradict each other."""
    from ..errors import LangsegError
    from ..scenes import FuseConfig

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
        return FuseConfig(
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


def _fuse_all(args: argparse.Namespace, config, scenes: list, outs: list[Path], rank: int, world: int) -> int:
    """The maps still to make: the frames of a single scene shared between the processes, or the
    scenes themselves when there are several. Exit status 1 when a map failed its sanity check."""
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
    config.batch_size = args.batch_size if (args.batch_size and session.predictor.multi_scale is None) else 1
    part = (rank, world) if share_frames else (0, 1)
    failed = sum(not _fuse_one(args, session, scene, out, config, *part) for scene, out in mine)
    return 1 if failed else 0


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
    from ..scenes import fuse, sanity, write_map
    from ..scenes.fusion import CHECKPOINT_DIR, fingerprint
    from ..scenes.maps import estimate_up

    predictor = session.predictor
    start = time.perf_counter()
    cloud, source = _points(args, scene, config, predictor.device, show=rank == 0)
    points_s = time.perf_counter() - start
    key = fingerprint(scene, cloud, config, session.weights.get("sha256"), session.protocol)
    ckpt_dir = out / CHECKPOINT_DIR if config.checkpoint_every else None
    if ckpt_dir is not None and args.overwrite and not args.resume and ckpt_dir.is_dir():
        _barrier_then(rank == 0, lambda: shutil.rmtree(ckpt_dir, ignore_errors=True), world > 1)
    with _bar(len(scene.frames), f"{scene.name}: frames", rank == 0) as bar:
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


def _points(args, scene, config, device, show: bool) -> tuple[Any, dict[str, Any]]:
    """The scene's points (``--points``, or voxels of its depth frames) and where they came from."""
    from ..scenes import load_points, scene_points

    if args.points is not None:
        local = scene.root / args.points
        path = local if local.is_file() else Path(args.points)
        return load_points(path), {"source": "file", "path": str(path)}
    with _bar(len(scene.frames), f"{scene.name}: points", show) as bar:
        cloud = scene_points(scene, config, device, max_pixels=args.max_pixels, progress=bar.update)
    source = {
        "source": "depth voxels",
        "voxel_size": config.voxel_size,
        "depth_stride": config.depth_stride,
        "max_depth": config.max_depth,
    }
    return cloud, source


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
    n = len(fused.xyz)
    n_seen = int(fused.seen.sum())
    timing = fused.stats.get("timing_rank0", {})
    frames = len(scene.frames)
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
        "fusion": _fusion_record(config),
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


def _fusion_record(config) -> dict[str, Any]:
    from dataclasses import asdict

    fusion = asdict(config)
    fusion["resolution"] = (
        config.resolution if isinstance(config.resolution, str) else "{}x{}".format(*config.resolution)
    )
    fusion["depth_test"] = (
        "off"
        if not config.occlusion
        else (f"|d - z| <= {config.tolerance} * d" if config.relative else f"|d - z| <= {config.tolerance} m")
    )
    return fusion


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
