"""``langseg features`` driven as a user would: files, index, formats, resolutions, resumption, bad inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from langseg.cli import main


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((64, 96, 3)) * 255).astype(np.uint8)).save(root / "f0.png")
    Image.fromarray((rng.random((45, 70, 3)) * 255).astype(np.uint8)).save(root / "f1.png")
    (root / "f2.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def normalized(path: Path) -> torch.Tensor:
    arr = np.array(Image.open(path).convert("RGB"))
    return (torch.from_numpy(arr).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5  # (1, 3, H, W)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def unit_norm_error(feats: np.ndarray) -> float:
    return float(np.abs(np.linalg.norm(feats.astype(np.float64), axis=0) - 1).max())


def test_features_folder(images, tiny_weights, tiny_model, tmp_path, capsys):
    out = tmp_path / "feats"
    code, _, err = run_cli(capsys, "features", images, "--weights", tiny_weights, "--out", out)
    assert code == 1, err
    assert "f2.jpg: not an image file" in err and "Traceback" not in err
    f0, f1 = np.load(out / "f0.npy"), np.load(out / "f1.npy")
    assert f0.dtype == np.float16 and f0.shape == (32, 32, 48)  # (D, ceil(H/2), ceil(W/2))
    assert f1.shape == (32, 23, 35)
    assert unit_norm_error(f0) < 2e-3 and unit_norm_error(f1) < 2e-3
    with torch.no_grad():
        expected = tiny_model.encode_image(normalized(images / "f0.png"))[0]  # 64 x 96: no padding
    assert np.allclose(f0.astype(np.float32), expected.numpy(), atol=2e-3)
    index = json.loads((out / "index.json").read_text())
    sha = hashlib.sha256((tiny_weights / "model.safetensors").read_bytes()).hexdigest()
    assert index["weights"]["sha256"] == sha and index["weights"]["model"] == "lseg_tiny"
    assert index["resolution"] == "half" and index["dtype"] == "float16" and index["format"] == "npy"
    assert index["preprocessing"]["mean"] == [0.5] * 3 and index["preprocessing"]["std"] == [0.5] * 3
    assert index["embed_dim"] == 32
    assert [(e["file"], e["original_size"], e["shape"]) for e in index["images"]] == [
        ("f0.npy", [96, 64], [32, 32, 48]),
        ("f1.npy", [70, 45], [32, 23, 35]),
    ]


def test_formats_resolutions_and_preview(images, tiny_weights, tiny_model, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    one = images / "f1.png"  # 70 x 45
    code, _, err = run_cli(
        capsys,
        "features",
        one,
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "st",
        "--format",
        "safetensors",
        "--dtype",
        "float32",
        "--resolution",
        "full",
        "--pca-preview",
    )
    assert code == 0, err
    feats = load_file(tmp_path / "st" / "f1.safetensors")["features"]
    assert feats.dtype == np.float32 and feats.shape == (32, 45, 70) and unit_norm_error(feats) < 1e-5
    with safe_open(tmp_path / "st" / "f1.safetensors", "np") as f:
        assert f.metadata()["original_size"] == "70x45"
    preview = Image.open(tmp_path / "st" / "f1.pca.png")
    assert preview.mode == "RGB" and preview.size == (70, 45)

    code, _, err = run_cli(
        capsys,
        "features",
        one,
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "pt",
        "--format",
        "pt",
        "--resolution",
        "40x24",
    )
    assert code == 0, err
    t = torch.load(tmp_path / "pt" / "f1.pt", weights_only=True)
    assert t.dtype == torch.float16 and t.shape == (32, 24, 40)

    code, _, err = run_cli(
        capsys,
        "features",
        images / "f0.png",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "flip",
        "--flip",
        "--dtype",
        "float32",
    )
    assert code == 0, err
    x = normalized(images / "f0.png")
    with torch.no_grad():
        both = tiny_model.encode_image(x) + tiny_model.encode_image(x.flip(-1)).flip(-1)
    assert np.allclose(np.load(tmp_path / "flip" / "f0.npy"), F.normalize(both, dim=1)[0].numpy(), atol=1e-5)
    index = json.loads((tmp_path / "flip" / "index.json").read_text())
    assert index["preprocessing"]["flip"] is True


def test_max_side_shrinks_what_the_network_sees(images, tiny_weights, tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "features",
        images / "f0.png",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path,
        "--max-side",
        "48",
    )
    assert code == 0, err
    entry = json.loads((tmp_path / "index.json").read_text())["images"][0]
    assert entry["original_size"] == [96, 64] and entry["processed_size"] == [48, 32]
    assert np.load(tmp_path / "f0.npy").shape == (32, 16, 24)


def test_existing_outputs_and_resuming(images, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["features", images / "f0.png", images / "f1.png", "--weights", tiny_weights, "--out", out]
    assert run_cli(capsys, *common)[0] == 0
    first = (out / "f1.npy").read_bytes()
    code, _, err = run_cli(capsys, *common)
    assert code == 2 and "output files exist" in err
    code, _, err = run_cli(capsys, *common, "--skip-existing", "--dtype", "float32")
    assert code == 2 and "different dtype" in err  # resuming must not mix settings
    (out / "f0.npy").unlink()
    code, stdout, err = run_cli(capsys, *common, "--skip-existing")
    assert code == 0, err
    assert "kept 1 already done" in stdout and "of 1 image" in stdout
    assert (out / "f1.npy").read_bytes() == first
    index = json.loads((out / "index.json").read_text())
    assert [e["file"] for e in index["images"]] == ["f0.npy", "f1.npy"]  # input order, both listed
    assert sorted(p.name for p in out.iterdir()) == ["f0.npy", "f1.npy", "index.json"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Two sizes, same-size runs to batch, a corrupt file in the middle of the first batch."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(2)
    for name, (h, w) in [
        ("a0", (64, 96)),
        ("a1", (64, 96)),
        ("a3", (64, 96)),
        ("a4", (40, 130)),
        ("a5", (40, 130)),
        ("a6", (64, 96)),
    ]:
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / f"{name}.png")
    (root / "a2.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def record_batches(monkeypatch) -> list[int]:
    """Batch sizes of every image-network call made from now on."""
    from langseg.models.lseg import LSeg

    sizes: list[int] = []
    encode = LSeg.encode_image

    def spy(self, images):
        sizes.append(images.shape[0])
        return encode(self, images)

    monkeypatch.setattr(LSeg, "encode_image", spy)
    return sizes


@pytest.mark.parametrize("options", [[], ["--resolution", "full", "--flip"]], ids=["half", "full-flip"])
def test_batches_match_one_by_one(mixed, tiny_weights, tmp_path, capsys, monkeypatch, options):
    calls = record_batches(monkeypatch)
    names = ["a0", "a1", "a3", "a4", "a5", "a6"]
    feats = {}
    for batch in (1, 4):
        out = tmp_path / f"b{batch}"
        calls.clear()
        code, _, err = run_cli(
            capsys,
            "features",
            mixed,
            "--weights",
            tiny_weights,
            "--out",
            out,
            "--dtype",
            "float32",
            "--batch-size",
            batch,
            *options,
        )
        assert code == 1 and "a2.jpg: not an image file" in err, err  # skipped by name, the rest done
        runs = 2 if "--flip" in options else 1  # the mirrored run is a second call
        # batch 4: [a0 a1 (a2) a3] is one call of 3; [a4 a5 a6] splits by size into 2 + 1
        assert calls == ([1] * 6 * runs if batch == 1 else [3] * runs + [2] * runs + [1] * runs)
        index = json.loads((out / "index.json").read_text())
        assert [e["file"] for e in index["images"]] == [f"{n}.npy" for n in names]
        feats[batch] = {n: np.load(out / f"{n}.npy") for n in names}
    for n in names:
        assert feats[4][n].shape == feats[1][n].shape
        assert np.abs(feats[4][n] - feats[1][n]).max() < 1e-5, n


def test_out_of_memory_batch_retries_one_by_one(mixed, tiny_weights, tmp_path, capsys, monkeypatch):
    from langseg.models.lseg import LSeg

    encode = LSeg.encode_image

    def small_memory(self, images):  # no batch of several fits, nor a 130 x 40 image (padded to 160 x 64)
        if images.shape[0] > 1 or images.shape[-1] == 160:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(self, images)

    monkeypatch.setattr(LSeg, "encode_image", small_memory)
    code, stdout, err = run_cli(
        capsys, "features", mixed, "--weights", tiny_weights, "--out", tmp_path, "--batch-size", "4"
    )
    assert code == 1 and "a2.jpg: not an image file" in err
    assert "a4.png: out of memory for 130x40" in err and "a5.png: out of memory for 130x40" in err
    assert "exported features of 4 images" in stdout
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["a0.npy", "a1.npy", "a3.npy", "a6.npy"]


def test_help_lists_options_and_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["features", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in [
        "--resolution",
        "--dtype",
        "--format",
        "--pca-preview",
        "--batch-size",
        "--multi-scale",
        "--flip",
        "--max-side",
        "--overwrite",
        "--skip-existing",
        "examples:",
        "index.json",
    ]:
        assert option in text, option
    with pytest.raises(SystemExit):
        main(["features", "x.png", "--out", "o", "--resolution", "big"])
    assert "expected half, full or WIDTHxHEIGHT" in capsys.readouterr().err


def test_sliding_window_features_match_the_predictor(tiny_weights, tiny_model, tmp_path, capsys):
    """--sliding-window: windows over the unresized image, the same numbers as the Python API."""
    from langseg import LSegPredictor
    from langseg.inference import MultiScaleConfig

    rng = np.random.default_rng(5)
    arr = (rng.random((90, 140, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    code, _, err = run_cli(
        capsys,
        "features",
        tmp_path / "wide.png",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "out",
        "--sliding-window",
        "64",
        "--dtype",
        "float32",
    )
    assert code == 0, err
    got = np.load(tmp_path / "out" / "wide.npy")
    predictor = LSegPredictor(tiny_model, device="cpu", multi_scale=MultiScaleConfig.sliding_window(64))
    expected = predictor.features(arr, keep_on_device=False).numpy()
    assert got.shape == expected.shape == (32, 45, 70)
    assert np.abs(got - expected).max() < 1e-5
