"""End to end on the toy room: fuse lseg-toy features, query the toy labels, score points against the
renderer's ground truth; the depth test and the pose flags must matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from langseg.cli import main
from langseg.data.toy_scene import ToyScene, render_toy_scene
from langseg.metrics import confusion_matrix, miou
from langseg.scenes import Scene

FRAMES = 12


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return render_toy_scene(tmp_path_factory.mktemp("toy") / "c2w", frames=FRAMES).root


def _fuse(scene: Path, out: Path, *extra: str) -> int:
    return main(["scene", "fuse", str(scene), "--out", str(out), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory) -> Path:
    """The c2w scene fused onto its ground-truth points."""
    out = tmp_path_factory.mktemp("reference") / "map"
    assert _fuse(toy, out, "--points", "points.ply") == 0
    return out


def point_miou(scene_root: Path, map_root: Path) -> float:
    """Mean IoU of the map's labels for the toy classes against the renderer's per-point truth
    (points no frame saw count as wrong)."""
    truth = ToyScene.load(scene_root)
    fused = Scene.load(map_root)
    pred = fused.query(list(truth.labels)).labels
    target = truth.labels_at(fused.xyz)
    K = len(truth.labels)
    pred = np.where(pred < 0, (target + 1) % K, pred)
    conf = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), K, ignore_index=-1)
    assert int(conf.sum()) > 0.9 * len(target)  # nearly every voxel lies on a labelled surface
    return miou(conf)[0]


def test_toy_room_map_scores_and_needs_the_depth_test(toy, tmp_path, capsys):
    assert _fuse(toy, tmp_path / "map") == 0
    assert "sanity check failed" not in capsys.readouterr().err
    with_test = point_miou(toy, tmp_path / "map")
    assert with_test >= 0.85
    assert _fuse(toy, tmp_path / "no_test", "--no-occlusion") == 0
    without = point_miou(toy, tmp_path / "no_test")
    # without it, the wall behind the pillar takes the pillar's features from the frames it hides
    assert without < with_test - 0.01, (with_test, without)


@pytest.mark.parametrize("written, flag", [("w2c", "w2c"), ("trajectory", "c2w")])
def test_pose_conventions_give_the_same_map_and_a_wrong_flag_fails_the_sanity_check(
    reference, tmp_path, capsys, written, flag
):
    other = render_toy_scene(tmp_path / written, frames=FRAMES, pose=written).root
    assert (other / ("trajectory.txt" if written == "trajectory" else "pose")).exists()
    assert _fuse(other, tmp_path / "right", "--points", "points.ply", "--pose", flag) == 0
    a, b = (
        load_file(reference / "features.safetensors"),
        load_file(tmp_path / "right" / "features.safetensors"),
    )
    assert np.array_equal(a["counts"], b["counts"]) and (a["counts"] > 0).mean() > 0.95
    assert np.abs(a["features"].astype(np.float32) - b["features"].astype(np.float32)).max() < 2e-3
    capsys.readouterr()
    wrong = "c2w" if flag == "w2c" else "w2c"
    assert _fuse(other, tmp_path / "wrong", "--points", "points.ply", "--pose", wrong) == 1
    captured = capsys.readouterr()
    assert "sanity check failed: only" in captured.err and "check --pose" in captured.err
    seen = (load_file(tmp_path / "wrong" / "features.safetensors")["counts"] > 0).mean()
    assert seen < 0.5  # most points never seen
