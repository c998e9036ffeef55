"""Fixed-label evaluation: equals segmenting each full image, multi-scale equals a slow reference, CLI JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from langseg.cli import main
from langseg.data import ADE20K, GenericSegmentation
from langseg.eval.evaluate import EvalResult, evaluate, unique_keys
from langseg.inference import MultiScaleConfig, multi_scale, pad_value
from langseg.labels import read_labels_file
from langseg.predictor import LSegPredictor

SIZES = ((40, 50), (64, 64), (64, 64), (33, 70))  # (H, W): not multiples of 32, two of one size
LABELS = ("red;crimson", "blue", "green", "yellow")  # yellow never occurs in the masks
SMALL_MS = MultiScaleConfig(scales=(0.5, 1.0, 1.5), base_size=72, crop_size=64, batch_size=3)


def make_generic(root: Path, sizes=SIZES, labels=LABELS, seed: int = 0) -> Path:
    """A generic-layout dataset: labels.txt, images/val/*.png, masks/val/*.png (255 = ignore)."""
    rng = np.random.default_rng(seed)
    (root / "images" / "val").mkdir(parents=True)
    (root / "masks" / "val").mkdir(parents=True)
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / "val" / f"im{i}.png"
        )
        mask = rng.integers(0, 3, (h, w)).astype(np.uint8)
        mask[rng.random((h, w)) < 0.15] = 255
        Image.fromarray(mask, "L").save(root / "masks" / "val" / f"im{i}.png")
    return root


def brute_confusion(pred: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    conf = np.zeros((k, k), dtype=np.int64)
    keep = mask != 255
    np.add.at(conf, (mask[keep], pred[keep]), 1)
    return conf


@pytest.fixture(scope="module")
def generic_root(tmp_path_factory) -> Path:
    return make_generic(tmp_path_factory.mktemp("generic"))


def test_single_scale_scores_the_segment_prediction(tiny_model, generic_root):
    """Each image is scored with exactly what predict() gives for the file (what `langseg segment` runs)."""
    predictor = LSegPredictor(tiny_model, device="cpu")
    labels = read_labels_file(generic_root / "labels.txt")
    expected = np.zeros((4, 4), dtype=np.int64)
    for img in sorted((generic_root / "images" / "val").iterdir()):
        pred = predictor.predict(img, labels).labels
        mask = np.asarray(Image.open(generic_root / "masks" / "val" / img.name)).astype(np.int64)
        assert pred.shape == mask.shape  # full size, no hidden resize
        expected += brute_confusion(pred, mask, 4)
    ds = GenericSegmentation(generic_root, "val")
    result = evaluate(predictor, ds, progress=False)
    assert result.images == len(SIZES)
    assert np.array_equal(result.confusion.numpy(), expected)
    batched = evaluate(predictor, ds, batch_size=2, progress=False)  # the two 64x64 images share a call
    assert np.array_equal(batched.confusion.numpy(), expected)
    assert result.labels == ["red", "blue", "green", "yellow"]


def _pad(x: torch.Tensor, h: int, w: int, value: torch.Tensor) -> torch.Tensor:
    """Right/bottom padding with a per-channel value (the official pad_image)."""
    B, C, H, W = x.shape
    out = torch.empty(B, C, max(h, H), max(w, W))
    for c in range(C):
        out[:, c] = value[c]
    out[:, :, :H, :W] = x
    return out


def slow_multi_scale(net, image: torch.Tensor, value: torch.Tensor, cfg: MultiScaleConfig) -> torch.Tensor:
    """Spec 6.2 written out one window at a time, straight from the text."""

    def infer(x):  # module_inference: net(x) + flip(net(flip(x)))
        out = net(x)
        return out + net(x.flip(-1)).flip(-1) if cfg.flip else out

    _, _, h, w = image.shape
    crop, stride = cfg.crop_size, int(cfg.crop_size * cfg.stride_rate)
    scores = None
    for s in cfg.scales:
        long = int(math.ceil(cfg.base_size * s))
        if h > w:
            height, width = long, int(1.0 * w * long / h + 0.5)
        else:
            height, width = int(1.0 * h * long / w + 0.5), long
        cur = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=True)
        if long <= crop:
            out = infer(_pad(cur, crop, crop, value))[:, :, :height, :width]
        else:
            padded = _pad(cur, crop, crop, value) if min(height, width) < crop else cur
            ph, pw = padded.shape[-2:]
            acc, count = None, torch.zeros(1, 1, ph, pw)
            for iy in range(int(math.ceil((ph - crop) / stride)) + 1):
                for ix in range(int(math.ceil((pw - crop) / stride)) + 1):
                    y0, x0 = iy * stride, ix * stride
                    y1, x1 = min(y0 + crop, ph), min(x0 + crop, pw)
                    o = infer(_pad(padded[:, :, y0:y1, x0:x1], crop, crop, value))
                    acc = torch.zeros(1, o.shape[1], ph, pw) if acc is None else acc
                    acc[:, :, y0:y1, x0:x1] += o[:, :, : y1 - y0, : x1 - x0]
                    count[:, :, y0:y1, x0:x1] += 1
            out = (acc / count)[:, :, :height, :width]
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        scores = out if scores is None else scores + out
    return scores


def _normalized(path: Path, model) -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    mean, std = (
        torch.tensor(model.config.mean).view(1, 3, 1, 1),
        torch.tensor(model.config.std).view(1, 3, 1, 1),
    )
    return (x - mean) / std


def test_multi_scale_equals_slow_reference_and_is_what_eval_scores(tiny_model, generic_root):
    labels = ["red", "blue", "green", "yellow"]
    text = tiny_model.encode_text(labels)
    value = pad_value(tiny_model.config.mean, tiny_model.config.std)

    def net(x):
        with torch.no_grad():
            return tiny_model(x, text)

    predictor = LSegPredictor(tiny_model, device="cpu", multi_scale=SMALL_MS)
    ds = GenericSegmentation(generic_root, "val")
    expected = np.zeros((4, 4), dtype=np.int64)
    for img in sorted((generic_root / "images" / "val").iterdir()):
        x = _normalized(img, tiny_model)
        ref = slow_multi_scale(net, x, value, SMALL_MS)
        fast = multi_scale(net, x, value, SMALL_MS)
        assert fast.shape == ref.shape == (1, 4, *x.shape[-2:])
        assert torch.allclose(fast, ref, atol=1e-5), float((fast - ref).abs().max())
        mask = np.asarray(Image.open(generic_root / "masks" / "val" / img.name)).astype(np.int64)
        expected += brute_confusion(ref[0].argmax(0).numpy(), mask, 4)
    result = evaluate(predictor, ds, labels, progress=False)
    assert np.array_equal(result.confusion.numpy(), expected)


def test_official_multi_scale_config_equals_slow_reference(tiny_model):
    """The default protocol (520 base, 480 crops, stride 320, 6 scales, flip) on one small image."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 48, 72)
    text = tiny_model.encode_text(["a", "b"])
    value = pad_value(tiny_model.config.mean, tiny_model.config.std)

    def net(batch):
        with torch.no_grad():
            return tiny_model(batch, text)

    cfg = MultiScaleConfig()
    assert (cfg.base_size, cfg.crop_size, cfg.stride, cfg.flip) == (520, 480, 320, True)
    assert cfg.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    ref = slow_multi_scale(net, x, value, cfg)
    assert torch.allclose(multi_scale(net, x, value, cfg), ref, atol=1e-5)


def test_sliding_window_is_the_evaluator_at_native_size_in_bounded_batches(tiny_model):
    """One scale, base = the image's long side: windows over the unresized image, never more than
    ``batch_size`` windows (x2 with flip) per network call, whatever the image size."""
    torch.manual_seed(2)
    x = torch.randn(1, 3, 100, 170)
    text = tiny_model.encode_text(["a", "b", "c"])
    value = pad_value(tiny_model.config.mean, tiny_model.config.std)
    calls: list[int] = []

    def net(batch):
        calls.append(batch.shape[0])
        assert batch.shape[-2:] == (64, 64)
        with torch.no_grad():
            return tiny_model(batch, text)

    cfg = MultiScaleConfig.sliding_window(64, flip=True, batch_size=3)
    assert (cfg.scales, cfg.base_size, cfg.stride) == ((1.0,), None, 42)
    fast = multi_scale(net, x, value, cfg)
    assert max(calls) <= 6 and sum(calls) == 2 * 2 * 4  # 2 x 4 windows of 64 at stride 42, each flipped
    ref = slow_multi_scale(net, x, value, dataclasses.replace(cfg, base_size=170))
    assert fast.shape == (1, 3, 100, 170)
    assert torch.allclose(fast, ref, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scales": ()}, "scales"),
        ({"crop_size": 100}, "multiple of 32"),
        ({"stride_rate": 0}, "stride_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"base_size": 0}, "base_size"),
    ],
)
def test_multi_scale_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiScaleConfig(**kwargs)


def test_eval_result_metrics_nulls_and_unique_keys():
    conf = torch.tensor([[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    m = EvalResult(conf, ["wall", "screen", "screen"], images=1, seconds=0.0).metrics()
    assert m["pixAcc"] == pytest.approx(3 / 4)
    assert m["per_class_iou"] == pytest.approx({"wall": 2 / 3, "screen": 1 / 2, "screen (2)": None})
    assert m["per_class_iou"]["screen (2)"] is None
    assert m["mIoU"] == pytest.approx((2 / 3 + 1 / 2) / 3)
    assert m["mIoU_present"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert unique_keys(["a", "b", "a", "a"]) == ["a", "b", "a (2)", "a (3)"]


def _run(*argv: str) -> int:
    return main(["eval", *argv, "--workers", "0", "--no-progress", "--device", "cpu"])


@pytest.mark.parametrize("template", ["a {} }", "{} and {}", "no slot", "{}{0}"])
def test_cli_bad_template_is_a_one_line_error(template, tmp_path, capsys):
    code = main(["eval", "--dataset", "toy", "--data-root", str(tmp_path), "--template", template])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("langseg: error: prompt template") and repr(template) in err
    assert len(err.strip().splitlines()) == 1


def test_model_refuses_a_malformed_template(tiny_model):
    from langseg.labels import LabelError

    with pytest.raises(LabelError, match="exactly once"):
        tiny_model.encode_text(["cat"], templates=["a {} }"])


def test_cli_writes_json_with_provenance(tiny_model, tiny_weights, generic_root, tmp_path, capsys):
    out = tmp_path / "res.json"
    assert (
        _run(
            "--dataset",
            "generic",
            "--data-root",
            str(generic_root),
            "--weights",
            str(tiny_weights),
            "--out",
            str(out),
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "pixAcc" in printed and "mIoU" in printed and "wrote" in printed
    data = json.loads(out.read_text())
    expected = evaluate(
        LSegPredictor(tiny_model, device="cpu"), GenericSegmentation(generic_root), progress=False
    )
    assert data["confusion_matrix"] == expected.confusion.tolist()
    metrics = expected.metrics()
    assert data["pixAcc"] == pytest.approx(metrics["pixAcc"]) and data["mIoU"] == pytest.approx(
        metrics["mIoU"]
    )
    conf = np.array(data["confusion_matrix"])
    for k, (name, iou) in enumerate(data["per_class_iou"].items()):  # null exactly for zero-union classes
        assert (iou is None) == (conf[k].sum() + conf[:, k].sum() == 0), name
    assert list(data["per_class_iou"]) == ["red", "blue", "green", "yellow"]
    assert data["complete"] is True and data["images"] == len(SIZES)
    sha = hashlib.sha256((tiny_weights / "model.safetensors").read_bytes()).hexdigest()
    assert data["weights"]["sha256"] == sha and data["weights"]["weights"] == str(tiny_weights)
    assert data["weights"]["model"] == "lseg_tiny" and data["weights"]["file"] == "model.safetensors"
    assert data["protocol"]["mode"] == "single-scale" and data["dataset"]["split"] == "val"
    env = data["environment"]
    assert env["torch_version"] == torch.__version__ and env["device"] == "cpu" and env["langseg_version"]
    # an existing file is not overwritten without --overwrite
    assert (
        _run(
            "--dataset",
            "generic",
            "--data-root",
            str(generic_root),
            "--weights",
            str(tiny_weights),
            "--out",
            str(out),
        )
        == 2
    )
    assert "--overwrite" in capsys.readouterr().err


def test_cli_compile_exact_scores_what_eager_scores(tiny_weights, generic_root, tmp_path, eager_compile):
    """--compile exact goes through torch.compile (the eager backend in the test) and gives the eager
    confusion matrix, single scale and multi-scale."""
    common = ["--dataset", "generic", "--data-root", str(generic_root), "--weights", str(tiny_weights)]
    for extra in ([], ["--multi-scale", "--scales", "0.1,0.15"]):
        eager, compiled = tmp_path / f"eager{len(extra)}.json", tmp_path / f"compiled{len(extra)}.json"
        assert _run(*common, *extra, "--out", str(eager)) == 0
        assert _run(*common, *extra, "--out", str(compiled), "--compile", "exact") == 0
        a, b = json.loads(eager.read_text()), json.loads(compiled.read_text())
        assert a["confusion_matrix"] == b["confusion_matrix"] and b["images"] == len(SIZES)
    assert eager_compile == ["inductor", "inductor"]


def test_cli_limit_and_resume(tiny_weights, generic_root, tmp_path, monkeypatch, capsys):
    common = ["--dataset", "generic", "--data-root", str(generic_root), "--weights", str(tiny_weights)]
    full = tmp_path / "full.json"
    assert _run(*common, "--out", str(full)) == 0
    limited = tmp_path / "limited.json"
    assert _run(*common, "--out", str(limited), "--limit", "2") == 0
    assert json.loads(limited.read_text())["images"] == 2

    calls = {"n": 0}
    original = LSegPredictor.predict

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    part = tmp_path / "part.json"
    monkeypatch.setattr(LSegPredictor, "predict", interrupted)
    assert _run(*common, "--out", str(part), "--save-every", "1") == 130
    saved = json.loads(part.read_text())
    assert saved["complete"] is False and saved["images"] == 2
    monkeypatch.setattr(LSegPredictor, "predict", original)
    assert _run(*common, "--out", str(part), "--resume") == 0
    resumed, reference = json.loads(part.read_text()), json.loads(full.read_text())
    assert resumed["complete"] is True and resumed["images"] == len(SIZES)
    assert resumed["confusion_matrix"] == reference["confusion_matrix"]
    assert _run(*common, "--out", str(part), "--resume", "--multi-scale") == 2  # a different run
    assert "different run" in capsys.readouterr().err
    # a --limit run is extended cheaply: --resume with a larger limit continues where it stopped
    assert _run(*common, "--out", str(limited), "--resume", "--limit", "4") == 0
    extended = json.loads(limited.read_text())
    assert extended["images"] == 4 and extended["confusion_matrix"] == reference["confusion_matrix"]


def make_ade20k(root: Path, n: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    for sub in ("images/validation", "annotations/validation"):
        (base / sub).mkdir(parents=True)
    for i in range(n):
        h, w = 36 + 8 * i, 52
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            base / "images" / "validation" / f"ADE_val_{i:08d}.jpg"
        )
        raw = rng.integers(0, 151, (h, w)).astype(np.uint8)  # 0 = unlabeled
        Image.fromarray(raw, "L").save(base / "annotations" / "validation" / f"ADE_val_{i:08d}.png")
    return root


def test_cli_ade20k_layout_ignores_unlabeled(tiny_weights, tmp_path):
    root = make_ade20k(tmp_path / "ade")
    out = tmp_path / "ade.json"
    assert (
        _run(
            "--dataset",
            "ade20k",
            "--data-root",
            str(root),
            "--weights",
            str(tiny_weights),
            "--out",
            str(out),
            "--limit",
            "2",
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["dataset"]["num_classes"] == 150 and len(data["per_class_iou"]) == 150
    assert "screen (130)" in data["per_class_iou"]  # the official list names "screen" twice
    labeled = sum(
        int((np.asarray(Image.open(p)) > 0).sum())
        for p in sorted((root / "ADEChallengeData2016" / "annotations" / "validation").iterdir())[:2]
    )
    assert np.array(data["confusion_matrix"]).sum() == labeled
    assert ADE20K(root).labels[0] == "wall"


def test_cli_errors_name_the_problem(tiny_weights, generic_root, tmp_path, capsys):
    assert (
        _run("--dataset", "generic", "--data-root", str(tmp_path / "nope"), "--weights", str(tiny_weights))
        == 2
    )
    assert "nope" in capsys.readouterr().err
    bad = tmp_path / "labels.txt"
    bad.write_text("cat\ndog\n")
    assert (
        _run(
            "--dataset",
            "generic",
            "--data-root",
            str(generic_root),
            "--weights",
            str(tiny_weights),
            "--labels-file",
            str(bad),
            "--out",
            str(tmp_path / "x.json"),
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "labels.txt" in err and "4 classes" in err
    assert _run("--dataset", "generic", "--data-root", str(generic_root)) == 2
    assert "--weights is required" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_cli_help():
    for cmd in ("eval", "eval-zeroshot"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_eval_scores_exactly_the_masks_langseg_segment_writes(tiny_weights, generic_root, tmp_path):
    """The contract with `langseg segment` (whole images: --max-side 0), single scale and multi-scale."""
    images = generic_root / "images" / "val"
    for extra in ([], ["--multi-scale", "--scales", "0.5,0.75"]):
        seg_out, out = tmp_path / f"seg{len(extra)}", tmp_path / f"eval{len(extra)}.json"
        assert (
            main(
                [
                    "segment",
                    str(images),
                    "--labels-file",
                    str(generic_root / "labels.txt"),
                    "--weights",
                    str(tiny_weights),
                    "--out",
                    str(seg_out),
                    "--max-side",
                    "0",
                    "--device",
                    "cpu",
                    "--no-overlay",
                    *extra,
                ]
            )
            == 0
        )
        expected = np.zeros((4, 4), dtype=np.int64)
        for img in sorted(images.iterdir()):
            pred = np.asarray(Image.open(seg_out / f"{img.stem}.mask.png")).astype(np.int64)
            mask = np.asarray(Image.open(generic_root / "masks" / "val" / img.name)).astype(np.int64)
            expected += brute_confusion(pred, mask, 4)
        assert (
            _run(
                "--dataset",
                "generic",
                "--data-root",
                str(generic_root),
                "--weights",
                str(tiny_weights),
                "--out",
                str(out),
                *extra,
            )
            == 0
        )
        data = json.loads(out.read_text())
        assert data["confusion_matrix"] == expected.tolist()
        if extra:
            assert (
                data["protocol"]["multi_scale"]["scales"] == [0.5, 0.75] and data["protocol"]["flip"] is True
            )


def test_unreadable_image_in_a_loader_worker_is_a_clear_error(tiny_weights, tmp_path, capsys):
    root = make_generic(tmp_path / "data", sizes=((32, 32), (32, 32)))
    (root / "images" / "val" / "im1.png").write_bytes(b"not a png")
    code = main(
        [
            "eval",
            "--dataset",
            "generic",
            "--data-root",
            str(root),
            "--weights",
            str(tiny_weights),
            "--out",
            str(tmp_path / "x.json"),
            "--workers",
            "1",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "im1.png" in err and "Traceback" not in err


def test_cli_official_numerics(tiny_model, tiny_weights, generic_root, tmp_path, capsys):
    import copy

    out = tmp_path / "official.json"
    common = ["--dataset", "generic", "--data-root", str(generic_root), "--weights", str(tiny_weights)]
    assert _run(*common, "--out", str(out), "--numerics", "official") == 0
    model = copy.deepcopy(tiny_model)
    model.set_numerics("official")
    expected = evaluate(LSegPredictor(model, device="cpu"), GenericSegmentation(generic_root), progress=False)
    data = json.loads(out.read_text())
    assert data["confusion_matrix"] == expected.confusion.tolist()
    assert data["protocol"]["numerics"] == "official"
    assert (
        _run(*common, "--out", str(tmp_path / "x.json"), "--numerics", "official", "--precision", "bf16") == 2
    )
    assert "--numerics official" in capsys.readouterr().err
