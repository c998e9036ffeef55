"""Scene fusion runs: output files, resume after an interruption, 1 vs 2 processes (gloo, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import run_ranks
from safetensors.numpy import load_file
from test_scenes import make_planes_scene

import langseg
from langseg.cli import main
from langseg.predictor import LSegPredictor
from langseg.scenes import FuseConfig, Scene, fuse, open_scene, scene_points

WORLD = 2
LABELS = "red circle,blue square,green triangle,yellow diamond,background"


@pytest.fixture(scope="module")
def planes(tmp_path_factory) -> Path:
    root, _ = make_planes_scene(tmp_path_factory.mktemp("scenes") / "planes", frames=6, size=(48, 36))
    return root


def _fuse_args(scene: Path, out: Path, *extra: str) -> list[str]:
    return ["scene", "fuse", str(scene), "--out", str(out), "--device", "cpu", "--voxel-size", "0.1", *extra]


def test_fuse_writes_map_files_and_query_labels_points(planes, tmp_path, capsys):
    from plyfile import PlyData

    out = tmp_path / "map"
    assert main(_fuse_args(planes, out)) == 0
    assert "fused 6 frames of planes onto" in capsys.readouterr().out
    tensors = load_file(out / "features.safetensors")
    N, D = tensors["features"].shape
    assert (
        tensors["xyz"].shape == (N, 3)
        and tensors["colors"].shape == (N, 3)
        and tensors["counts"].shape == (N,)
    )
    seen = tensors["counts"] > 0
    norms = np.linalg.norm(tensors["features"].astype(np.float32), axis=1)
    assert np.allclose(norms[seen], 1, atol=2e-3) and (norms[~seen] == 0).all()
    openscene = torch.load(out / "openscene.pt", weights_only=True)
    assert openscene["feat"].dtype == torch.float16 and openscene["mask_full"].dtype == torch.bool
    assert openscene["feat"].shape == (int(seen.sum()), D) and torch.equal(
        openscene["mask_full"], torch.from_numpy(seen)
    )
    ply = PlyData.read(str(out / "features_pca.ply"))
    assert ply["vertex"].count == N and {"x", "red", "count"} <= set(ply["vertex"].data.dtype.names)
    # every colour frame pixel the voxels came from: the floor's blue/white checker, the wall's red/green
    assert len(np.unique(tensors["colors"], axis=0)) > 4

    assert (
        main(["scene", "query", str(out), "--labels", LABELS, "--heatmap", "red circle", "--device", "cpu"])
        == 0
    )
    record = __import__("json").loads((out / "query" / "query.json").read_text())
    assert sum(lab["points"] for lab in record["labels"]) == int(seen.sum())
    assert abs(sum(lab["share"] for lab in record["labels"]) - 1) < 1e-6
    labels = np.load(out / "query" / "labels.npy")
    api = Scene.load(out).query(LABELS)
    assert np.array_equal(api.labels, labels)  # the Python API and the command agree
    heat = PlyData.read(str(out / "query" / "heat_red_circle.ply"))["vertex"]["score"]
    assert np.allclose(heat, api.heat("red circle"), atol=1e-6)
    assert (out / "query" / "topdown.png").stat().st_size > 0 and (out / "query" / "labels.ply").is_file()
    # a label the query does not know is a one-line error, before any file is replaced
    code = main(["scene", "query", str(out), "--labels", LABELS, "--heatmap", "sofa", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "--heatmap 'sofa' is not one of the labels" in err
    # existing outputs are never replaced silently
    assert main(_fuse_args(planes, out)) == 2
    assert "output files exist" in capsys.readouterr().err


def test_resume_equals_an_uninterrupted_run(planes, tmp_path, monkeypatch, capsys):
    full = tmp_path / "full"
    assert main(_fuse_args(planes, full, "--checkpoint-every", "2")) == 0
    assert not (full / ".langseg-fuse").exists()  # the checkpoint goes once the map is complete

    real = LSegPredictor.features
    calls = []

    def dies_at_the_fifth_frame(self, images, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, images, **kwargs)

    part = tmp_path / "part"
    monkeypatch.setattr(LSegPredictor, "features", dies_at_the_fifth_frame)
    assert main(_fuse_args(planes, part, "--checkpoint-every", "2")) == 130
    assert (part / ".langseg-fuse").is_dir() and not (part / "features.safetensors").exists()
    assert main(_fuse_args(planes, part, "--checkpoint-every", "2")) == 2  # no silent restart
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(LSegPredictor, "features", real)
    calls.clear()
    counted = []
    monkeypatch.setattr(
        LSegPredictor, "features", lambda self, images, **kw: counted.append(1) or real(self, images, **kw)
    )
    assert main(_fuse_args(planes, part, "--checkpoint-every", "2", "--resume")) == 0
    assert len(counted) == 2  # frames 1-4 came from the checkpoint
    a, b = load_file(full / "features.safetensors"), load_file(part / "features.safetensors")
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def _fuse_in_process(weights: str, scene_root: Path, rank: int, world: int) -> dict[str, torch.Tensor]:
    model = langseg.load_model(langseg.resolve_weights(weights), device="cpu")
    predictor = LSegPredictor(model, device="cpu")
    scene = open_scene(scene_root)
    config = FuseConfig(voxel_size=0.1, checkpoint_every=0)
    cloud = scene_points(scene, config, torch.device("cpu"))
    fused = fuse(scene, predictor, cloud, config, rank=rank, world_size=world)
    return {"features": fused.features, "counts": fused.counts, "weights": fused.weights}


def _worker(rank: int, init_file: str, scene_root: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.save(_fuse_in_process("lseg-toy", scene_root, rank, WORLD), out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_fuse_the_same_features_as_one(planes, tmp_path):
    single = _fuse_in_process("lseg-toy", planes, 0, 1)
    run_ranks(_worker, (str(tmp_path / "rendezvous"), planes, tmp_path), WORLD)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["counts"], single["counts"]), rank
        assert (single["counts"] > 1).float().mean() > 0.5  # points seen by frames of both ranks
        assert torch.allclose(got["weights"], single["weights"], atol=1e-5)
        assert (got["features"] - single["features"]).abs().max() <= 1e-5, rank
