"""The points a scene's features are fused onto: a given point cloud, or a voxel grid of depth frames.

PLY files are read and written with ``plyfile`` (numpy structured arrays in and out, ASCII and binary,
no compiled code); npy and pt files hold an ``(N, 3)`` xyz array (OpenScene's input mode).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .layouts import SceneError

log = logging.getLogger(__name__)

_KEY_BITS = 21  # bits per voxel axis in a packed key: +-2^20 voxels (52 km at 5 cm)
_KEY_OFFSET = 1 << (_KEY_BITS - 1)
MERGE_EVERY = 4_000_000  # pending voxel entries folded into the grid at once (bounds the buffer)


@dataclass
class PointCloud:
    """Points in world coordinates (metres) and their colours."""

    xyz: np.ndarray  # (N, 3) float32
    colors: np.ndarray | None  # (N, 3) uint8, or None


def load_points(path: str | Path) -> PointCloud:
    """A point cloud file (``.ply`` with x/y/z and optional red/green/blue; ``.npy``/``.pt`` ``(N, 3)``)."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"{path}: no such point cloud file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".ply":
            from plyfile import PlyData

            ply = PlyData.read(str(path))
            if "vertex" not in ply:
                raise SceneError(f"{path}: the PLY file has no 'vertex' element")
            v = ply["vertex"].data
            names = v.dtype.names or ()
            if not {"x", "y", "z"} <= set(names):
                raise SceneError(f"{path}: the PLY vertices have no x, y, z properties")
            xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
            colors = None
            if {"red", "green", "blue"} <= set(names):
                colors = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)
            return _checked(PointCloud(xyz, colors), path)
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not torch.is_tensor(obj):
                raise SceneError(f"{path}: expected one (N, 3) tensor, found {type(obj).__name__}")
            arr = obj.numpy()
        else:
            raise SceneError(f"{path}: unknown point cloud format {suffix!r}; use .ply, .npy or .pt")
    except SceneError:
        raise
    except Exception as e:  # the readers raise assorted errors on malformed files
        raise SceneError(f"{path}: cannot read the point cloud ({type(e).__name__}: {e})") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise SceneError(f"{path}: expected an (N, 3) xyz array, got shape {tuple(arr.shape)}")
    return _checked(PointCloud(arr.astype(np.float32), None), path)


def _checked(cloud: PointCloud, path: Path) -> PointCloud:
    if len(cloud.xyz) == 0:
        raise SceneError(f"{path}: the point cloud is empty")
    if not np.isfinite(cloud.xyz).all():
        raise SceneError(f"{path}: the point cloud holds non-finite coordinates")
    return cloud


def write_ply(
    path: str | Path,
    xyz: np.ndarray,
    colors: np.ndarray,
    *,
    scalars: dict[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> Path:
    """Binary little-endian PLY: ``(N, 3)`` float32 xyz, ``(N, 3)`` uint8 colours, optional per-point
    scalar properties (``{"label": (N,) int32, "score": (N,) float32}``), written atomically."""
    from plyfile import PlyData, PlyElement

    from ..files import atomic_write

    fields = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    scalars = scalars or {}
    fields += [(name, np.asarray(values).dtype.str.lstrip("<>=|")) for name, values in scalars.items()]
    vertex = np.empty(len(xyz), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colors[:, i]
    for name, values in scalars.items():
        vertex[name] = values
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    return atomic_write(path, ply.write, overwrite=overwrite)


class VoxelGrid:
    """Streaming voxel downsampling: each occupied voxel becomes one point at the mean of the points
    that fell into it, with their mean colour. Memory: the occupied voxels plus a bounded buffer."""

    def __init__(self, voxel_size: float, device: torch.device | str = "cpu") -> None:
        if not voxel_size > 0:
            raise ValueError(f"voxel size must be positive, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.device = torch.device(device)
        self.keys = torch.empty(0, dtype=torch.int64, device=self.device)  # (V,) sorted packed keys
        self.sums = torch.empty(0, 7, dtype=torch.float64, device=self.device)  # (V, 7): xyz, rgb, count
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_size = 0

    def _pack(self, ijk: torch.Tensor) -> torch.Tensor:
        """``(M, 3)`` int64 voxel indices -> ``(M,)`` packed keys."""
        if ijk.numel() and (ijk.abs().max() >= _KEY_OFFSET):
            raise SceneError(
                f"points lie more than {_KEY_OFFSET * self.voxel_size:.0f} m from the origin at voxel "
                f"size {self.voxel_size} m; check --depth-scale and the poses"
            )
        ijk = ijk + _KEY_OFFSET
        return (ijk[:, 0] << (2 * _KEY_BITS)) | (ijk[:, 1] << _KEY_BITS) | ijk[:, 2]

    @staticmethod
    def _reduce(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum rows of ``values`` ``(M, 7)`` with equal keys -> sorted unique keys and their sums."""
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        sums = torch.zeros(len(unique), values.shape[1], dtype=values.dtype, device=values.device)
        sums.index_add_(0, inverse, values)
        return unique, sums

    def add(self, xyz: torch.Tensor, rgb: torch.Tensor) -> None:
        """Add ``(M, 3)`` world points with ``(M, 3)`` colours in [0, 255]."""
        xyz = xyz.to(self.device, torch.float64)  # (M, 3)
        ijk = torch.floor(xyz / self.voxel_size).long()
        values = torch.cat([xyz, rgb.to(self.device, torch.float64), xyz.new_ones(len(xyz), 1)], dim=1)
        keys, sums = self._reduce(self._pack(ijk), values)  # one entry per voxel of this frame
        self._pending.append((keys, sums))
        self._pending_size += len(keys)
        if self._pending_size >= MERGE_EVERY:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = torch.cat([self.keys] + [k for k, _ in self._pending])
        sums = torch.cat([self.sums] + [s for _, s in self._pending])
        self.keys, self.sums = self._reduce(keys, sums)
        self._pending, self._pending_size = [], 0

    def points(self) -> PointCloud:
        """The voxel points, ordered by voxel key (the same for any order of :meth:`add` calls)."""
        self._merge()
        count = self.sums[:, 6:7]
        mean = self.sums[:, :6] / count
        xyz = mean[:, :3].float().cpu().numpy()
        colors = mean[:, 3:].round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return PointCloud(xyz, colors)


def voxel_points(
    frames: Iterable[tuple[torch.Tensor, np.ndarray, torch.Tensor]],
    voxel_size: float,
    device: torch.device | str = "cpu",
) -> PointCloud:
    """``(pts_world (3, M), rgb (H, W, 3) uint8, uv_color (2, M))`` per frame -> the voxel grid's points.

    Each item holds the back-projected world points of one depth frame, the colour frame and each
    point's pixel in it (the caller projects with the colour intrinsics).
    """
    grid = VoxelGrid(voxel_size, device)
    for pts_world, rgb, uv in frames:
        H, W = rgb.shape[:2]
        u = (uv[0] + 0.5).floor().clamp(0, W - 1).long().cpu()
        v = (uv[1] + 0.5).floor().clamp(0, H - 1).long().cpu()
        colors = torch.from_numpy(rgb)[v, u]  # (M, 3) uint8
        grid.add(pts_world.T, colors)
    cloud = grid.points()
    if len(cloud.xyz) == 0:
        raise SceneError("the depth frames hold no valid depth (all zero?); check --depth-scale and depth/")
    return cloud
