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
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DatasetError
from .toy import TOY_LABELS
from .toy_room import (
    OCCLUDER_MAX,
    OCCLUDER_MIN,
    POINT_SPACING_M,
    ROOM_MAX,
    ROOM_MIN,
    Face,
    intrinsics_for,
    render_frame,
    room_faces,
    surface_points,
    trajectory,
    visibility,
)

log = logging.getLogger(__name__)

LAYOUTS = ("generic", "scannet", "replica")
POSES = ("c2w", "w2c", "trajectory")
DEPTH_SCALES = {"generic": 1000.0, "scannet": 1000.0, "replica": 6553.5}
FORMAT_VERSION = 1


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
        from plyfile import PlyData

        root = Path(root)
        try:
            meta = json.loads((root / "scene.json").read_text(encoding="utf-8"))
            ply = PlyData.read(str(root / "points.ply"))["vertex"]
            labels = np.load(root / "gt_labels.npy", allow_pickle=False)
        except (OSError, ValueError, KeyError) as e:
            raise DatasetError(f"{root}: not a readable toy scene ({e})") from None
        if meta.get("generator") != GENERATOR:
            raise DatasetError(f"{root / 'scene.json'}: not written by {GENERATOR}")
        occ = meta["occluder"]
        return cls(
            root=root,
            labels=tuple(meta["labels"]),
            intrinsics=np.array(meta["intrinsics"]),
            poses_c2w=trajectory(meta["frames"]),
            points=np.stack([ply["x"], ply["y"], ply["z"]], axis=1).astype(np.float32),
            point_labels=labels.astype(np.int64),
            point_colors=np.stack([ply["red"], ply["green"], ply["blue"]], axis=1).astype(np.uint8),
            depth_intrinsics=np.array(meta["depth_intrinsics"]),
            size=tuple(meta["size"]),
            depth_size=tuple(meta["depth_size"]),
            depth_scale=float(meta["depth_scale"]),
            layout=meta["layout"],
            pose=meta["pose"],
            seed=int(meta["seed"]),
            stems=tuple(meta["stems"]),
            occluder=(tuple(occ["min"]), tuple(occ["max"])) if occ else None,
            _faces=room_faces(int(meta["seed"]), occ is not None),
        )


GENERATOR = "langseg data toy-scene"


def quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """A rotation matrix ``(3, 3)`` -> its unit Hamilton quaternion ``(qx, qy, qz, qw)`` with ``qw >= 0``."""
    m = np.asarray(R, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:  # branch on the largest of w, x, y, z for a well-conditioned square root
        w = math.sqrt(1.0 + tr) / 2
        q = np.array(
            [(m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w), w]
        )
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        r = math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 0.0))
        q = np.zeros(4)
        q[i] = r / 2
        q[j] = (m[j, i] + m[i, j]) / (2 * r)
        q[k] = (m[k, i] + m[i, k]) / (2 * r)
        q[3] = (m[k, j] - m[j, k]) / (2 * r)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def _text(rows) -> bytes:
    """Numbers as whitespace-separated text, one row per line, each float written exactly (``repr``)."""
    return "".join(" ".join(repr(float(x)) for x in row) + "\n" for row in np.atleast_2d(rows)).encode()


def _homogeneous(K: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = K
    return out


def _ply(points: np.ndarray, colors: np.ndarray):
    """``(N, 3)`` float32 xyz and ``(N, 3)`` uint8 colours -> a binary PLY with one ``vertex`` element."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(
        len(points), dtype=[(n, "f4") for n in "xyz"] + [(n, "u1") for n in ("red", "green", "blue")]
    )
    for i, n in enumerate("xyz"):
        vertex[n] = points[:, i]
    for i, n in enumerate(("red", "green", "blue")):
        vertex[n] = colors[:, i]
    return PlyData([PlyElement.describe(vertex, "vertex")], text=False)


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


def _previous_files(out: Path) -> list[str]:
    """The files an earlier toy scene in ``out`` listed in its scene.json (none if it is not one)."""
    try:
        meta = json.loads((out / "scene.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        return []
    files = [f for f in meta.get("files", []) if isinstance(f, str)]
    return [f for f in files if not Path(f).is_absolute() and ".." not in Path(f).parts]  # inside `out` only


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
    from tqdm.auto import tqdm

    from ..files import atomic_write, write_array, write_bytes, write_image, write_json

    width, height = _check_settings(frames, size, layout, pose)
    frames = int(frames)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DatasetError(
            f"{out}: folder exists and is not empty; choose another folder or pass --overwrite"
        )
    previous = _previous_files(out) if overwrite else []

    faces = room_faces(seed, occluder)
    K = intrinsics_for(width, height)
    dsize = (width // 2, height // 2) if layout == "scannet" else (width, height)
    K_depth = intrinsics_for(*dsize)
    scale = DEPTH_SCALES[layout]
    poses = trajectory(frames)
    stems = [f"{k:06d}" if layout == "generic" else str(k) for k in range(frames)]
    color_ext = ".png" if layout == "generic" else ".jpg"
    xyz, normals, point_labels, point_colors = surface_points(faces, POINT_SPACING_M)
    seen = np.zeros(len(xyz), np.int64)  # frames that see each candidate point
    hidden = np.zeros(len(xyz), np.int64)  # frames where it is in view but behind something
    written: list[str] = []

    def put(rel: str, writer, obj, **options) -> None:  # one file, atomically, listed in scene.json
        writer(out / rel, obj, overwrite=overwrite, **options)
        written.append(rel)

    color_options = {"format": "JPEG", "quality": 95} if color_ext == ".jpg" else {}
    for k in tqdm(range(frames), desc="toy scene", unit="frame", disable=not progress, leave=False):
        depth, label, color = render_frame(faces, K, poses[k], width, height, ss=2)
        s, h = visibility(xyz, normals, K, poses[k], depth)
        seen += s
        hidden += h
        if dsize != (width, height):
            depth = render_frame(faces, K_depth, poses[k], *dsize, ss=0)[0]
        depth_units = np.where(np.isfinite(depth), np.clip(np.rint(depth * scale), 0, 65535), 0)
        stem = stems[k]
        put(f"color/{stem}{color_ext}", write_image, Image.fromarray(color, "RGB"), **color_options)
        put(f"depth/{stem}.png", write_image, Image.fromarray(depth_units.astype(np.uint16)))
        if write_labels:
            put(f"label/{stem}.png", write_image, Image.fromarray(label.astype(np.uint8), "L"))
        if pose != "trajectory":
            matrix = poses[k] if pose == "c2w" else np.linalg.inv(poses[k])
            put(f"pose/{stem}.txt", write_bytes, _text(matrix))

    if pose == "trajectory":
        rows = [[*c2w[:3, 3], *quaternion_xyzw(c2w[:3, :3])] for c2w in poses]
        put("trajectory.txt", write_bytes, _text(rows))
    if layout == "generic":
        put("intrinsics.txt", write_bytes, _text(K))
    elif layout == "replica":
        put("intrinsics.txt", write_bytes, _text(_homogeneous(K)))
    else:
        put("intrinsic/intrinsic_color.txt", write_bytes, _text(_homogeneous(K)))
        put("intrinsic/intrinsic_depth.txt", write_bytes, _text(_homogeneous(K_depth)))

    keep = seen > 0  # the ground truth holds the surface points that some frame sees
    points, point_labels, point_colors = xyz[keep], point_labels[keep], point_colors[keep]
    put("points.ply", atomic_write, _ply(points, point_colors).write)
    put("gt_labels.npy", write_array, point_labels.astype(np.int64), fmt="npy")
    put("labels.txt", write_bytes, ("\n".join(TOY_LABELS) + "\n").encode())
    occ_box = (tuple(OCCLUDER_MIN.tolist()), tuple(OCCLUDER_MAX.tolist())) if occluder else None
    meta = {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "layout": layout,
        "pose": pose,
        "pose_convention": {
            "c2w": "pose/<stem>.txt: 4x4 camera-to-world",
            "w2c": "pose/<stem>.txt: 4x4 world-to-camera",
            "trajectory": "trajectory.txt: x y z qx qy qz qw per frame, camera-to-world, Hamilton, scalar last",
        }[pose],
        "camera": "OpenCV: x right, y down, z forward; depth is z along the optical axis",
        "world": "metres, z up, floor at z = 0",
        "frames": frames,
        "stems": stems,
        "size": [width, height],
        "depth_size": list(dsize),
        "depth_scale": scale,
        "color_format": color_ext[1:],
        "intrinsics": K.tolist(),
        "depth_intrinsics": K_depth.tolist(),
        "seed": int(seed),
        "labels": list(TOY_LABELS),
        "room": {"min": ROOM_MIN.tolist(), "max": ROOM_MAX.tolist()},
        "occluder": {"min": list(occ_box[0]), "max": list(occ_box[1])} if occ_box else None,
        "points": len(points),
        "point_spacing": POINT_SPACING_M,
        "occlusion": {
            "points_hidden_in_some_frame": int(((hidden > 0) & keep).sum()),
            "hidden_point_views": int(hidden[keep].sum()),
            "seen_point_views": int(seen[keep].sum()),
        },
        "files": [*written, "scene.json"],
    }
    for rel in set(previous) - set(meta["files"]):  # leftovers of an earlier toy scene in this folder
        (out / rel).unlink(missing_ok=True)
        parent = (out / rel).parent
        if parent != out and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
    write_json(out / "scene.json", meta, overwrite=overwrite)
    log.info("rendered %d frames and %d ground-truth points to %s", frames, len(points), out)
    return ToyScene(
        root=out,
        labels=TOY_LABELS,
        intrinsics=K,
        poses_c2w=poses,
        points=points,
        point_labels=point_labels.astype(np.int64),
        point_colors=point_colors.astype(np.uint8),
        depth_intrinsics=K_depth,
        size=(width, height),
        depth_size=dsize,
        depth_scale=scale,
        layout=layout,
        pose=pose,
        seed=int(seed),
        stems=tuple(stems),
        occluder=occ_box,
        _faces=faces,
    )
