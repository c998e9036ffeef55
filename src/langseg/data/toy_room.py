"""The toy room's geometry: textured rectangles, analytic ray casting, cameras, visibility.

World frame in metres, z up, floor at z = 0. Cameras follow the OpenCV convention (x right, y down,
z forward); a camera's pose is its camera-to-world matrix. Pixel centres sit at integer coordinates.
Everything here is a pure function of its arguments (textures of the seed); :mod:`.toy_scene` writes
the files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .toy import ToyConfig, _background, toy_scene

ROOM_MIN = np.array([-2.0, -1.5, 0.0])  # metres, world frame (z up)
ROOM_MAX = np.array([2.0, 1.5, 2.6])
OCCLUDER_MIN = np.array([1.1, -0.6, 0.0])  # a panel from floor to ceiling between the loop and the +x wall
OCCLUDER_MAX = np.array([1.4, 0.4, 2.6])
TILE_M = 1.3  # side of one toy texture tile in metres (about the image height at 1.5 m)
TILE_TEXELS = 96  # texels per tile side (the toy dataset's own image size)
POINT_SPACING_M = 0.05  # grid spacing of the ground-truth point cloud
HFOV_DEG = 70.0  # horizontal field of view of the colour camera


@dataclass
class Face:
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


def _wall(name, rng, centre, normal, width, height, shapes, in_points) -> Face:
    """A vertical rectangle seen upright and unmirrored from the side its ``normal`` points to."""
    normal = np.asarray(normal, float)
    right = np.cross(-normal, [0.0, 0.0, 1.0])  # a viewer facing the wall looks along -normal
    origin = np.asarray(centre, float) - right * width / 2 + np.array([0.0, 0.0, height / 2])
    color, label = _tiled(rng, width, height, shapes)
    return Face(name, origin, right * width, np.array([0.0, 0.0, -height]), normal, color, label, in_points)


def room_faces(seed: int, occluder: bool) -> list[Face]:
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
        Face(
            "floor", lo.copy(), np.array([size[0], 0, 0]), np.array([0, size[1], 0]),
            np.array([0.0, 0.0, 1.0]), floor_c, floor_l, True,
        )
    )  # fmt: skip
    ceil_c, ceil_l = _tiled(rng, size[0], size[1], False)
    faces.append(
        Face(
            "ceiling", np.array([lo[0], lo[1], hi[2]]), np.array([size[0], 0, 0]), np.array([0, size[1], 0]),
            np.array([0.0, 0.0, -1.0]), ceil_c, ceil_l, False,
        )
    )  # fmt: skip
    if occluder:
        olo, ohi = OCCLUDER_MIN, OCCLUDER_MAX
        osz, omid = ohi - olo, (olo + ohi) / 2
        for name, centre, normal, width in (
            ("occluder -x", [olo[0], omid[1], omid[2]], [-1, 0, 0], osz[1]),
            ("occluder +x", [ohi[0], omid[1], omid[2]], [1, 0, 0], osz[1]),
            ("occluder -y", [omid[0], olo[1], omid[2]], [0, -1, 0], osz[0]),
            ("occluder +y", [omid[0], ohi[1], omid[2]], [0, 1, 0], osz[0]),
        ):
            faces.append(_wall(name, rng, centre, normal, width, osz[2], False, True))
    return faces


def cast(faces: list[Face], origin: np.ndarray, dirs: np.ndarray):
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


def shade(faces: list[Face], face: np.ndarray, s: np.ndarray, t: np.ndarray, what: str) -> np.ndarray:
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


def render_frame(
    faces: list[Face],
    K: np.ndarray,
    c2w: np.ndarray,
    width: int,
    height: int,
    ss: int = 1,
    block: int = 1 << 15,
):
    """One view -> depth ``(H, W)`` float64 metres (z along the optical axis), labels ``(H, W)`` int64
    (pixel centres), colour ``(H, W, 3)`` uint8 (mean of ``ss x ss`` samples per pixel; None when ``ss``
    is 0). Rays go in blocks of about ``block`` pixels, so memory does not grow with the image size."""
    depth = np.empty((height, width))
    label = np.empty((height, width), np.int64)
    color = np.empty((height, width, 3), np.uint8) if ss >= 1 else None
    rows = max(1, block // width)
    for top in range(0, height, rows):
        d, lab, col = _render_rows(faces, K, c2w, width, top, min(top + rows, height), ss)
        depth[top : top + rows], label[top : top + rows] = d, lab
        if color is not None:
            color[top : top + rows] = col
    return depth, label, color


def _render_rows(faces, K, c2w, width: int, top: int, bottom: int, ss: int):
    """Rows ``top:bottom`` of a view -> depth ``(h, W)``, labels ``(h, W)``, colour ``(h, W, 3)`` or None."""
    R, origin = c2w[:3, :3], c2w[:3, 3]
    Kinv = np.linalg.inv(K)
    h = bottom - top
    yy, xx = np.mgrid[top:bottom, 0:width].astype(np.float64)

    def rays(offset_x: float, offset_y: float) -> np.ndarray:  # (h*W, 3) world directions with z_cam = 1
        pix = np.stack([xx.ravel() + offset_x, yy.ravel() + offset_y, np.ones(h * width)], axis=1)
        return pix @ Kinv.T @ R.T

    t, face, s, tt = cast(faces, origin, rays(0.0, 0.0))
    depth = t.reshape(h, width)  # t is z because the camera-frame direction has z = 1
    label = shade(faces, face, s, tt, "label").reshape(h, width)
    if ss < 1:
        return depth, label, None
    color = np.zeros((h * width, 3))
    offsets = (np.arange(ss) + 0.5) / ss - 0.5
    for oy in offsets:
        for ox in offsets:
            _, f2, s2, t2 = cast(faces, origin, rays(ox, oy))
            color += shade(faces, f2, s2, t2, "color")
    color = np.clip(color / (ss * ss) + 0.5, 0, 255).astype(np.uint8).reshape(h, width, 3)
    return depth, label, color


def surface_points(faces: list[Face], spacing: float):
    """Grid samples of the faces in the point cloud -> xyz ``(N, 3)`` float32, normals ``(N, 3)``,
    labels ``(N,)`` and colours ``(N, 3)`` of the texels under the float32 positions (as stored)."""
    xyz, normals, labels, colors = [], [], [], []
    for f in faces:
        if not f.in_points:
            continue
        nu = max(1, round(float(np.linalg.norm(f.u)) / spacing))
        nv = max(1, round(float(np.linalg.norm(f.v)) / spacing))
        t, s = np.meshgrid((np.arange(nv) + 0.5) / nv, (np.arange(nu) + 0.5) / nu, indexing="ij")
        p = (f.origin + s.ravel()[:, None] * f.u + t.ravel()[:, None] * f.v).astype(np.float32)
        _, s, t = f.coords(p.astype(np.float64))  # a sample on a texel edge takes the texel it is stored in
        row, col = f.texel(s, t)
        xyz.append(p)
        normals.append(np.broadcast_to(f.normal, (s.size, 3)))
        labels.append(f.label[row, col])
        colors.append(f.color[row, col])
    return np.concatenate(xyz), np.concatenate(normals), np.concatenate(labels), np.concatenate(colors)


def visibility(xyz, normals, K, c2w, depth, tol=(0.05, 0.05)):
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
