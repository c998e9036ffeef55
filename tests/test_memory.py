"""Memory bounded by settings: full-size outputs computed in bands of rows, the memory estimate,
and thin images through every protocol."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import LABEL_WORDS

import langseg
from langseg import LSegPredictor
from langseg.inference import MultiScaleConfig
from langseg.predictor import label_map, memory_estimate, row_bands, upsample_rows


def full_size_reference(logits: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """The computation the bands replace: every label's map upsampled to ``size``, softmax, max."""
    full = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=True)[0]
    score, index = full.softmax(dim=0).max(dim=0)
    return full, score, index


@pytest.mark.parametrize(
    ("k", "src", "size"),
    [(5, (24, 31), (97, 130)), (3, (40, 9), (41, 200)), (7, (16, 16), (16, 75)), (2, (1, 5), (9, 1))],
)
def test_label_map_in_bands_equals_the_full_size_computation(k, src, size):
    torch.manual_seed(k)
    logits = torch.randn(k, *src) * 4
    full, score, index = full_size_reference(logits, size)
    by_row = label_map(logits, size, band_bytes=1)  # one row per band
    by_band = label_map(logits, size, band_bytes=4 * k * size[1] * 7)  # seven rows per band
    whole = label_map(logits, size, band_bytes=1 << 40)  # one band
    for labels, scores in (by_row, by_band):  # the band size changes nothing, bit for bit
        np.testing.assert_array_equal(labels, whole[0])
        np.testing.assert_array_equal(scores, whole[1])
    np.testing.assert_array_equal(whole[0], index.numpy())  # the same labels as the full-size maps
    np.testing.assert_allclose(whole[1], score.numpy(), rtol=0, atol=2e-6)  # float rounding only
    rows = torch.cat([upsample_rows(logits, size, y0, y1) for y0, y1 in row_bands(size, k, 4 * k * 3)], 1)
    torch.testing.assert_close(rows, full, rtol=0, atol=1e-5)
    assert len(list(row_bands(size, k, 4 * k * size[1] * 7))) == -(-size[0] // 7)


def test_predictor_outputs_match_the_full_size_maps_and_stream_logits(tiny_model):
    rng = np.random.default_rng(0)
    img = np.zeros((150, 220, 3), np.uint8)
    img[:75], img[75:] = (120, 180, 250), (60, 160, 60)
    img[40:110, 70:150] = rng.integers(0, 256, (70, 80, 3))
    predictor = LSegPredictor(tiny_model, max_side=64)  # the network sees 44x64; outputs 150x220
    for words in itertools.combinations(LABEL_WORDS, 4):  # labels the random model does not answer alike
        labels = list(words)
        pred = predictor.predict(img, labels, return_logits=True)
        if len(np.unique(pred.labels)) >= 2:
            break
    assert pred.processed_logits.shape == (4, 44, 64)
    x, _ = predictor.preprocess(img)
    text, _ = predictor.text_features(labels)
    full, score, index = full_size_reference(predictor.logits_tensor(x, text)[0], (150, 220))
    np.testing.assert_array_equal(pred.labels, index.numpy())
    np.testing.assert_allclose(pred.scores, score.numpy(), rtol=0, atol=2e-6)
    assert len(np.unique(pred.labels)) >= 2  # a comparison of constant maps would mean little
    torch.testing.assert_close(pred.logits, full, rtol=0, atol=1e-5)
    bands = list(pred.logit_rows(band_bytes=4 * 4 * 220 * 16))
    assert [b[0] for b in bands] == list(range(0, 150, 16))
    torch.testing.assert_close(torch.cat([b[2] for b in bands], 1), pred.logits, rtol=0, atol=0)
    plain = predictor.predict(img, labels)
    assert plain.logits is None and plain.processed_logits is None


def test_memory_estimate_is_flat_in_image_size_beyond_max_side(tiny_model):
    cfg = tiny_model.config
    p = LSegPredictor(tiny_model, max_side=1024)

    def extra(side: int, k: int) -> int:  # what the labels and the network cost, beyond the pixels
        from langseg.predictor import PIXEL_BYTES

        return p.memory_estimate(side, side, k) - PIXEL_BYTES * side * side

    assert extra(2048, 64) == extra(8192, 64) == extra(30000, 64)  # flat beyond max_side
    assert extra(512, 64) < extra(1024, 64)  # grows below it
    assert extra(4096, 64) > extra(4096, 8)
    # without max_side the labels' maps grow with the image: K x H x W, as the estimate says
    full = memory_estimate(cfg, (4096, 4096), (4096, 4096), 64)
    assert full > 3 * 4 * 64 * 4096 * 4096
    ms = LSegPredictor(tiny_model, multi_scale=True, max_side=1024)
    assert ms.memory_estimate(4096, 4096, 64) > p.memory_estimate(4096, 4096, 64)


@pytest.mark.parametrize("shape", [(10, 30000), (30000, 10), (1, 700)])
def test_multi_scale_on_extreme_aspect_ratios(tiny_model, shape):
    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    cfg = MultiScaleConfig(scales=(0.5, 1.0), flip=True, crop_size=64, batch_size=4)
    pred = LSegPredictor(tiny_model, multi_scale=cfg, max_side=None).predict(img, ["a", "b"])
    assert pred.labels.shape == shape and np.isfinite(pred.scores).all()


# ------------------------------------------------------------------------------ the commands
def save_png(path, arr: np.ndarray):
    from PIL import Image

    Image.fromarray(arr).save(path)
    return path


def test_segment_checks_memory_before_each_image_and_goes_on(tiny_weights, tmp_path, capsys, monkeypatch):
    """An image that cannot fit the memory available is reported by name and skipped before anything
    is allocated; the next image is still segmented (exit 1)."""
    import langseg.predictor
    from langseg.cli import main

    rng = np.random.default_rng(0)
    small = save_png(tmp_path / "small.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    large = save_png(tmp_path / "large.png", rng.integers(0, 256, (400, 600, 3), dtype=np.uint8))
    predictor = LSegPredictor(langseg.load_model(tiny_weights), max_side=1024)
    between = (predictor.memory_estimate(40, 60, 3) + predictor.memory_estimate(400, 600, 3)) // 2
    monkeypatch.setattr(langseg.predictor, "available_memory", lambda: between)
    argv = ["segment", str(large), str(small), "--labels", "a,b,c", "--weights", str(tiny_weights)]
    code = main([*argv, "--out", str(tmp_path / "out"), "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert "large.png: 600x400 with 3 labels needs about" in err and "fewer labels" in err
    assert (tmp_path / "out" / "small.mask.png").is_file() and not (
        tmp_path / "out" / "large.mask.png"
    ).exists()


def test_features_at_a_resolution_that_cannot_fit_names_the_resolution(tiny_weights, tmp_path, capsys):
    from langseg.cli import main

    img = save_png(tmp_path / "a.png", np.full((96, 96, 3), 50, np.uint8))
    code = main(
        ["features", str(img), "--out", str(tmp_path / "f"), "--weights", str(tiny_weights)]
        + [
            "--resolution",
            "100000x100000",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "a.png: 96x96 with --resolution 100000x100000 needs about" in err and "smaller --resolution" in err
    assert "out of memory for 96x96" not in err


def test_saved_logits_are_streamed_equal_to_the_full_size_logits(tiny_weights, tmp_path, capsys):
    from langseg.cli import main

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    path = save_png(tmp_path / "p.png", img)
    argv = ["segment", str(path), "--labels", "a,b,c", "--weights", str(tiny_weights), "--save-logits"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--max-side", "64"]) == 0
    saved = np.load(tmp_path / "o" / "p.logits.npy")
    pred = LSegPredictor(langseg.load_model(tiny_weights), max_side=64).predict(
        img, "a,b,c", return_logits=True
    )
    assert saved.dtype == np.float16 and saved.shape == (3, 90, 130)
    np.testing.assert_array_equal(saved, pred.logits.numpy().astype(np.float16))


def test_segment_multi_scale_on_a_30000x10_image(tiny_weights, tmp_path, capsys):
    from langseg.cli import main

    thin = save_png(
        tmp_path / "thin.png", np.random.default_rng(2).integers(0, 256, (10, 30000, 3), np.uint8)
    )
    argv = ["segment", str(thin), "--labels", "a,b", "--weights", str(tiny_weights), "--multi-scale"]
    assert main([*argv, "--scales", "0.5", "--out", str(tmp_path / "o"), "--no-overlay"]) == 0
    from PIL import Image

    with Image.open(tmp_path / "o" / "thin.mask.png") as m:
        assert m.size == (30000, 10)
