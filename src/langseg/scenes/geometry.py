"""Pinhole geometry in torch: rescaled intrinsics, projection, visibility, depth back-projection.

Conventions: ``T_world_cam`` maps camera coordinates to world coordinates (camera-to-world) of an
OpenCV camera (x right, y down, z forward); ``K`` is ``(3, 3)`` in pixels of one image, with pixel
centres at integer coordinates (pixel ``(0, 0)`` covers ``[-0.5, 0.5)^2``). Points are columns:
``(3, N)`` tensors (so each coordinate is one contiguous row and a transform is one ``addmm``);
every function works on the device and in the dtype of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def scale_intrinsics(K: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """``K`` of a ``from_size = (W, H)`` image -> ``K`` of the same view resampled to ``to_size = (w, h)``.

    Pixel centres move as ``u' = (u + 0.5) * w / W - 0.5``, so a feature map at half resolution
    gets ``fx / 2`` and ``(cx + 0.5) / 2 - 0.5``.
    """
    (W, H), (w, h) = from_size, to_size
    sx, sy = w / W, h / H
    out = K.clone()
    out[0, :] = K[0, :] * sx
    out[1, :] = K[1, :] * sy
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def invert_pose(T_world_cam: torch.Tensor) -> torch.Tensor:
    """Rigid ``(4, 4)`` camera-to-world -> world-to-camera (``R^T``, ``-R^T t``)."""
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    out = torch.eye(4, dtype=T_world_cam.dtype, device=T_world_cam.device)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def world_to_camera(pts_world: torch.Tensor, T_world_cam: torch.Tensor) -> torch.Tensor:
    """``(3, N)`` world points (columns) -> ``(3, N)`` camera coordinates (row 2 = depth z)."""
    T_cam_world = invert_pose(T_world_cam).to(pts_world.dtype)
    return torch.addmm(T_cam_world[:3, 3:4], T_cam_world[:3, :3], pts_world)  # R p + t


def camera_to_world(pts_cam: torch.Tensor, T_world_cam: torch.Tensor) -> torch.Tensor:
    """``(3, N)`` camera points -> ``(3, N)`` world points."""
    T = T_world_cam.to(pts_cam.dtype)
    return torch.addmm(T[:3, 3:4], T[:3, :3], pts_cam)


def camera_to_pixels(pts_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``(3, N)`` camera points -> ``(2, N)`` pixel coordinates ``(u, v)``; points need ``z > 0``."""
    fx, s, cx, fy, cy = (float(K[0, 0]), float(K[0, 1]), float(K[0, 2]), float(K[1, 1]), float(K[1, 2]))
    inv_z = pts_cam[2].clamp_min(1e-9).reciprocal()
    xn, yn = pts_cam[0] * inv_z, pts_cam[1] * inv_z  # normalized image coordinates
    return torch.stack([xn * fx + yn * s + cx, yn * fy + cy])


@dataclass(frozen=True)
class Visibility:
    """Which points a frame sees, where, and at what depth."""

    index: torch.Tensor  # (M,) int64 indices of the visible points
    uv: torch.Tensor  # (2, M) their pixel coordinates (u, v) in the colour frame
    z: torch.Tensor  # (M,) their depth in metres
    in_view: int  # points in front and inside the frame, before the depth test


def _inside(uv: torch.Tensor, size: tuple[int, int], margin: int) -> torch.Tensor:
    """``(2, M)`` pixel coordinates whose nearest pixel ``floor(u + 0.5)`` lies ``margin`` or more
    pixels inside a ``(W, H)`` image -> ``(M,)`` bool."""
    W, H = size
    lo = margin - 0.5
    return (uv[0] >= lo) & (uv[0] < W - margin - 0.5) & (uv[1] >= lo) & (uv[1] < H - margin - 0.5)


def _in_frustum(
    pts_cam: torch.Tensor, K: torch.Tensor, size: tuple[int, int], margin: int, min_depth: float
) -> torch.Tensor:
    """``(3, N)`` camera points in front (``z > min_depth``) whose nearest pixel lies ``margin`` or more
    pixels inside a ``(W, H)`` image -> ``(N,)`` bool.

    Tested without dividing by z: ``u = fx x / z + s y / z + cx >= lo`` is ``fx x + s y >= (lo - cx) z``
    for ``z > 0``: a few multiplications and comparisons per point, the cost that grows with N.
    """
    W, H = size
    fx, s, cx, fy, cy = (float(K[0, 0]), float(K[0, 1]), float(K[0, 2]), float(K[1, 1]), float(K[1, 2]))
    x, y, z = pts_cam
    ux = x * fx if s == 0 else x * fx + y * s  # (u - cx) * z
    vy = y * fy  # (v - cy) * z
    inside = z > min_depth
    inside &= ux >= z * (margin - 0.5 - cx)
    inside &= ux < z * (W - margin - 0.5 - cx)
    inside &= vy >= z * (margin - 0.5 - cy)
    inside &= vy < z * (H - margin - 0.5 - cy)
    return inside


def visible_points(
    pts_world: torch.Tensor,
    T_world_cam: torch.Tensor,
    K_color: torch.Tensor,
    color_size: tuple[int, int],
    *,
    margin: int = 0,
    depth: torch.Tensor | None = None,
    K_depth: torch.Tensor | None = None,
    tolerance: float = 0.25,
    relative: bool = True,
    min_depth: float = 1e-3,
) -> Visibility:
    """The points (``(3, N)`` world coordinates, one per column) that a frame sees.

    A point counts when it is in front of the camera (``z > min_depth``), its nearest pixel lies
    inside the colour frame ``color_size = (W, H)`` at least ``margin`` pixels from the border, and,
    with a depth map ``(Hd, Wd)`` in metres (``K_depth``: its intrinsics, default ``K_color``), it
    passes the occlusion test ``|d - z| <= tolerance * d`` (``relative``) or ``<= tolerance`` metres,
    where ``d`` is the depth at its nearest depth pixel (0 = no measurement: not visible).
    """
    pts_cam = world_to_camera(pts_world, T_world_cam)  # (3, N)
    index = _in_frustum(pts_cam, K_color, color_size, margin, min_depth).nonzero().squeeze(1)  # (M0,)
    pts_cam = pts_cam.index_select(1, index)  # (3, M0): only the points in view from here on
    uv, z = camera_to_pixels(pts_cam, K_color), pts_cam[2]
    in_view = len(index)
    if depth is not None:
        Hd, Wd = depth.shape
        if K_depth is None or torch.equal(K_depth, K_color):
            uv_d = uv
        else:
            uv_d = camera_to_pixels(pts_cam, K_depth)
        ok = _inside(uv_d, (Wd, Hd), 0)
        u_d = (uv_d[0] + 0.5).floor_().clamp_(0, Wd - 1).long()
        v_d = (uv_d[1] + 0.5).floor_().clamp_(0, Hd - 1).long()
        d = depth.reshape(-1).index_select(0, v_d * Wd + u_d).to(z.dtype)  # (M0,) measured depth per point
        bound = d * tolerance if relative else torch.full_like(d, tolerance)
        ok &= (d > 0) & ((d - z).abs() <= bound)
        keep = ok.nonzero().squeeze(1)
        index, uv, z = index.index_select(0, keep), uv.index_select(1, keep), z.index_select(0, keep)
    return Visibility(index=index, uv=uv, z=z, in_view=in_view)


def feature_pixels(
    uv: torch.Tensor, color_size: tuple[int, int], feature_size: tuple[int, int]
) -> torch.Tensor:
    """``(2, M)`` colour-frame pixel coordinates -> ``(M,)`` flat indices ``v * w + u`` into a
    ``feature_size = (w, h)`` map covering the same view (nearest feature pixel, clamped)."""
    (W, H), (w, h) = color_size, feature_size
    u = ((uv[0] + 0.5) * (w / W)).floor_().clamp_(0, w - 1).long()
    v = ((uv[1] + 0.5) * (h / H)).floor_().clamp_(0, h - 1).long()
    return v * w + u


def depth_to_camera(depth: torch.Tensor, K_depth: torch.Tensor, *, stride: int = 1) -> torch.Tensor:
    """Depth ``(H, W)`` in metres -> camera points ``(3, M)`` of its valid pixels (``d > 0``), row by
    row, every ``stride``-th pixel in each direction."""
    H, W = depth.shape
    v, u = torch.meshgrid(
        torch.arange(0, H, stride, device=depth.device),
        torch.arange(0, W, stride, device=depth.device),
        indexing="ij",
    )
    d = depth[v, u].float()
    valid = d > 0
    u, v, d = u[valid].float(), v[valid].float(), d[valid]
    K = K_depth.float()
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return torch.stack([x * d, y * d, d])  # (3, M)
