"""Scenes: pinhole geometry against hand-built cases, scene folders and their errors, fusion, query."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from langseg.cli import main
from langseg.scenes import SceneError, open_scene
from langseg.scenes.geometry import (
    camera_to_pixels,
    camera_to_world,
    depth_to_camera,
    feature_pixels,
    scale_intrinsics,
    visible_points,
    world_to_camera,
)
from langseg.scenes.layouts import quaternion_matrix

K_TEST = np.array([[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1]])  # a 32 x 24 camera


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world pose of an OpenCV camera at ``eye`` looking at ``target`` (z up world)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def render_planes(T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]):
    """Ray-cast a floor (z = 0) and a wall (x = 2): depth (H, W) metres and colour (H, W, 3) uint8.

    The floor is a blue/white checker of 0.5 m squares, the wall red with green stripes."""
    W, H = size
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    rays = rays_cam @ R.T  # world directions per unit camera depth
    with np.errstate(divide="ignore", invalid="ignore"):
        d_floor = np.where(rays[..., 2] < -1e-9, -t[2] / rays[..., 2], np.inf)
        d_wall = np.where(rays[..., 0] > 1e-9, (2.0 - t[0]) / rays[..., 0], np.inf)
    depth = np.minimum(d_floor, d_wall)
    hit = t + rays * np.where(np.isfinite(depth), depth, 0)[..., None]
    color = np.zeros((H, W, 3), np.uint8)
    floor = d_floor <= d_wall
    checker = (np.floor(hit[..., 0] * 2) + np.floor(hit[..., 1] * 2)) % 2 == 0
    color[floor & checker] = (40, 60, 220)
    color[floor & ~checker] = (240, 240, 240)
    stripes = np.floor(hit[..., 2] * 4) % 2 == 0
    color[~floor & stripes] = (220, 40, 40)
    color[~floor & ~stripes] = (40, 200, 60)
    depth = np.where(np.isfinite(depth) & (depth < 30), depth, 0.0)
    return depth, color


def camera_path(frames: int) -> list[np.ndarray]:
    """Cameras on an arc around (0, 0, 1), looking at the wall and the floor in front of it."""
    poses = []
    for i in range(frames):
        a = math.radians(-25 + 50 * i / max(frames - 1, 1))
        eye = (-0.3 * math.cos(a), -0.6 * math.sin(a), 1.0)
        poses.append(look_at(eye, (2.0, 0.5 * math.sin(a), 0.4)))
    return poses


def make_planes_scene(
    root: Path, *, frames: int = 6, pose: str = "c2w", size: tuple[int, int] = (32, 24)
) -> tuple[Path, list[np.ndarray]]:
    """A generic-layout scene of :func:`render_planes` frames; returns its folder and the c2w poses."""
    for sub in ("color", "depth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    poses = camera_path(frames)
    np.savetxt(root / "intrinsics.txt", K_TEST)
    rows = []
    for i, T in enumerate(poses):
        depth, color = render_planes(T, K_TEST, size)
        stem = f"{i:06d}"
        Image.fromarray(color).save(root / "color" / f"{stem}.png")
        Image.fromarray((depth * 1000 + 0.5).astype(np.uint16)).save(root / "depth" / f"{stem}.png")
        if pose == "trajectory":
            rows.append(list(T[:3, 3]) + list(matrix_quaternion(T[:3, :3])))
        else:
            (root / "pose").mkdir(exist_ok=True)
            np.savetxt(root / "pose" / f"{stem}.txt", T if pose == "c2w" else np.linalg.inv(T))
    if rows:
        np.savetxt(root / "trajectory.txt", np.array(rows))
    return root, poses


def matrix_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation -> ``(qx, qy, qz, qw)`` (a test-side inverse of the reader's conversion)."""
    w = math.sqrt(max(0.0, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    return np.array([x, y, z, w])


# ------------------------------------------------------------------------------------ geometry
def test_point_lands_on_its_pixel_at_its_depth():
    T = look_at((0, 0, 1), (2, 0, 1))  # looking along +x: camera x = -world y, camera y = -world z
    K = torch.tensor(K_TEST, dtype=torch.float32)
    # 2 m ahead, 0.5 m to the camera's right (world -y), 0.25 m below (world -z); points are columns
    pts = torch.tensor([[2.0], [-0.5], [0.75]])
    cam = world_to_camera(pts, torch.tensor(T))
    assert torch.allclose(cam, torch.tensor([[0.5], [0.25], [2.0]]), atol=1e-6)
    uv = camera_to_pixels(cam, K)
    assert torch.allclose(uv, torch.tensor([[15.5 + 20 * 0.25], [11.5 + 20 * 0.125]]), atol=1e-5)
    assert torch.allclose(camera_to_world(cam, torch.tensor(T)), pts, atol=1e-6)


def test_depth_backprojects_to_the_surface_it_saw():
    T = camera_path(3)[1]
    depth, _ = render_planes(T, K_TEST, (32, 24))
    cam = depth_to_camera(torch.tensor(depth, dtype=torch.float32), torch.tensor(K_TEST))
    world = camera_to_world(cam, torch.tensor(T)).T.numpy()  # (M, 3)
    on_floor = np.abs(world[:, 2]) < 1e-4
    on_wall = np.abs(world[:, 0] - 2) < 1e-4
    assert len(world) == (depth > 0).sum() and on_floor.any() and on_wall.any()
    assert (on_floor | on_wall).all()


def test_intrinsics_rescaled_to_the_feature_map():
    K = torch.tensor(K_TEST, dtype=torch.float32)
    half = scale_intrinsics(K, (32, 24), (16, 12))
    assert torch.allclose(half, torch.tensor([[10.0, 0, 7.5], [0, 10.0, 5.5], [0, 0, 1]]))
    # the centre of colour pixel (16, 12) is the corner between feature pixels 7 and 8 -> rounds up;
    # a point projected with the half-size intrinsics lands on the same feature pixel
    uv = torch.tensor([[16.0, 0.0, 31.0, 9.2], [12.0, 0.0, 23.0, 3.7]])
    flat = feature_pixels(uv, (32, 24), (16, 12))
    assert flat.tolist() == [6 * 16 + 8, 0, 11 * 16 + 15, 2 * 16 + 4]
    cam = torch.tensor([[(9.2 - 15.5) / 20], [(3.7 - 11.5) / 20], [1.0]])
    u, v = camera_to_pixels(cam, half)[:, 0].tolist()
    assert (round(v) * 16 + round(u)) == flat[3]


def test_visibility_frustum_margin_and_depth_test():
    T = torch.tensor(look_at((0, 0, 1), (2, 0, 1)))
    K = torch.tensor(K_TEST, dtype=torch.float32)
    pts = torch.tensor(
        [
            [2.0, 0.0, 1.0],  # centre, 2 m
            [-2.0, 0.0, 1.0],  # behind the camera
            [2.0, -5.0, 1.0],  # outside the frame
            [2.0, -0.7, 1.0],  # u = 15.5 + 7 = 22.5 -> pixel 23: 8 pixels (24..31) to its right
            [1.0, 0.0, 1.0],  # in front of the surface: occluder-side, 1 m
        ]
    ).T  # (3, 5)
    vis = visible_points(pts, T, K, (32, 24))
    assert sorted(vis.index.tolist()) == [0, 3, 4] and vis.in_view == 3
    assert sorted(visible_points(pts, T, K, (32, 24), margin=8).index.tolist()) == [0, 3, 4]
    assert sorted(visible_points(pts, T, K, (32, 24), margin=9).index.tolist()) == [0, 4]
    depth = torch.full((24, 32), 2.0)  # a wall at 2 m: the point at 1 m is not on a seen surface
    vis = visible_points(pts, T, K, (32, 24), depth=depth)
    assert sorted(vis.index.tolist()) == [0, 3] and vis.in_view == 3
    assert vis.z.tolist() == pytest.approx([2.0, 2.0])
    depth[:] = 0  # no measurements: nothing passes
    assert len(visible_points(pts, T, K, (32, 24), depth=depth).index) == 0
    depth[:] = 1.8  # absolute tolerance 0.1 m fails, relative 0.25 passes
    assert len(visible_points(pts, T, K, (32, 24), depth=depth, tolerance=0.1, relative=False).index) == 0
    assert sorted(visible_points(pts, T, K, (32, 24), depth=depth).index.tolist()) == [0, 3]
    # a depth map of another size with its own intrinsics (ScanNet): the same points pass
    half_K = scale_intrinsics(K, (32, 24), (16, 12))
    half = torch.full((12, 16), 2.0)
    vis = visible_points(pts, T, K, (32, 24), depth=half, K_depth=half_K)
    assert sorted(vis.index.tolist()) == [0, 3]


def test_quaternion_rows_give_the_pose_back():
    for T in camera_path(4):
        assert np.allclose(quaternion_matrix(matrix_quaternion(T[:3, :3])), T[:3, :3], atol=1e-9)


# ------------------------------------------------------------------------------------ layouts
def test_pose_conventions_read_into_camera_to_world(tmp_path):
    _, poses = make_planes_scene(tmp_path / "c2w", frames=3)
    make_planes_scene(tmp_path / "w2c", frames=3, pose="w2c")
    make_planes_scene(tmp_path / "traj", frames=3, pose="trajectory")
    for name, flag in (("c2w", "c2w"), ("w2c", "w2c"), ("traj", "c2w")):
        scene = open_scene(tmp_path / name, pose=flag)
        got = [f.T_world_cam for f in scene.frames]
        assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(got, poses)), name
    assert [f.stem for f in open_scene(tmp_path / "c2w", every=2).frames] == ["000000", "000002"]


def _error(tmp_path: Path, capsys, *extra: str) -> str:
    code = main(
        ["scene", "fuse", str(tmp_path / "s"), "--out", str(tmp_path / "m"), "--device", "cpu", *extra]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "break_it, needle",
    [
        (lambda s: (s / "pose" / "000001.txt").unlink(), "pose/000001.txt: no such file"),
        (lambda s: (s / "intrinsics.txt").unlink(), "intrinsics.txt: no such file"),
        (lambda s: (s / "depth" / "000002.png").unlink(), "depth/000002.png: no such file"),
        (
            lambda s: Image.fromarray(np.zeros((12, 16), np.uint16)).save(s / "depth" / "000002.png"),
            "depth/000002.png: depth frame is 16x12, expected 32x24",
        ),
        (
            lambda s: np.savetxt(s / "pose" / "000001.txt", np.diag([2.0, 1, 1, 1])),
            "pose/000001.txt: the rotation is not orthonormal",
        ),
        (
            lambda s: (s / "pose" / "000001.txt").write_text("1 2 3\n"),
            "pose/000001.txt: expected a 3x3 or 4x4",
        ),
        (lambda s: (s / "intrinsics.txt").write_text("0 0 0 0 0 0 0 0 1"), "intrinsics.txt: not pinhole"),
    ],
)
def test_bad_scene_inputs_give_one_line_errors_naming_the_file(tmp_path, capsys, break_it, needle):
    root, _ = make_planes_scene(tmp_path / "s", frames=3)
    break_it(root)
    assert needle in _error(tmp_path, capsys)
    assert not (tmp_path / "m").exists()


def test_nonfinite_poses_are_skipped_and_counted(tmp_path):
    root, _ = make_planes_scene(tmp_path / "s", frames=4)
    (root / "pose" / "000001.txt").write_text("-inf -inf -inf -inf\n" * 4)
    scene = open_scene(root)
    assert [f.stem for f in scene.frames] == ["000000", "000002", "000003"]
    assert scene.skipped_poses == ["000001"] and scene.total_frames == 4


def test_scannet_depth_size_comes_from_the_first_depth_frame_read(tmp_path):
    root, _ = make_planes_scene(tmp_path / "s", frames=3)
    (root / "intrinsic").mkdir()
    for name in ("intrinsic_color.txt", "intrinsic_depth.txt"):
        np.savetxt(root / "intrinsic" / name, np.pad(K_TEST, ((0, 1), (0, 1))) + np.diag([0, 0, 0, 1.0]))
    (root / "pose" / "000000.txt").write_text("-inf -inf -inf -inf\n" * 4)  # left out, like ScanNet's
    (root / "depth" / "000000.png").unlink()  # so the first frame has no depth to set the size
    scene = open_scene(root)
    assert scene.layout == "scannet" and scene.depth_size == (32, 24) and len(scene.frames) == 2
    Image.fromarray(np.zeros((12, 16), np.uint16)).save(root / "depth" / "000002.png")
    with pytest.raises(SceneError, match=r"depth/000002.png: depth frame is 16x12, expected 32x24$"):
        open_scene(root)


def test_trajectory_errors_name_the_row(tmp_path, capsys):
    root, _ = make_planes_scene(tmp_path / "s", frames=3, pose="trajectory")
    lines = (root / "trajectory.txt").read_text().splitlines()
    lines[1] = "0 0 0 0 0 0 2"  # quaternion of length 2
    (root / "trajectory.txt").write_text("\n".join(lines) + "\n")
    assert "trajectory.txt:2: the quaternion has length 2" in _error(tmp_path, capsys)
    (root / "trajectory.txt").write_text("\n".join(lines[:1]) + "\n")
    assert "trajectory.txt: 1 poses for 3 colour frames" in _error(tmp_path, capsys)
