"""Extraction presets, --base-size/--crop-size, the features --layout and the dataset-wide PCA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from langseg.cli import build_parser, main
from langseg.cli.plan import all_inputs
from langseg.cli.session import open_session
from langseg.inference import OFFICIAL_SCALES
from langseg.pca import load_basis
from langseg.presets import PRESETS


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(24, 32), (40, 56), (33, 70)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    return folder


def _protocol(argv: list[str]) -> dict:
    """The preprocessing record a command would write, without running any image."""
    args = build_parser().parse_args(argv)
    all_inputs(args)
    return open_session(args, templates=None).protocol


# the documented values of each preset (docs/cli.md), written out independently of langseg.presets
DOCUMENTED = {
    "official": ([0.5, 0.75, 1.0, 1.25, 1.5, 1.75], True, 520, 480, None),
    "openscene": ([2.0], True, None, 640, None),
    "vlmaps": ([1.0], False, 520, 480, None),
    "feature-3dgs": ([0.75, 1.0, 1.25, 1.75], True, 520, 480, 480),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_presets_give_the_documented_settings(name, images, tmp_path):
    scales, flip, base, crop, max_side = DOCUMENTED[name]
    for command in ("features", "segment"):
        p = _protocol([command, str(images), "--out", str(tmp_path / command), "--preset", name])
        assert p["preset"] == name and p["mode"] == "multi-scale"
        ms = p["multi_scale"]
        assert (ms["scales"], ms["flip"], ms["base_size"], ms["crop_size"]) == (scales, flip, base, crop)
        assert p["max_side"] == max_side
    assert PRESETS["official"].settings["scales"] == OFFICIAL_SCALES


def test_explicit_options_override_the_preset(images, tmp_path):
    argv = ["features", str(images), "--out", str(tmp_path / "o"), "--preset", "official"]
    p = _protocol(argv + ["--scales", "1", "--no-flip", "--crop-size", "256", "--base-size", "300"])
    ms = p["multi_scale"]
    assert (ms["scales"], ms["flip"], ms["base_size"], ms["crop_size"]) == ([1.0], False, 300, 256)
    p = _protocol(argv + ["--sliding-window", "64"])  # another protocol replaces the preset's
    assert p["mode"] == "sliding-window" and p["multi_scale"]["crop_size"] == 64
    p = _protocol(
        ["features", str(images), "--out", str(tmp_path / "o"), "--multi-scale", "--base-size", "0"]
    )
    assert p["multi_scale"]["base_size"] is None and p["preset"] is None


def test_crop_size_without_multi_scale_is_one_line_error(images, tmp_path, capsys):
    code = main(["features", str(images), "--out", str(tmp_path / "o"), "--crop-size", "256"])
    assert code == 2
    assert "--crop-size needs --multi-scale" in capsys.readouterr().err


def test_openscene_gives_one_feature_per_input_pixel(images, tmp_path, capsys):
    out = tmp_path / "o"
    argv = [
        "features",
        str(images / "f0.png"),
        "--out",
        str(out),
        "--preset",
        "openscene",
        "--crop-size",
        "96",
    ]
    assert main(argv) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["resolution"] == "full" and index["preprocessing"]["preset"] == "openscene"
    assert np.load(out / "f0.npy").shape[1:] == (24, 32)  # the 32x24 input's own size, from a 64x48 pass


def test_layout_hwc_is_the_transpose_of_chw(images, tmp_path, capsys):
    base = ["features", str(images), "--dtype", "float32"]
    assert main(base + ["--out", str(tmp_path / "chw")]) == 0
    assert main(base + ["--out", str(tmp_path / "hwc"), "--layout", "hwc"]) == 0
    index = json.loads((tmp_path / "hwc" / "index.json").read_text())
    assert index["layout"].startswith("(h, w, D)")
    for entry in index["images"]:
        chw = np.load(tmp_path / "chw" / entry["file"])
        hwc = np.load(tmp_path / "hwc" / entry["file"])
        assert list(hwc.shape) == entry["shape"] == [chw.shape[1], chw.shape[2], chw.shape[0]]
        np.testing.assert_array_equal(hwc, chw.transpose(1, 2, 0))


def test_dataset_pca_one_basis_for_the_run(images, tmp_path, capsys):
    base = ["features", str(images), "--dtype", "float32"]
    assert main(base + ["--out", str(tmp_path / "full")]) == 0
    assert main(base + ["--out", str(tmp_path / "pca"), "--pca-dim", "4", "--pca-preview"]) == 0
    index = json.loads((tmp_path / "pca" / "index.json").read_text())
    basis = load_basis(tmp_path / "pca" / "pca.safetensors")
    full = [np.load(tmp_path / "full" / e["file"]) for e in index["images"]]

    # independently: all pixels of the 3 inputs (fewer than the vector budget), numpy's covariance
    pixels = np.concatenate([f.reshape(f.shape[0], -1) for f in full], axis=1).astype(np.float64)
    values, vectors = np.linalg.eigh(np.cov(pixels))
    values, vectors = values[::-1], vectors[:, ::-1]
    np.testing.assert_allclose(basis.mean, pixels.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(np.abs(np.sum(basis.components[:4] * vectors[:, :4].T, axis=1)), 1, atol=1e-4)
    ratio = values[:4] / values.sum()
    np.testing.assert_allclose(index["pca"]["explained_variance_ratio"], ratio, atol=1e-5)
    assert index["pca"]["fitted_on_vectors"] == pixels.shape[1] and index["pca"]["applied"]

    for entry, f in zip(index["images"], full):
        stored = np.load(tmp_path / "pca" / entry["file"])
        assert stored.shape == (4, *f.shape[1:])
        expected = np.einsum("kd,dhw->khw", basis.components, f - basis.mean[:, None, None])
        np.testing.assert_allclose(stored, expected, atol=1e-4)
        # previews share one colour scale: the same pixel vector gets the same colour in every frame
        preview = np.asarray(Image.open(tmp_path / "pca" / entry["preview"]))
        np.testing.assert_array_equal(preview, basis.preview(f))

    # a second run into the same folder reuses the basis; other settings are refused
    assert main(base + ["--out", str(tmp_path / "pca"), "--pca-dim", "4", "--skip-existing"]) == 0
    assert load_basis(tmp_path / "pca" / "pca.safetensors").info == basis.info
    code = main(base + ["--out", str(tmp_path / "pca"), "--pca-dim", "5", "--skip-existing"])
    assert code == 2 and "pca.safetensors was fitted with other settings" in capsys.readouterr().err


def test_feature_shards_share_one_folder(images, tmp_path, capsys):
    """Array tasks write into one folder without clashing: their indexes together are the full run's."""
    base = ["features", str(images), "--dtype", "float32"]
    assert main(base + ["--out", str(tmp_path / "full")]) == 0
    for i in range(2):
        assert main(base + ["--out", str(tmp_path / "arr"), "--shard", f"{i}/2"]) == 0
    full = json.loads((tmp_path / "full" / "index.json").read_text())["images"]
    parts = [
        json.loads((tmp_path / "arr" / f"index.shard{i}of2.json").read_text())["images"] for i in range(2)
    ]
    assert [e["file"] for e in parts[0] + parts[1]] == [e["file"] for e in full]
    assert not (tmp_path / "arr" / "index.json").exists()
