"""Pinhole geometry in torch: rescaled intrinsics, projection, visibility, depth back-projection.

Conventions: ``T_world_cam`` maps camera coordinates to world coordinates (camera-to-world) of an
OpenCV camera (x right, y down, z forward); ``K`` is ``(3, 3)`` in pixels of one image, with pixel
centres at integer coordinates (pixel ``(0, 0)`` covers ``[-0.5, 0.5)^2``). Point tensors are
``(N, 3)``; every function works on the device and in the dtype of its inputs.
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


def world_to_camera(xyz_world: torch.Tensor, T_world_cam: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` world points -> ``(N, 3)`` camera coordinates (z = depth along the optical axis)."""
    T_cam_world = invert_pose(T_world_cam).to(xyz_world.dtype)
    return xyz_world @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]


def camera_to_pixels(xyz_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` camera points -> ``(N, 2)`` pixel coordinates ``(u, v)``; points need ``z > 0``."""
    z = xyz_cam[:, 2:3].clamp_min(1e-9)
    K = K.to(xyz_cam.dtype)
    return (xyz_cam[:, :2] / z) @ K[:2, :2].T + K[:2, 2]


@dataclass(frozen=True)
class Visibility:
    """Which points a frame sees, where, and at what depth."""

    index: torch.Tensor  # (M,) int64 indices of the visible points
    uv: torch.Tensor  # (M, 2) their pixel coordinates in the colour frame
    z: torch.Tensor  # (M,) their depth in metres
    in_view: int  # points in front and inside the frame, before the depth test


def visible_points(
    xyz_world: torch.Tensor,
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
    """The points of ``xyz_world`` that a frame sees.

    A point counts when it is in front of the camera (``z > min_depth``), lands inside the colour
    frame ``color_size = (W, H)`` at least ``margin`` pixels from the border, and, with a depth map
    ``(Hd, Wd)`` in metres (``K_depth``: its intrinsics, default ``K_color``), passes the occlusion
    test ``|d - z| <= tolerance * d`` (``relative``) or ``<= tolerance`` metres, where ``d`` is the
    depth at the point's pixel (0 = no measurement: not visible). Pixels are rounded to the nearest.
    """
    W, H = color_size
    xyz_cam = world_to_camera(xyz_world, T_world_cam)  # (N, 3)
    front = xyz_cam[:, 2] > min_depth
    index = front.nonzero().squeeze(1)  # (M0,)
    xyz_cam = xyz_cam[index]
    uv = camera_to_pixels(xyz_cam, K_color)  # (M0, 2)
    px = uv.round()
    inside = (px[:, 0] >= margin) & (px[:, 0] < W - margin) & (px[:, 1] >= margin) & (px[:, 1] < H - margin)
    if depth is not None:
        Hd, Wd = depth.shape
        uv_d = camera_to_pixels(xyz_cam, K_depth if K_depth is not None else K_color).round()
        inside &= (uv_d[:, 0] >= 0) & (uv_d[:, 0] < Wd) & (uv_d[:, 1] >= 0) & (uv_d[:, 1] < Hd)
        keep = inside.nonzero().squeeze(1)
        ud, vd = uv_d[keep, 0].long(), uv_d[keep, 1].long()
        d = depth[vd, ud].to(xyz_cam.dtype)  # (M1,) measured depth at each point's pixel
        z = xyz_cam[keep, 2]
        bound = tolerance * d if relative else torch.full_like(d, tolerance)
        ok = (d > 0) & ((d - z).abs() <= bound)
        keep = keep[ok]
    else:
        keep = inside.nonzero().squeeze(1)
    return Visibility(index=index[keep], uv=uv[keep], z=xyz_cam[keep, 2], in_view=int(inside.sum()))


def feature_pixels(
    uv: torch.Tensor, color_size: tuple[int, int], feature_size: tuple[int, int]
) -> torch.Tensor:
    """``(M, 2)`` colour-frame pixel coordinates -> ``(M,)`` flat indices ``v * w + u`` into a
    ``feature_size = (w, h)`` map covering the same view (nearest feature pixel, clamped)."""
    (W, H), (w, h) = color_size, feature_size
    u = ((uv[:, 0] + 0.5) * (w / W) - 0.5).round().clamp_(0, w - 1).long()
    v = ((uv[:, 1] + 0.5) * (h / H) - 0.5).round().clamp_(0, h - 1).long()
    return v * w + u


def depth_to_camera(depth: torch.Tensor, K_depth: torch.Tensor, *, stride: int = 1) -> torch.Tensor:
    """Depth ``(H, W)`` in metres -> camera points ``(M, 3)`` of its valid pixels (``d > 0``), row by
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
    return torch.stack([x * d, y * d, d], dim=1)  # (M, 3)


def camera_to_world(xyz_cam: torch.Tensor, T_world_cam: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` camera points -> ``(N, 3)`` world points."""
    T = T_world_cam.to(xyz_cam.dtype)
    return xyz_cam @ T[:3, :3].T + T[:3, 3]
