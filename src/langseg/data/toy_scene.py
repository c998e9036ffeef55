"""A toy 3D scene: an RGB-D sequence of a small room papered with the toy dataset's shapes.

The room is a box (4 x 3 x 2.6 m, world frame in metres, z up, floor at z = 0, centred on x = y = 0).
Its four walls and its floor are tiled with toy scenes (:func:`langseg.data.toy.toy_scene`: coloured
shapes on textured backgrounds), so every texel has a ground-truth class from
:data:`langseg.data.toy.TOY_LABELS` (the classes the bundled ``lseg-toy`` model knows). The ceiling and
an optional pillar (the occluder, an axis-aligned box from floor to ceiling) carry shape-free textures
of class ``background``. The pillar stands between the camera path and a wall, so it hides parts of
that wall from some frames: fusing features without an occlusion test paints those wall points with
the pillar's class.

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
from .toy import TOY_LABELS, ToyConfig, _background, toy_scene

log = logging.getLogger(__name__)

LAYOUTS = ("generic", "scannet", "replica")
POSES = ("c2w", "w2c", "trajectory")
DEPTH_SCALES = {"generic": 1000.0, "scannet": 1000.0, "replica": 6553.5}
ROOM_MIN = np.array([-2.0, -1.5, 0.0])  # metres, world frame (z up)
ROOM_MAX = np.array([2.0, 1.5, 2.6])
OCCLUDER_MIN = np.array([1.1, 0.45, 0.0])  # a pillar from floor to ceiling, between the loop and a wall
OCCLUDER_MAX = np.array([1.5, 0.85, 2.6])
TILE_M = 1.3  # side of one toy texture tile in metres (about the image height at 1.5 m)
TILE_TEXELS = 96  # texels per tile side (the toy dataset's own image size)
POINT_SPACING_M = 0.05  # grid spacing of the ground-truth point cloud
HFOV_DEG = 70.0  # horizontal field of view of the colour camera
FORMAT_VERSION = 1


@dataclass
class _Face:
    """A textured rectangle: ``origin + s * u + t * v`` for ``s, t`` in [0, 1]; ``normal`` faces the free space."""

    name: str
    origin: np.ndarray  # (3,) the corner at texel (0, 0)
    u: np.ndarray  # (3,) along texture columns, full extent
    v: np.ndarray  # (3,) along texture rows, full extent
    normal: np.ndarray  # (3,) unit
    color: np.ndarray  # (Ht, Wt, 3) uint8
    label: np.ndarray  # (Ht, Wt) int64 class indices into TOY_LABELS
    in_points: bool  # part of the ground-truth point cloud

    def coords(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(M, 3)`` points -> plane offset along the normal and texture coordinates ``s, t``, each ``(M,)``."""
        rel = p - self.origin
        return rel @ self.normal, rel @ self.u / (self.u @ self.u), rel @ self.v / (self.v @ self.v)

    def texel(self, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Texture coordinates -> integer ``(row, col)`` of the nearest texel, clipped to the texture."""
        Ht, Wt = self.label.shape
        col = np.clip(np.floor(s * Wt), 0, Wt - 1).astype(np.int64)
        row = np.clip(np.floor(t * Ht), 0, Ht - 1).astype(np.int64)
        return row, col


def _tiled(rng: np.random.Generator, width_m: float, height_m: float, shapes: bool):
    """A texture of toy tiles about TILE_M metres wide -> ``(Ht, Wt, 3)`` uint8 and ``(Ht, Wt)`` int64."""
    nu, nv = max(1, round(width_m / TILE_M)), max(1, round(height_m / TILE_M))
    cfg = ToyConfig(size=TILE_TEXELS)
    color = np.zeros((nv * TILE_TEXELS, nu * TILE_TEXELS, 3), np.uint8)
    label = np.zeros((nv * TILE_TEXELS, nu * TILE_TEXELS), np.int64)
    for j in range(nv):
        for i in range(nu):
            rows = slice(j * TILE_TEXELS, (j + 1) * TILE_TEXELS)
            cols = slice(i * TILE_TEXELS, (i + 1) * TILE_TEXELS)
            if shapes:
                image, mask = toy_scene(rng, cfg)
                color[rows, cols], label[rows, cols] = np.asarray(image), mask
            else:  # class "background": a toy background texture with sensor noise, no shapes
                tex = _background(rng, TILE_TEXELS) + rng.normal(0.0, 4.0, (TILE_TEXELS, TILE_TEXELS, 3))
                color[rows, cols] = np.clip(tex + 0.5, 0, 255).astype(np.uint8)
    return color, label


def _wall(name, rng, centre, normal, width, height, shapes, in_points) -> _Face:
    """A vertical rectangle seen upright and unmirrored from the side its ``normal`` points to."""
    normal = np.asarray(normal, float)
    right = np.cross(-normal, [0.0, 0.0, 1.0])  # a viewer facing the wall looks along -normal
    origin = np.asarray(centre, float) - right * width / 2 + np.array([0.0, 0.0, height / 2])
    color, label = _tiled(rng, width, height, shapes)
    return _Face(name, origin, right * width, np.array([0.0, 0.0, -height]), normal, color, label, in_points)


def _faces(seed: int, occluder: bool) -> list[_Face]:
    """The room's textured rectangles; a pure function of ``seed`` and ``occluder``."""
    rng = np.random.default_rng([seed, 0x70_5C])
    lo, hi = ROOM_MIN, ROOM_MAX
    size = hi - lo
    mid = (lo + hi) / 2
    faces = [
        _wall("wall -x", rng, [lo[0], mid[1], mid[2]], [1, 0, 0], size[1], size[2], True, True),
        _wall("wall +x", rng, [hi[0], mid[1], mid[2]], [-1, 0, 0], size[1], size[2], True, True),
        _wall("wall -y", rng, [mid[0], lo[1], mid[2]], [0, 1, 0], size[0], size[2], True, True),
        _wall("wall +y", rng, [mid[0], hi[1], mid[2]], [0, -1, 0], size[0], size[2], True, True),
    ]
    floor_c, floor_l = _tiled(rng, size[0], size[1], True)
    faces.append(
        _Face(
            "floor", lo.copy(), np.array([size[0], 0, 0]), np.array([0, size[1], 0]),
            np.array([0.0, 0.0, 1.0]), floor_c, floor_l, True,
        )
    )  # fmt: skip
    ceil_c, ceil_l = _tiled(rng, size[0], size[1], False)
    faces.append(
        _Face(
            "ceiling", np.array([lo[0], lo[1], hi[2]]), np.array([size[0], 0, 0]), np.array([0, size[1], 0]),
            np.array([0.0, 0.0, -1.0]), ceil_c, ceil_l, False,
        )
    )  # fmt: skip
    if occluder:
        olo, ohi = OCCLUDER_MIN, OCCLUDER_MAX
        osz, omid = ohi - olo, (olo + ohi) / 2
        for name, centre, normal, width in (
            ("pillar -x", [olo[0], omid[1], omid[2]], [-1, 0, 0], osz[1]),
            ("pillar +x", [ohi[0], omid[1], omid[2]], [1, 0, 0], osz[1]),
            ("pillar -y", [omid[0], olo[1], omid[2]], [0, -1, 0], osz[0]),
            ("pillar +y", [omid[0], ohi[1], omid[2]], [0, 1, 0], osz[0]),
        ):
            faces.append(_wall(name, rng, centre, normal, width, osz[2], False, True))
    return faces


def _cast(faces: list[_Face], origin: np.ndarray, dirs: np.ndarray):
    """Rays ``origin + t * dirs`` (``dirs`` ``(R, 3)``) -> nearest front-facing hit: ``t``, face index,
    ``s``, ``t_tex`` (each ``(R,)``; face -1 and ``t`` inf where nothing is hit)."""
    R = dirs.shape[0]
    best = np.full(R, np.inf)
    face = np.full(R, -1, np.int64)
    s_best, t_best = np.zeros(R), np.zeros(R)
    for k, f in enumerate(faces):
        denom = dirs @ f.normal  # (R,) < 0 for rays that meet the face's front side
        front = denom < -1e-12
        dist = (f.origin - origin) @ f.normal  # <= 0 when the origin is in front of the face
        t = np.where(front, dist / np.where(front, denom, -1.0), np.inf)
        _, s, tt = f.coords(origin + np.where(front, t, 0.0)[:, None] * dirs)
        hit = front & (t > 0) & (t < best) & (s >= 0) & (s <= 1) & (tt >= 0) & (tt <= 1)
        best[hit], face[hit], s_best[hit], t_best[hit] = t[hit], k, s[hit], tt[hit]
    return best, face, s_best, t_best


def _shade(faces: list[_Face], face: np.ndarray, s: np.ndarray, t: np.ndarray, what: str) -> np.ndarray:
    """Look up ``color`` ``(R, 3)`` or ``label`` ``(R,)`` at the hits (nearest texel; -1 / 0 for misses)."""
    out = np.zeros((face.shape[0], 3), np.float64) if what == "color" else np.full(face.shape[0], -1)
    for k, f in enumerate(faces):
        sel = face == k
        if sel.any():
            row, col = f.texel(s[sel], t[sel])
            out[sel] = getattr(f, what)[row, col]
    return out


def intrinsics_for(width: int, height: int, hfov_deg: float = HFOV_DEG) -> np.ndarray:
    """``(3, 3)`` pinhole intrinsics: square pixels, centres at integer coordinates."""
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def trajectory(frames: int) -> np.ndarray:
    """``(F, 4, 4)`` camera-to-world poses (OpenCV camera) of one loop around the room, looking at the walls."""
    poses = np.zeros((frames, 4, 4))
    for k in range(frames):
        a = 2 * math.pi * k / frames
        pos = np.array([0.75 * math.cos(a), 0.5 * math.sin(a), 1.3 + 0.08 * math.sin(2 * a)])
        yaw = a + 0.25 * math.sin(3 * a)  # mostly outwards, swinging a little to either side
        pitch = math.radians(22 + 6 * math.sin(2 * a + 1))  # downwards
        fwd = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])  # fwd x (0, 0, 1), normalised
        down = np.cross(fwd, right)  # x right, y down, z forward: right x down = fwd
        poses[k, :3, :3] = np.stack([right, down, fwd], axis=1)  # columns: camera axes in the world
        poses[k, :3, 3] = pos
        poses[k, 3, 3] = 1.0
    return poses


def render_frame(faces: list[_Face], K: np.ndarray, c2w: np.ndarray, width: int, height: int, ss: int = 1):
    """One view -> depth ``(H, W)`` float64 metres (z along the optical axis), labels ``(H, W)`` int64
    (pixel centres), colour ``(H, W, 3)`` uint8 (mean of ``ss x ss`` samples per pixel; None when ``ss`` is 0)."""
    R, origin = c2w[:3, :3], c2w[:3, 3]
    Kinv = np.linalg.inv(K)

    def rays(offset_x: float, offset_y: float) -> np.ndarray:  # (H*W, 3) world directions with z_cam = 1
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        pix = np.stack([xx.ravel() + offset_x, yy.ravel() + offset_y, np.ones(height * width)], axis=1)
        return pix @ Kinv.T @ R.T

    t, face, s, tt = _cast(faces, origin, rays(0.0, 0.0))
    depth = t.reshape(height, width)  # t is z because the camera-frame direction has z = 1
    label = _shade(faces, face, s, tt, "label").reshape(height, width)
    if ss < 1:
        return depth, label, None
    color = np.zeros((height * width, 3))
    offsets = (np.arange(ss) + 0.5) / ss - 0.5
    for oy in offsets:
        for ox in offsets:
            _, f2, s2, t2 = _cast(faces, origin, rays(ox, oy))
            color += _shade(faces, f2, s2, t2, "color")
    color = np.clip(color / (ss * ss) + 0.5, 0, 255).astype(np.uint8).reshape(height, width, 3)
    return depth, label, color


def _surface_points(faces: list[_Face], spacing: float):
    """Grid samples of the faces in the point cloud -> xyz ``(N, 3)``, normals ``(N, 3)``, labels, colours."""
    xyz, normals, labels, colors = [], [], [], []
    for f in faces:
        if not f.in_points:
            continue
        nu = max(1, round(float(np.linalg.norm(f.u)) / spacing))
        nv = max(1, round(float(np.linalg.norm(f.v)) / spacing))
        t, s = np.meshgrid((np.arange(nv) + 0.5) / nv, (np.arange(nu) + 0.5) / nu, indexing="ij")
        s, t = s.ravel(), t.ravel()
        row, col = f.texel(s, t)
        xyz.append(f.origin + s[:, None] * f.u + t[:, None] * f.v)
        normals.append(np.broadcast_to(f.normal, (s.size, 3)))
        labels.append(f.label[row, col])
        colors.append(f.color[row, col])
    return np.concatenate(xyz), np.concatenate(normals), np.concatenate(labels), np.concatenate(colors)


def _visibility(xyz, normals, K, c2w, depth, tol=(0.05, 0.05)):
    """Which points one frame sees and which it would see but for something in front of them.

    ``xyz``/``normals`` ``(N, 3)``, ``depth`` ``(H, W)`` exact z in metres -> two ``(N,)`` bool arrays:
    ``seen`` (inside the image, facing the camera, z within ``tol[0] + tol[1] * z`` of the depth) and
    ``hidden`` (inside the image, facing the camera, but behind the depth by more than that).
    """
    H, W = depth.shape
    R, origin = c2w[:3, :3], c2w[:3, 3]
    cam = (xyz - origin) @ R  # (N, 3) camera coordinates: R^T (p - origin), row-wise
    z = cam[:, 2]
    front = (z > 1e-6) & (np.einsum("ij,ij->i", normals, origin - xyz) > 0)
    zs = np.where(front, z, 1.0)
    u = np.rint(K[0, 0] * cam[:, 0] / zs + K[0, 2]).astype(np.int64)
    v = np.rint(K[1, 1] * cam[:, 1] / zs + K[1, 2]).astype(np.int64)
    inside = front & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    d = depth[np.clip(v, 0, H - 1), np.clip(u, 0, W - 1)]
    near = np.abs(z - d) <= tol[0] + tol[1] * d
    return inside & near, inside & ~near & (z > d)


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
    occluder: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (min xyz, max xyz) of the pillar
    _faces: list[_Face] = field(default_factory=list, repr=False)

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
            _faces=_faces(int(meta["seed"]), occ is not None),
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
    return [f for f in meta.get("files", []) if isinstance(f, str) and ".." not in Path(f).parts]


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
    from plyfile import PlyData, PlyElement
    from tqdm.auto import tqdm

    from ..outputs import atomic_write, write_array, write_bytes, write_image, write_json

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

    faces = _faces(seed, occluder)
    K = intrinsics_for(width, height)
    dsize = (width // 2, height // 2) if layout == "scannet" else (width, height)
    K_depth = intrinsics_for(*dsize)
    scale = DEPTH_SCALES[layout]
    poses = trajectory(frames)
    stems = [f"{k:06d}" if layout == "generic" else str(k) for k in range(frames)]
    color_ext, color_format = (".png", "PNG") if layout == "generic" else (".jpg", "JPEG")
    xyz, normals, point_labels, point_colors = _surface_points(faces, POINT_SPACING_M)
    seen = np.zeros(len(xyz), np.int64)  # frames that see each candidate point
    hidden = np.zeros(len(xyz), np.int64)  # frames where it is in view but behind something
    written: list[str] = []

    def put(rel: str, write) -> None:
        write(out / rel)
        written.append(rel)

    for k in tqdm(range(frames), desc="toy scene", unit="frame", disable=not progress, leave=False):
        depth, label, color = render_frame(faces, K, poses[k], width, height, ss=2)
        s, h = _visibility(xyz, normals, K, poses[k], depth)
        seen += s
        hidden += h
        if dsize != (width, height):
            depth = render_frame(faces, K_depth, poses[k], *dsize, ss=0)[0]
        depth_units = np.clip(np.rint(depth * scale), 0, 65535).astype(np.uint16)
        depth_units[~np.isfinite(depth)] = 0
        stem = stems[k]
        options = {"quality": 95} if color_format == "JPEG" else {}
        image = Image.fromarray(color, "RGB")
        put(
            f"color/{stem}{color_ext}",
            lambda p: write_image(p, image, overwrite=overwrite, format=color_format, **options),
        )
        put(f"depth/{stem}.png", lambda p: write_image(p, Image.fromarray(depth_units), overwrite=overwrite))
        if write_labels:
            put(
                f"label/{stem}.png",
                lambda p: write_image(p, Image.fromarray(label.astype(np.uint8), "L"), overwrite=overwrite),
            )
        if pose != "trajectory":
            matrix = poses[k] if pose == "c2w" else np.linalg.inv(poses[k])
            put(f"pose/{stem}.txt", lambda p: write_bytes(p, _text(matrix), overwrite=overwrite))

    if pose == "trajectory":
        rows = [[*c2w[:3, 3], *quaternion_xyzw(c2w[:3, :3])] for c2w in poses]
        put("trajectory.txt", lambda p: write_bytes(p, _text(rows), overwrite=overwrite))
    if layout == "generic":
        put("intrinsics.txt", lambda p: write_bytes(p, _text(K), overwrite=overwrite))
    elif layout == "replica":
        put("intrinsics.txt", lambda p: write_bytes(p, _text(_homogeneous(K)), overwrite=overwrite))
    else:
        put(
            "intrinsic/intrinsic_color.txt",
            lambda p: write_bytes(p, _text(_homogeneous(K)), overwrite=overwrite),
        )
        put(
            "intrinsic/intrinsic_depth.txt",
            lambda p: write_bytes(p, _text(_homogeneous(K_depth)), overwrite=overwrite),
        )

    keep = seen > 0  # the ground truth holds the surface points that some frame sees
    points = xyz[keep].astype(np.float32)
    vertex = np.empty(
        len(points), dtype=[(n, "f4") for n in "xyz"] + [(n, "u1") for n in ("red", "green", "blue")]
    )
    for i, n in enumerate("xyz"):
        vertex[n] = points[:, i]
    for i, n in enumerate(("red", "green", "blue")):
        vertex[n] = point_colors[keep][:, i]
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False)
    put("points.ply", lambda p: atomic_write(p, ply.write, overwrite=overwrite))
    put(
        "gt_labels.npy",
        lambda p: write_array(p, point_labels[keep].astype(np.int64), "npy", overwrite=overwrite),
    )
    put("labels.txt", lambda p: write_bytes(p, ("\n".join(TOY_LABELS) + "\n").encode(), overwrite=overwrite))
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
        "color_format": color_format.lower(),
        "intrinsics": K.tolist(),
        "depth_intrinsics": K_depth.tolist(),
        "seed": int(seed),
        "labels": list(TOY_LABELS),
        "room": {"min": ROOM_MIN.tolist(), "max": ROOM_MAX.tolist()},
        "occluder": {"min": list(occ_box[0]), "max": list(occ_box[1])} if occ_box else None,
        "points": int(keep.sum()),
        "point_spacing": POINT_SPACING_M,
        "occlusion": {
            "points_hidden_in_some_frame": int(((hidden > 0) & keep).sum()),
            "hidden_point_views": int(hidden[keep].sum()),
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
        point_labels=point_labels[keep].astype(np.int64),
        point_colors=point_colors[keep].astype(np.uint8),
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
