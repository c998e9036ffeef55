"""The toy RGB-D scene: geometry checked from the written files alone, pose conventions, layouts,
determinism, the occluder, the CLI, and that lseg-toy can segment the frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData

from langseg.cli import main
from langseg.data import DatasetError
from langseg.data.toy import TOY_LABELS
from langseg.data.toy_room import render_frame
from langseg.data.toy_scene import ToyScene, render_toy_scene

SIZE = (64, 48)
FRAMES = 8


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_scene") / "generic"
    return render_toy_scene(root, frames=FRAMES, size=SIZE, seed=5)


def read_depth(path, scale):
    img = Image.open(path)
    assert img.mode in ("I;16", "I"), img.mode  # 16-bit PNG
    return np.asarray(img).astype(np.float64) / scale


def backproject(depth, K, c2w):
    """Every pixel with depth -> ``(H*W, 3)`` world points (pixel centres at integer coordinates)."""
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    cam = np.stack([x, y, depth], axis=-1).reshape(-1, 3)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def on_box_surface(p, lo, hi, tol):
    """Points within ``tol`` of the boundary of the box ``[lo, hi]`` (and not farther than ``tol`` outside)."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    inside = np.all((p >= lo - tol) & (p <= hi + tol), axis=1)
    near_face = np.min(np.minimum(np.abs(p - lo), np.abs(p - hi)), axis=1) <= tol
    return inside & near_face


def quat_to_matrix(q):
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_files_of_the_generic_layout(generic):
    root = generic.root
    meta = json.loads((root / "scene.json").read_text())
    stems = [f"{k:06d}" for k in range(FRAMES)]
    assert meta["stems"] == stems and meta["depth_scale"] == 1000 and meta["size"] == list(SIZE)
    for stem in stems:
        color = Image.open(root / "color" / f"{stem}.png")
        assert color.mode == "RGB" and color.size == SIZE
        assert Image.open(root / "depth" / f"{stem}.png").size == SIZE
        pose = np.loadtxt(root / "pose" / f"{stem}.txt")
        assert pose.shape == (4, 4)
        R = pose[:3, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(R), 1.0)
    assert np.loadtxt(root / "intrinsics.txt").shape == (3, 3)
    assert (root / "labels.txt").read_text().split("\n")[:-1] == list(TOY_LABELS)
    assert generic.labels == TOY_LABELS
    ply = PlyData.read(str(root / "points.ply"))["vertex"]
    xyz = np.stack([ply["x"], ply["y"], ply["z"]], axis=1)
    labels = np.load(root / "gt_labels.npy")
    assert labels.dtype == np.int64 and labels.shape == (len(xyz),) and 3000 < len(xyz) < 20000
    assert np.array_equal(xyz, generic.points) and np.array_equal(labels, generic.point_labels)
    assert set(np.unique(labels)) == set(range(len(TOY_LABELS)))
    rgb = np.stack([ply["red"], ply["green"], ply["blue"]], axis=1)
    assert np.array_equal(rgb, generic.point_colors)


def test_depth_backprojects_onto_the_labelled_surfaces(generic):
    """Each depth pixel, back-projected with the written intrinsics and pose, lies on the room's box or
    on the occluder's, and ``labels_at`` there agrees with the rendered label image."""
    root = generic.root
    meta = json.loads((root / "scene.json").read_text())
    K = np.loadtxt(root / "intrinsics.txt")
    room, occ = meta["room"], meta["occluder"]
    agree = total = 0
    for stem in meta["stems"]:
        depth = read_depth(root / "depth" / f"{stem}.png", 1000.0)
        assert (depth > 0.05).all() and (depth < 6).all()  # a closed room: every pixel sees a surface
        p = backproject(depth, K, np.loadtxt(root / "pose" / f"{stem}.txt"))
        # within the millimetre rounding of the depth: half a pixel off in the intrinsics moves
        # obliquely seen points several millimetres off their plane
        tol = 0.0015
        on = on_box_surface(p, room["min"], room["max"], tol) | on_box_surface(p, occ["min"], occ["max"], tol)
        assert on.mean() > 0.99, (stem, on.mean())
        label = np.asarray(Image.open(root / "label" / f"{stem}.png")).ravel().astype(np.int64)
        agree += int((generic.labels_at(p) == label).sum())
        total += label.size
    assert agree / total > 0.97  # texel boundaries may differ by a millimetre of depth rounding


def test_gt_points_lie_on_surfaces_and_labels_at_ignores_empty_space(generic):
    meta = json.loads((generic.root / "scene.json").read_text())
    p = generic.points.astype(np.float64)
    room, occ = meta["room"], meta["occluder"]
    assert (
        on_box_surface(p, room["min"], room["max"], 1e-4) | on_box_surface(p, occ["min"], occ["max"], 1e-4)
    ).all()
    assert np.array_equal(generic.labels_at(p), generic.point_labels)
    offset = p + np.array([0.0, 0.0, 0.02]) * (p[:, 2:3] < 1e-3)  # floor points lifted 2 cm
    assert np.array_equal(generic.labels_at(offset), generic.point_labels)
    centre = np.array([[0.0, 0.0, 1.3], [0.1, -0.2, 0.8]])  # mid-air
    inside_occ = (np.array(occ["min"]) + np.array(occ["max"]))[None] / 2  # inside the panel
    assert (generic.labels_at(np.concatenate([centre, inside_occ])) == -1).all()


def test_pose_conventions_encode_the_same_poses(generic, tmp_path):
    w2c = render_toy_scene(tmp_path / "w2c", frames=FRAMES, size=SIZE, seed=5, pose="w2c", write_labels=False)
    traj = render_toy_scene(tmp_path / "traj", frames=FRAMES, size=SIZE, seed=5, pose="trajectory")
    assert not (tmp_path / "traj" / "pose").exists()
    rows = np.loadtxt(tmp_path / "traj" / "trajectory.txt")
    assert rows.shape == (FRAMES, 7)
    for k, stem in enumerate(generic.stems):
        c2w = np.loadtxt(generic.root / "pose" / f"{stem}.txt")
        assert np.allclose(np.loadtxt(w2c.root / "pose" / f"{stem}.txt") @ c2w, np.eye(4), atol=1e-9)
        q = rows[k, 3:]
        assert np.isclose(np.linalg.norm(q), 1.0) and q[3] >= 0
        assert np.allclose(rows[k, :3], c2w[:3, 3]) and np.allclose(quat_to_matrix(q), c2w[:3, :3], atol=1e-9)
        # the same depth and colour, whatever the pose files say
        for sub in ("depth", "color"):
            a = np.asarray(Image.open(generic.root / sub / f"{stem}.png"))
            assert np.array_equal(a, np.asarray(Image.open(traj.root / sub / f"{stem}.png")))
    assert np.allclose(w2c.poses_c2w, generic.poses_c2w)
    forward = generic.poses_c2w[:, :3, 2]  # OpenCV z axis in the world: looks down at the floor a little
    assert (forward[:, 2] < -0.1).all() and (forward[:, 2] > -0.8).all()


@pytest.mark.parametrize("layout", ["scannet", "replica"])
def test_scannet_and_replica_layouts(generic, tmp_path, layout):
    scene = render_toy_scene(tmp_path / layout, frames=FRAMES, size=SIZE, seed=5, layout=layout)
    root = scene.root
    assert scene.stems == tuple(str(k) for k in range(FRAMES))
    W, H = SIZE
    if layout == "scannet":
        Kc = np.loadtxt(root / "intrinsic" / "intrinsic_color.txt")
        Kd = np.loadtxt(root / "intrinsic" / "intrinsic_depth.txt")
        scale, dsize = 1000.0, (W // 2, H // 2)
    else:
        Kc = Kd = np.loadtxt(root / "intrinsics.txt")
        scale, dsize = 6553.5, SIZE
    assert Kc.shape == Kd.shape == (4, 4) and np.allclose(Kc[3], [0, 0, 0, 1])
    for k, stem in enumerate(scene.stems):
        color = Image.open(root / "color" / f"{stem}.jpg")
        assert color.format == "JPEG" and color.size == SIZE
        depth = read_depth(root / "depth" / f"{stem}.png", scale)
        assert depth.shape == (dsize[1], dsize[0])
        c2w = np.loadtxt(root / "pose" / f"{stem}.txt")
        assert np.allclose(c2w, generic.poses_c2w[k])
        # the depth, read with its own scale and intrinsics, lands where the generic depth does
        ref = read_depth(generic.root / "depth" / f"{generic.stems[k]}.png", 1000.0)
        if layout == "replica":
            assert np.abs(depth - ref).max() <= 0.5 / 1000 + 0.5 / 6553.5 + 1e-9
        p = backproject(depth, Kd[:3, :3], c2w)
        assert (scene.labels_at(p) >= 0).mean() > 0.99
        assert np.abs(np.median(depth) - np.median(ref)) < 0.05
        label = Image.open(root / "label" / f"{stem}.png")
        assert label.size == SIZE  # labels belong to the colour images


def test_the_occluder_hides_wall_points_in_some_frames(generic, tmp_path):
    """Points of the room (not of the occluder) that project into a frame but lie well behind its depth
    exist with the occluder and not without it; the pixels in front of them are on the occluder."""
    meta = json.loads((generic.root / "scene.json").read_text())
    occ = meta["occluder"]
    K = np.loadtxt(generic.root / "intrinsics.txt")

    def hidden_per_frame(scene):
        p = scene.points.astype(np.float64)
        room = ~on_box_surface(p, occ["min"], occ["max"], 1e-3)
        counts = []
        for stem in scene.stems:
            depth = read_depth(scene.root / "depth" / f"{stem}.png", 1000.0)
            c2w = np.loadtxt(scene.root / "pose" / f"{stem}.txt")
            cam = (p - c2w[:3, 3]) @ c2w[:3, :3]
            z = np.maximum(cam[:, 2], 1e-6)
            u = np.rint(K[0, 0] * cam[:, 0] / z + K[0, 2]).astype(int)
            v = np.rint(K[1, 1] * cam[:, 1] / z + K[1, 2]).astype(int)
            inside = room & (cam[:, 2] > 0) & (u >= 0) & (u < SIZE[0]) & (v >= 0) & (v < SIZE[1])
            d = depth[np.clip(v, 0, SIZE[1] - 1), np.clip(u, 0, SIZE[0] - 1)]
            behind = inside & (z > d + 0.3)
            if behind.any():  # what hides them is the occluder
                front = backproject(depth, K, c2w).reshape(SIZE[1], SIZE[0], 3)[v[behind], u[behind]]
                assert on_box_surface(front, occ["min"], occ["max"], 0.01).mean() > 0.99
            counts.append(int(behind.sum()))
        return counts

    with_occ = hidden_per_frame(generic)
    assert max(with_occ) > 50 and meta["occlusion"]["points_hidden_in_some_frame"] >= max(with_occ)
    bare = render_toy_scene(tmp_path / "bare", frames=FRAMES, size=SIZE, seed=5, occluder=False)
    assert sum(hidden_per_frame(bare)) == 0
    assert json.loads((bare.root / "scene.json").read_text())["occluder"] is None


def test_determinism_and_seed(generic, tmp_path):
    again = render_toy_scene(tmp_path / "again", frames=FRAMES, size=SIZE, seed=5)
    other = render_toy_scene(tmp_path / "other", frames=FRAMES, size=SIZE, seed=6)
    for name in ("color/000002.png", "depth/000002.png", "label/000002.png", "points.ply", "gt_labels.npy"):
        assert (generic.root / name).read_bytes() == (again.root / name).read_bytes(), name
    assert (generic.root / "color/000002.png").read_bytes() != (other.root / "color/000002.png").read_bytes()
    # the seed changes the textures, not the geometry
    assert (generic.root / "depth/000002.png").read_bytes() == (other.root / "depth/000002.png").read_bytes()
    # rays go in blocks; the block size changes nothing
    faces, K, c2w = generic._faces, generic.intrinsics, generic.poses_c2w[2]
    whole = render_frame(faces, K, c2w, *SIZE, ss=2)
    blocks = render_frame(faces, K, c2w, *SIZE, ss=2, block=100)
    assert all(np.array_equal(a, b) for a, b in zip(whole, blocks))
    loaded = ToyScene.load(generic.root)
    assert np.array_equal(loaded.points, generic.points) and np.array_equal(
        loaded.point_labels, generic.point_labels
    )
    assert np.allclose(loaded.poses_c2w, generic.poses_c2w) and np.allclose(
        loaded.intrinsics, generic.intrinsics
    )
    assert np.array_equal(loaded.labels_at(generic.points), generic.point_labels)


def test_cli_writes_refuses_and_overwrites(tmp_path, capsys):
    out = tmp_path / "scene"
    assert main(["data", "toy-scene", "--out", str(out), "--frames", "3", "--size", "48x32"]) == 0
    assert "3 frames" in capsys.readouterr().out
    before = (out / "color" / "000000.png").read_bytes()
    (out / "notes.txt").write_text("mine")
    assert (
        main(["data", "toy-scene", "--out", str(out), "--frames", "2", "--size", "48x32", "--seed", "1"]) == 2
    )
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "color" / "000000.png").read_bytes() == before
    argv = ["data", "toy-scene", "--out", str(out), "--frames", "2", "--size", "48x32", "--seed", "1"]
    assert main([*argv, "--overwrite", "--pose", "trajectory"]) == 0
    assert (out / "color" / "000000.png").read_bytes() != before
    assert not (out / "color" / "000002.png").exists() and not (out / "pose").exists()  # stale frames gone
    assert (out / "notes.txt").read_text() == "mine"  # files it did not write are kept
    assert json.loads((out / "scene.json").read_text())["frames"] == 2
    # a scene.json naming files outside the folder does not make --overwrite delete them
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    meta = json.loads((out / "scene.json").read_text())
    meta["files"] += [str(victim), "../victim.txt"]
    (out / "scene.json").write_text(json.dumps(meta))
    assert main([*argv, "--overwrite"]) == 0 and victim.read_text() == "keep"
    capsys.readouterr()
    for bad, words in (
        (["--size", "48by32"], "--size"),
        (["--size", "8x8"], "out of range"),
        (["--frames", "0"], "frame"),
    ):
        assert main(["data", "toy-scene", "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
    with pytest.raises(DatasetError, match="layout"):
        render_toy_scene(tmp_path / "bad", layout="tum")
    assert not (tmp_path / "bad").exists()


def test_lseg_toy_segments_the_frames(tmp_path):
    """The bundled toy model must see the classes in the rendered frames (fused 3D maps depend on it)."""
    import torch

    import langseg
    from langseg.metrics import confusion_matrix, miou

    scene = render_toy_scene(tmp_path / "s", frames=4, size=(160, 120), seed=0)
    predictor = langseg.LSegPredictor(langseg.load_model("lseg-toy"), device="cpu")
    conf = torch.zeros(5, 5, dtype=torch.int64)
    for stem in scene.stems:
        pred = predictor.predict(Image.open(scene.root / "color" / f"{stem}.png").convert("RGB")).labels
        target = np.asarray(Image.open(scene.root / "label" / f"{stem}.png")).astype(np.int64)
        conf += confusion_matrix(pred.astype(np.int64), target, 5, ignore_index=255).cpu()
    assert miou(conf)[0] > 0.85
