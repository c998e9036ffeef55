"""RGB-D sequences on disk -> :class:`SceneInput`: frames, camera poses and intrinsics, checked.

Every reader converts once, here, into the one internal convention: ``T_world_cam`` is a 4x4
camera-to-world matrix of an OpenCV camera (x right, y down, z forward), in metres; intrinsics are
3x3 in pixels of the image they belong to (pixel centres at integer coordinates). Problems are
raised as :class:`SceneError` with one line naming the file.

Layouts (``layout="auto"`` picks by the files present):

- ``generic``: ``color/<stem>.{png,jpg}``, ``depth/<stem>.png`` (16-bit, same size as the colour
  frame), ``pose/<stem>.txt`` (4x4) or ``trajectory.txt``, ``intrinsics.txt`` (3x3 or 4x4) and
  optionally ``intrinsic/<stem>.txt`` per frame. Depth scale 1000 (millimetres).
- ``scannet``: OpenScene's ScanNet export: ``color/<i>.jpg``, ``depth/<i>.png`` (mm),
  ``pose/<i>.txt`` (camera-to-world), ``intrinsic/intrinsic_color.txt`` and
  ``intrinsic/intrinsic_depth.txt`` (4x4); colour and depth may differ in size.
- ``replica``: OpenScene's Replica frames: files as ``generic`` or ``scannet``, depth scale 6553.5.
- a trajectory file (any layout without ``pose/``): one ``x y z qx qy qz qw`` row per frame in frame
  order (scalar-last quaternion, TUM/VLMaps style; an 8-column TUM row starts with a timestamp).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from ..errors import LangsegError

log = logging.getLogger(__name__)

Layout = Literal["auto", "generic", "scannet", "replica"]
PoseConvention = Literal["c2w", "w2c"]
LAYOUTS = ("auto", "generic", "scannet", "replica")
POSES = ("c2w", "w2c")
DEPTH_SCALES = {"generic": 1000.0, "scannet": 1000.0, "replica": 6553.5}  # raw units per metre
COLOR_SUFFIXES = (".png", ".jpg", ".jpeg")
TRAJECTORY_NAME = "trajectory.txt"
ORTHONORMAL_TOL = 1e-3  # max |R R^T - I| of a pose rotation (text files keep ~6 digits)


class SceneError(LangsegError, ValueError):
    """A scene folder or one of its files cannot be used (the message names the file)."""


@dataclass(frozen=True)
class Frame:
    """One RGB-D frame, its pose and its intrinsics."""

    stem: str  # the name frames are matched by
    color: Path
    depth: Path | None  # None: no depth (frustum test only)
    T_world_cam: np.ndarray  # (4, 4) float64 camera-to-world, OpenCV axes
    K_color: np.ndarray  # (3, 3) float64, pixels of the colour frame
    K_depth: np.ndarray | None  # (3, 3) float64, pixels of the depth frame


@dataclass
class SceneInput:
    """A checked RGB-D sequence: the frames to use and what was left out."""

    root: Path
    name: str
    layout: str  # the layout that was read (never "auto")
    depth_scale: float  # raw depth units per metre
    pose: str  # the convention the pose files were read with
    color_size: tuple[int, int]  # (W, H) of the colour frames
    depth_size: tuple[int, int] | None  # (W, H) of the depth frames, None without depth
    frames: list[Frame]
    skipped_poses: list[str] = field(default_factory=list)  # stems with non-finite poses (left out)
    total_frames: int = 0  # frames found before --every and pose skipping


def natural_key(stem: str) -> tuple:
    """``"frame10"`` after ``"frame9"``: digit runs compare as numbers."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem))


def read_matrix(path: Path, *, allow_nonfinite: bool = False) -> np.ndarray:
    """A 3x3 or 4x4 matrix from a whitespace/comma separated text file, as float64."""
    if not path.is_file():
        raise SceneError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
        values = [float(v) for v in text.replace(",", " ").split()]
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SceneError(f"{path}: not a matrix of numbers ({e})") from None
    n = len(values)
    if n not in (9, 16):
        raise SceneError(f"{path}: expected a 3x3 or 4x4 matrix (9 or 16 numbers), found {n} numbers")
    m = np.array(values, dtype=np.float64).reshape(3 if n == 9 else 4, -1)
    if not allow_nonfinite and not np.isfinite(m).all():
        raise SceneError(f"{path}: the matrix holds non-finite values (nan/inf)")
    return m


def read_intrinsics(path: Path) -> np.ndarray:
    """``(3, 3)`` pinhole intrinsics from a 3x3 or 4x4 file; focal lengths must be positive."""
    m = read_matrix(path)
    K = m[:3, :3].copy()
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1) > 1e-6 or np.abs(K[2, :2]).max() > 1e-6:
        raise SceneError(
            f"{path}: not pinhole intrinsics (expected [[fx 0 cx] [0 fy cy] [0 0 1]] with fx, fy > 0)"
        )
    return K


def check_rigid(T: np.ndarray, where: str) -> None:
    """Raise :class:`SceneError` unless ``T`` is a rigid 4x4 transform (orthonormal, right-handed)."""
    if T.shape != (4, 4):
        raise SceneError(f"{where}: a pose must be a 4x4 matrix, got {T.shape[0]}x{T.shape[1]}")
    if np.abs(T[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise SceneError(f"{where}: the last row of a pose must be 0 0 0 1, got {T[3].tolist()}")
    R = T[:3, :3]
    err = float(np.abs(R @ R.T - np.eye(3)).max())
    if err > ORTHONORMAL_TOL or np.linalg.det(R) < 0:
        raise SceneError(
            f"{where}: the rotation is not orthonormal (max |R R^T - I| = {err:.3g}, "
            f"det = {np.linalg.det(R):.3g}); is this a pose file?"
        )


def to_world_cam(T: np.ndarray, pose: str) -> np.ndarray:
    """A pose as written (``c2w`` or ``w2c``) -> ``T_world_cam`` (camera-to-world)."""
    if pose == "c2w":
        return T
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def quaternion_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(qx, qy, qz, qw)`` (scalar last) -> ``(3, 3)`` rotation."""
    x, y, z, w = q_xyzw / np.linalg.norm(q_xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def read_trajectory(path: Path) -> list[np.ndarray]:
    """``x y z qx qy qz qw`` rows (or TUM's ``t x y z qx qy qz qw``) -> one 4x4 matrix per row.

    Blank lines and ``#`` comments are skipped. A non-finite row gives a matrix of NaN (skipped
    later, like ScanNet's ``-inf`` poses); a quaternion far from unit length is an error.
    """
    if not path.is_file():
        raise SceneError(f"{path}: no such file")
    poses = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: cannot read the trajectory ({e})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = np.array([float(v) for v in line.replace(",", " ").split()], dtype=np.float64)
        except ValueError:
            raise SceneError(f"{path}:{number}: not a row of numbers: {line.strip()[:60]!r}") from None
        if len(row) == 8:
            row = row[1:]  # TUM: the first column is a timestamp
        if len(row) != 7:
            raise SceneError(
                f"{path}:{number}: expected 7 numbers 'x y z qx qy qz qw' (or 8 with a leading "
                f"timestamp), found {len(row)}"
            )
        T = np.full((4, 4), np.nan)
        if np.isfinite(row).all():
            norm = float(np.linalg.norm(row[3:]))
            if abs(norm - 1) > 1e-2:
                raise SceneError(
                    f"{path}:{number}: the quaternion has length {norm:.4g}, not 1; "
                    "rows must be 'x y z qx qy qz qw' (scalar last)"
                )
            T = np.eye(4)
            T[:3, :3] = quaternion_matrix(row[3:])
            T[:3, 3] = row[:3]
        poses.append(T)
    if not poses:
        raise SceneError(f"{path}: the trajectory has no rows")
    return poses


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError) as e:
        raise SceneError(f"{path}: not a readable image ({e})") from None


def detect_layout(root: Path) -> str:
    """The layout of a scene folder, from the files it holds."""
    if (root / "intrinsic" / "intrinsic_color.txt").is_file():
        return "scannet"
    return "generic"


def open_scene(
    root: str | Path,
    *,
    layout: Layout = "auto",
    pose: PoseConvention = "c2w",
    depth_scale: float | None = None,
    every: int = 1,
    trajectory: str | Path | None = None,
    use_depth: bool = True,
) -> SceneInput:
    """Read and check a scene folder (poses, intrinsics, depth sizes) without decoding any pixels.

    ``pose`` says how the pose files are written (never guessed); ``every`` keeps every N-th frame;
    ``trajectory`` names a pose file of ``x y z qx qy qz qw`` rows (default: ``pose/`` if present,
    else ``trajectory.txt``). Frames whose pose holds non-finite values are left out and listed in
    ``skipped_poses``.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise SceneError(f"unknown scene layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if pose not in POSES:
        raise SceneError(f"unknown pose convention {pose!r}; expected c2w or w2c")
    if every < 1:
        raise SceneError(f"--every must be >= 1, got {every}")
    files, name, scale = _layout_of(root, layout, depth_scale)
    colors = _color_frames(root / "color")
    poses = _read_poses(root, [p.stem for p in colors], trajectory)
    depth_dir = root / "depth" if use_depth and (root / "depth").is_dir() else None
    if use_depth and depth_dir is None:
        log.warning("%s: no depth/ folder; only the frustum test applies (noisier)", root)
    check = _FrameCheck.of(root, colors[0], *_read_intrinsics(root, files), depth_dir, files == "scannet")
    frames: list[Frame] = []
    skipped: list[str] = []
    for i in range(0, len(colors), every):
        if not np.isfinite(poses[i]).all():
            skipped.append(colors[i].stem)
            continue
        check_rigid(poses[i], poses_where(root, colors[i].stem, trajectory, i))
        frames.append(check.frame(colors[i], to_world_cam(poses[i], pose)))
    if not frames:
        raise SceneError(f"{root}: no usable frames ({len(skipped)} with non-finite poses)")
    return SceneInput(
        root=root,
        name=root.resolve().name,
        layout=name,
        depth_scale=scale,
        pose=pose,
        color_size=check.color_size,
        depth_size=check.depth_size if depth_dir is not None else None,
        frames=frames,
        skipped_poses=skipped,
        total_frames=len(colors),
    )


@dataclass
class _FrameCheck:
    """What every frame of a scene must match (the first frame's sizes), and its intrinsics."""

    root: Path
    first: Path  # the first colour frame
    color_size: tuple[int, int]  # (W, H) of every colour frame
    K_color: np.ndarray  # (3, 3) unless intrinsic/<stem>.txt gives a frame its own
    K_depth: np.ndarray | None  # (3, 3); None: the colour intrinsics (same-size frames)
    depth_dir: Path | None  # None: no depth
    depth_size: tuple[int, int] | None  # (W, H) of every depth frame; None: the first one read sets it
    scannet: bool  # depth frames have their own size (ScanNet), not the colour frame's

    @classmethod
    def of(cls, root, first, K_color, K_depth, depth_dir, scannet) -> _FrameCheck:
        color_size = _image_size(first)
        depth_size = None if depth_dir is not None and scannet else color_size
        if depth_dir is not None and scannet and (depth_dir / f"{first.stem}.png").is_file():
            depth_size = _image_size(depth_dir / f"{first.stem}.png")
        return cls(root, first, color_size, K_color, K_depth, depth_dir, depth_size, scannet)

    def frame(self, color: Path, T_world_cam: np.ndarray) -> Frame:
        """One frame, after checking its sizes and that its depth frame exists."""
        stem, size = color.stem, _image_size(color)
        if size != self.color_size:
            W, H = self.color_size
            raise SceneError(f"{color}: {size[0]}x{size[1]}, but {self.first.name} is {W}x{H}")
        per_frame = self.root / "intrinsic" / f"{stem}.txt"
        Kc = read_intrinsics(per_frame) if per_frame.is_file() else self.K_color
        if self.depth_dir is None:
            return Frame(stem, color, None, T_world_cam, Kc, None)
        depth = self.depth_dir / f"{stem}.png"
        if not depth.is_file():
            raise SceneError(f"{depth}: no such file (every colour frame needs its depth frame)")
        dsize, want = _image_size(depth), self.depth_size
        if want is not None and dsize != want:
            raise SceneError(
                f"{depth}: depth frame is {dsize[0]}x{dsize[1]}, expected {want[0]}x{want[1]}"
                + (" (the colour frame's size)" if not self.scannet else "")
            )
        self.depth_size = dsize
        Kd = self.K_depth if self.K_depth is not None else Kc
        return Frame(stem, color, depth, T_world_cam, Kc, Kd)


def _layout_of(root: Path, layout: str, depth_scale: float | None) -> tuple[str, str, float]:
    """-> (the layout the files are in, the layout to read them as, the depth scale)."""
    if not root.is_dir():
        raise SceneError(f"{root}: no such scene folder")
    files = detect_layout(root)
    name = layout if layout != "auto" else files
    if name == "scannet" and files != "scannet":
        raise SceneError(f"{root / 'intrinsic' / 'intrinsic_color.txt'}: no such file (ScanNet layout)")
    scale = float(depth_scale) if depth_scale is not None else DEPTH_SCALES[name]
    if not scale > 0:
        raise SceneError(f"--depth-scale must be positive, got {depth_scale}")
    return files, name, scale


def _color_frames(color_dir: Path) -> list[Path]:
    """The colour frames of a scene, in natural order of their stems (which must differ)."""
    if not color_dir.is_dir():
        raise SceneError(f"{color_dir}: no such folder (a scene needs color/, depth/, pose/ and intrinsics)")
    colors = sorted(
        (p for p in color_dir.iterdir() if p.suffix.lower() in COLOR_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: natural_key(p.stem),
    )
    if not colors:
        raise SceneError(f"{color_dir}: no colour frames ({', '.join(COLOR_SUFFIXES)})")
    stems = [p.stem for p in colors]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise SceneError(f"{color_dir}: two colour frames share the name {dup!r}")
    return colors


def poses_where(root: Path, stem: str, trajectory: str | Path | None, index: int) -> str:
    """The file (and row) a frame's pose came from, for error messages."""
    traj = _trajectory_path(root, trajectory)
    if traj is not None:
        return f"{traj} (row {index + 1})"
    return str(root / "pose" / f"{stem}.txt")


def _trajectory_path(root: Path, trajectory: str | Path | None) -> Path | None:
    if trajectory is not None:
        return (
            Path(trajectory)
            if Path(trajectory).is_absolute() or Path(trajectory).exists()
            else root / trajectory
        )
    if (root / "pose").is_dir():
        return None
    return root / TRAJECTORY_NAME


def _read_poses(root: Path, stems: list[str], trajectory: str | Path | None) -> list[np.ndarray]:
    traj = _trajectory_path(root, trajectory)
    if traj is None:
        return [read_matrix(root / "pose" / f"{s}.txt", allow_nonfinite=True) for s in stems]
    if not traj.is_file():
        raise SceneError(f"{traj}: no such file (a scene needs pose/<frame>.txt or a trajectory file)")
    poses = read_trajectory(traj)
    if len(poses) != len(stems):
        raise SceneError(
            f"{traj}: {len(poses)} poses for {len(stems)} colour frames; one row per frame is needed"
        )
    return poses


def _read_intrinsics(root: Path, files: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(K_color, K_depth)``; ``K_depth`` None means the colour intrinsics (same-size frames)."""
    if files == "scannet":
        return (
            read_intrinsics(root / "intrinsic" / "intrinsic_color.txt"),
            read_intrinsics(root / "intrinsic" / "intrinsic_depth.txt"),
        )
    path = root / "intrinsics.txt"
    if not path.is_file():
        raise SceneError(f"{path}: no such file (3x3 or 4x4 camera intrinsics)")
    return read_intrinsics(path), None
