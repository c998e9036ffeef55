"""How a toy scene is stored: the file names and depth units of each layout, the camera files, the
ground truth and ``scene.json`` (:mod:`.toy_scene` renders the frames and describes the files)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .toy import TOY_LABELS
from .toy_room import (
    OCCLUDER_MAX,
    OCCLUDER_MIN,
    POINT_SPACING_M,
    ROOM_MAX,
    ROOM_MIN,
    intrinsics_for,
    quaternion_xyzw,
    trajectory,
)

LAYOUTS = ("generic", "scannet", "replica")
POSES = ("c2w", "w2c", "trajectory")
FORMAT_VERSION = 1
GENERATOR = "langseg data toy-scene"  # written into scene.json; ToyScene.load checks it


def matrix_text(rows) -> bytes:
    """Numbers as whitespace-separated text, one row per line, each float written exactly (``repr``)."""
    return "".join(" ".join(repr(float(x)) for x in row) + "\n" for row in np.atleast_2d(rows)).encode()


def _homogeneous(K: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = K
    return out


@dataclass(frozen=True)
class Cameras:
    """The frames of one layout: intrinsics, poses, image sizes, file names and depth units."""

    K: np.ndarray  # (3, 3) colour camera
    K_depth: np.ndarray  # (3, 3) depth camera
    size: tuple[int, int]  # colour (width, height)
    depth_size: tuple[int, int]  # depth (width, height)
    depth_scale: float  # stored value / depth_scale = metres
    poses: np.ndarray  # (F, 4, 4) camera-to-world
    stems: list[str]
    color_ext: str  # ".png" or ".jpg"

    @classmethod
    def for_layout(cls, layout: str, width: int, height: int, frames: int) -> Cameras:
        from ..scenes.layouts import DEPTH_SCALES  # the units the scene readers assume for each layout

        depth_size = (width // 2, height // 2) if layout == "scannet" else (width, height)
        return cls(
            K=intrinsics_for(width, height),
            K_depth=intrinsics_for(*depth_size),
            size=(width, height),
            depth_size=depth_size,
            depth_scale=DEPTH_SCALES[layout],
            poses=trajectory(frames),
            stems=[f"{k:06d}" if layout == "generic" else str(k) for k in range(frames)],
            color_ext=".png" if layout == "generic" else ".jpg",
        )


class SceneFiles:
    """Writes the files of a scene into ``out``, each atomically, and lists them in scene.json, written
    last by :meth:`finish`. With ``overwrite``, what an earlier toy scene there listed but this one does
    not write is removed (no other file is touched)."""

    def __init__(self, out: Path, overwrite: bool) -> None:
        self.out, self.overwrite = out, overwrite
        self.written: list[str] = []
        self.previous = self._listed_in(out / "scene.json") if overwrite else []

    @staticmethod
    def _listed_in(scene_json: Path) -> list[str]:
        """The files an earlier toy scene listed in its scene.json (none if it is not one)."""
        try:
            meta = json.loads(scene_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
            return []
        files = [Path(f) for f in meta.get("files", []) if isinstance(f, str)]
        return [str(f) for f in files if not f.is_absolute() and ".." not in f.parts]  # inside the folder

    def put(self, rel: str, writer, obj, **options) -> None:
        writer(self.out / rel, obj, overwrite=self.overwrite, **options)
        self.written.append(rel)

    def finish(self, meta: dict) -> dict:
        """Remove the earlier scene's leftovers, then write ``meta`` with the file list as scene.json."""
        from ..files import write_json

        meta["files"] = [*self.written, "scene.json"]
        for rel in set(self.previous) - set(meta["files"]):
            (self.out / rel).unlink(missing_ok=True)
            parent = (self.out / rel).parent
            if parent != self.out and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        write_json(self.out / "scene.json", meta, overwrite=self.overwrite)
        return meta


def write_cameras(files: SceneFiles, cams: Cameras, layout: str, pose: str) -> None:
    """The trajectory file (``pose="trajectory"``) and the intrinsics files of the layout."""
    from ..files import write_bytes

    if pose == "trajectory":
        rows = [[*c2w[:3, 3], *quaternion_xyzw(c2w[:3, :3])] for c2w in cams.poses]
        files.put("trajectory.txt", write_bytes, matrix_text(rows))
    if layout == "generic":
        files.put("intrinsics.txt", write_bytes, matrix_text(cams.K))
    elif layout == "replica":
        files.put("intrinsics.txt", write_bytes, matrix_text(_homogeneous(cams.K)))
    else:
        files.put("intrinsic/intrinsic_color.txt", write_bytes, matrix_text(_homogeneous(cams.K)))
        files.put("intrinsic/intrinsic_depth.txt", write_bytes, matrix_text(_homogeneous(cams.K_depth)))


def write_ground_truth(files: SceneFiles, candidates, seen: np.ndarray, hidden: np.ndarray):
    """Keep the surface points some frame sees and write them -> ``(points, labels, colours, occlusion
    counts)``; ``candidates`` are :func:`surface_points`' ``(xyz, normals, labels, colours)``."""
    from ..files import write_array, write_bytes
    from ..scenes.points import write_ply

    keep = seen > 0
    xyz, _, labels, colors = candidates
    points, labels, colors = xyz[keep], labels[keep].astype(np.int64), colors[keep]
    files.put("points.ply", write_ply, points, colors=colors)
    files.put("gt_labels.npy", write_array, labels, fmt="npy")
    files.put("labels.txt", write_bytes, ("\n".join(TOY_LABELS) + "\n").encode())
    occlusion = {
        "points_hidden_in_some_frame": int(((hidden > 0) & keep).sum()),
        "hidden_point_views": int(hidden[keep].sum()),
        "seen_point_views": int(seen[keep].sum()),
    }
    return points, labels, colors, occlusion


_POSE_CONVENTIONS = {
    "c2w": "pose/<stem>.txt: 4x4 camera-to-world",
    "w2c": "pose/<stem>.txt: 4x4 world-to-camera",
    "trajectory": "trajectory.txt: x y z qx qy qz qw per frame, camera-to-world, Hamilton, scalar last",
}


def scene_meta(cams: Cameras, layout, pose, seed, occluder, n_points, occlusion) -> dict:
    """The contents of scene.json, but for the list of files."""
    occ = {"min": OCCLUDER_MIN.tolist(), "max": OCCLUDER_MAX.tolist()} if occluder else None
    return {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "layout": layout,
        "pose": pose,
        "pose_convention": _POSE_CONVENTIONS[pose],
        "camera": "OpenCV: x right, y down, z forward; depth is z along the optical axis",
        "world": "metres, z up, floor at z = 0",
        "frames": len(cams.poses),
        "stems": cams.stems,
        "size": list(cams.size),
        "depth_size": list(cams.depth_size),
        "depth_scale": cams.depth_scale,
        "color_format": cams.color_ext[1:],
        "intrinsics": cams.K.tolist(),
        "depth_intrinsics": cams.K_depth.tolist(),
        "seed": int(seed),
        "labels": list(TOY_LABELS),
        "room": {"min": ROOM_MIN.tolist(), "max": ROOM_MAX.tolist()},
        "occluder": occ,
        "points": n_points,
        "point_spacing": POINT_SPACING_M,
        "occlusion": occlusion,
    }
