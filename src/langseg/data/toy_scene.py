"""A toy 3D scene: an RGB-D sequence of a small room papered with the toy dataset's shapes.

The room is a box (4 x 3 x 2.6 m, world frame in metres, z up, floor at z = 0, centred on x = y = 0).
Its four walls and its floor are tiled with toy scenes (:func:`langseg.data.toy.toy_scene`: coloured
shapes on textured backgrounds), so every texel has a ground-truth class from
:data:`langseg.data.toy.TOY_LABELS` (the classes the bundled ``lseg-toy`` model knows). The ceiling and
an optional occluder (a 1 m wide panel, an axis-aligned box from floor to ceiling) carry shape-free textures
of class ``background``. The panel stands between the camera path and a wall, so it hides parts of
that wall from some frames: fusing features without an occlusion test paints those wall points with
the panel's class.

A camera (OpenCV convention: x right, y down, z forward) goes once around a loop at about 1.3 m
height, looking outwards at the walls and pitched down so that the floor is seen too. Colour (2 x 2
supersampled), depth and per-pixel labels are exact: every pixel's ray is intersected analytically
with the room's rectangles (vectorised numpy, no rendering library). Depth is the z distance along
the optical axis (not the ray length). Pixel centres sit at integer coordinates, so the principal
point of a ``W x H`` image is ``((W - 1) / 2, (H - 1) / 2)``. Everything is a function of ``seed``.

The ground-truth point cloud samples the room's surfaces on a 5 cm grid and keeps the points that at
least one frame sees (inside the image, in front of the camera, not hidden); ``gt_labels.npy`` holds
their classes, and :meth:`ToyScene.labels_at` gives the class of any point within a few cm of a
surface (for scoring voxelised or back-projected points).

What each layout writes (``<s>`` = frame stem):

- ``generic`` (the default, what ``langseg scene fuse`` reads by default): ``color/<s>.png`` (RGB,
  8 bit), ``depth/<s>.png`` (16-bit PNG, millimetres, depth scale 1000, 0 = no depth),
  ``pose/<s>.txt`` (4 x 4, whitespace-separated), ``intrinsics.txt`` (3 x 3), stems ``000000``,
  ``000001``, ...
- ``scannet`` (ScanNet frames as exported for OpenScene): ``color/<i>.jpg`` at ``size``,
  ``depth/<i>.png`` (16-bit, millimetres) at half the colour size (rounded down), ``pose/<i>.txt``,
  ``intrinsic/intrinsic_color.txt`` and ``intrinsic/intrinsic_depth.txt`` (4 x 4 each, for their own
  image sizes), stems ``0``, ``1``, ...
- ``replica`` (Replica as processed by OpenScene): ``color/<i>.jpg``, ``depth/<i>.png`` (16-bit,
  depth scale 6553.5, i.e. value / 6553.5 = metres; same size as colour), ``pose/<i>.txt``,
  ``intrinsics.txt`` (4 x 4; OpenScene keeps this one file in the folder above the scenes),
  stems ``0``, ``1``, ...

Poses (every layout): ``pose="c2w"`` writes camera-to-world matrices in ``pose/``, ``pose="w2c"``
world-to-camera matrices, and ``pose="trajectory"`` writes no ``pose/`` folder but one
``trajectory.txt`` with a ``x y z qx qy qz qw`` row per frame (camera-to-world translation and Hamilton
unit quaternion, scalar last, ``qw >= 0``: the TUM convention).

Every layout also writes ``label/<s>.png`` (8 bit, class index per colour pixel; ``write_labels``),
``points.ply`` (the ground-truth point cloud: float32 ``x y z``, uint8 ``red green blue``),
``gt_labels.npy`` (``(N,)`` int64, aligned with ``points.ply``), ``labels.txt`` (one class per line)
and ``scene.json`` (layout, frames, stems, sizes, depth scale, intrinsics, pose convention, room and
occluder boxes, seed, and the list of files written).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DatasetError, check_output_folder
from .toy_room import POINT_SPACING_M, Face, render_frame, room_faces, surface_points, trajectory, visibility
from .toy_scene_files import (
    GENERATOR,
    LAYOUTS,
    POSES,
    Cameras,
    SceneFiles,
    matrix_text,
    scene_meta,
    write_cameras,
    write_ground_truth,
)

log = logging.getLogger(__name__)


@dataclass
class ToyScene:
    """A rendered toy scene: where it lies, its cameras and its ground truth (world frame, metres, z up).

    ``intrinsics`` belong to the colour images (``size``); ``depth_intrinsics`` to the depth images
    (``depth_size``; the same unless ``layout="scannet"``). ``poses_c2w`` are camera-to-world
    matrices of OpenCV cameras (x right, y down, z forward), whatever convention the files use.
    """

    root: Path
    labels: tuple[str, ...]  # TOY_LABELS
    intrinsics: np.ndarray  # (3, 3) colour camera
    poses_c2w: np.ndarray  # (F, 4, 4)
    points: np.ndarray  # (N, 3) float32 surface samples seen by at least one frame
    point_labels: np.ndarray  # (N,) int64 indices into labels
    point_colors: np.ndarray  # (N, 3) uint8
    depth_intrinsics: np.ndarray  # (3, 3)
    size: tuple[int, int] = (160, 120)  # colour (width, height)
    depth_size: tuple[int, int] = (160, 120)  # depth (width, height)
    depth_scale: float = 1000.0  # stored value / depth_scale = metres
    layout: str = "generic"
    pose: str = "c2w"
    seed: int = 0
    stems: tuple[str, ...] = ()
    occluder: tuple[tuple[float, ...], tuple[float, ...]] | None = (
        None  # (min xyz, max xyz) of the occluding panel
    )
    _faces: list[Face] = field(default_factory=list, repr=False)

    def labels_at(self, xyz: np.ndarray, tol: float = 0.05) -> np.ndarray:
        """Ground-truth class of ``(M, 3)`` world points -> ``(M,)`` int64; -1 (ignore) for points
        farther than ``tol`` metres from every surface. A point near several surfaces (a corner)
        takes the class of the nearest one."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        out = np.full(xyz.shape[0], -1, np.int64)
        best = np.full(xyz.shape[0], np.inf)
        for f in self._faces:
            off, s, t = f.coords(xyz)
            mu, mv = tol / np.linalg.norm(f.u), tol / np.linalg.norm(f.v)  # margins in texture units
            near = (np.abs(off) <= tol) & (np.abs(off) < best)
            near &= (s >= -mu) & (s <= 1 + mu) & (t >= -mv) & (t <= 1 + mv)
            if near.any():
                row, col = f.texel(s[near], t[near])
                out[near] = f.label[row, col]
                best[near] = np.abs(off[near])
        return out

    @classmethod
    def load(cls, root: str | Path) -> ToyScene:
        """A scene written by :func:`render_toy_scene`, read back (textures are regenerated from the seed)."""
        from ..scenes.points import load_points

        root = Path(root)
        try:
            meta = json.loads((root / "scene.json").read_text(encoding="utf-8"))
            cloud = load_points(root / "points.ply")
            labels = np.load(root / "gt_labels.npy", allow_pickle=False)
            if cloud.colors is None:
                raise ValueError("points.ply has no colours")
        except (OSError, ValueError, KeyError) as e:
            raise DatasetError(f"{root}: not a readable toy scene ({e})") from None
        if meta.get("generator") != GENERATOR:
            raise DatasetError(f"{root / 'scene.json'}: not written by {GENERATOR}")
        faces = room_faces(int(meta["seed"]), meta["occluder"] is not None)
        return cls._from_meta(root, meta, cloud.xyz, labels, cloud.colors, faces)

    @classmethod
    def _from_meta(cls, root: Path, meta: dict, points, point_labels, point_colors, faces) -> ToyScene:
        """A scene from its ``scene.json`` contents, ground truth and room faces."""
        occ = meta["occluder"]
        return cls(
            root=root,
            labels=tuple(meta["labels"]),
            intrinsics=np.array(meta["intrinsics"]),
            poses_c2w=trajectory(meta["frames"]),
            points=points,
            point_labels=point_labels.astype(np.int64),
            point_colors=point_colors.astype(np.uint8),
            depth_intrinsics=np.array(meta["depth_intrinsics"]),
            size=tuple(meta["size"]),
            depth_size=tuple(meta["depth_size"]),
            depth_scale=float(meta["depth_scale"]),
            layout=meta["layout"],
            pose=meta["pose"],
            seed=int(meta["seed"]),
            stems=tuple(meta["stems"]),
            occluder=(tuple(occ["min"]), tuple(occ["max"])) if occ else None,
            _faces=faces,
        )


def _check_settings(frames, size, layout, pose) -> tuple[int, int]:
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown toy-scene layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if pose not in POSES:
        raise DatasetError(f"unknown toy-scene pose convention {pose!r}; expected one of {', '.join(POSES)}")
    if int(frames) < 1:
        raise DatasetError(f"toy scene needs at least one frame, got {frames}")
    try:
        width, height = (int(x) for x in size)
    except (TypeError, ValueError):
        raise DatasetError(f"toy-scene size must be (width, height), got {size!r}") from None
    if min(width, height) < 16 or max(width, height) > 4096:
        raise DatasetError(f"toy-scene size {width}x{height} is out of range (16..4096 pixels a side)")
    return width, height


def _render_frames(files: SceneFiles, faces, cams: Cameras, xyz, normals, *, pose, write_labels, progress):
    """Render and write every frame -> ``(seen, hidden)``, ``(N,)`` int64 counts per candidate point of
    the frames that see it and of those where it is in view but behind something."""
    from tqdm.auto import tqdm

    from ..files import write_bytes, write_image

    seen = np.zeros(len(xyz), np.int64)
    hidden = np.zeros(len(xyz), np.int64)
    color_options = {"format": "JPEG", "quality": 95} if cams.color_ext == ".jpg" else {}
    for k in tqdm(range(len(cams.poses)), desc="toy scene", unit="frame", disable=not progress, leave=False):
        depth, label, color = render_frame(faces, cams.K, cams.poses[k], *cams.size, ss=2)
        s, h = visibility(xyz, normals, cams.K, cams.poses[k], depth)
        seen += s
        hidden += h
        if cams.depth_size != cams.size:
            depth = render_frame(faces, cams.K_depth, cams.poses[k], *cams.depth_size, ss=0)[0]
        depth_units = np.where(np.isfinite(depth), np.clip(np.rint(depth * cams.depth_scale), 0, 65535), 0)
        stem = cams.stems[k]
        files.put(
            f"color/{stem}{cams.color_ext}", write_image, Image.fromarray(color, "RGB"), **color_options
        )
        files.put(f"depth/{stem}.png", write_image, Image.fromarray(depth_units.astype(np.uint16)))
        if write_labels:
            files.put(f"label/{stem}.png", write_image, Image.fromarray(label.astype(np.uint8), "L"))
        if pose != "trajectory":
            matrix = cams.poses[k] if pose == "c2w" else np.linalg.inv(cams.poses[k])
            files.put(f"pose/{stem}.txt", write_bytes, matrix_text(matrix))
    return seen, hidden


def render_toy_scene(
    out: str | Path,
    *,
    frames: int = 24,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    layout: str = "generic",
    pose: str = "c2w",
    occluder: bool = True,
    overwrite: bool = False,
    write_labels: bool = True,
    progress: bool = False,
) -> ToyScene:
    """Render the toy room into ``out`` (see the module docstring for the files) -> :class:`ToyScene`.

    ``size`` is the colour ``(width, height)``. A non-empty ``out`` is refused unless ``overwrite``;
    then the files of this scene replace those of the same name, and files that an earlier toy scene
    there listed but this one does not write are removed (no other file is touched). Every file is
    written atomically; ``scene.json`` comes last. ``progress`` shows a progress bar on stderr.
    """
    width, height = _check_settings(frames, size, layout, pose)
    out = Path(out)
    check_output_folder(out, overwrite)
    files = SceneFiles(out, overwrite)
    faces = room_faces(seed, occluder)
    cams = Cameras.for_layout(layout, width, height, int(frames))
    candidates = surface_points(faces, POINT_SPACING_M)  # (xyz, normals, labels, colours)
    seen, hidden = _render_frames(
        files, faces, cams, *candidates[:2], pose=pose, write_labels=write_labels, progress=progress
    )
    write_cameras(files, cams, layout, pose)
    points, point_labels, point_colors, occlusion = write_ground_truth(files, candidates, seen, hidden)
    meta = scene_meta(cams, layout, pose, seed, occluder, len(points), occlusion)
    files.finish(meta)
    log.info("rendered %d frames and %d ground-truth points to %s", len(cams.poses), len(points), out)
    return ToyScene._from_meta(out, meta, points, point_labels, point_colors, faces)
