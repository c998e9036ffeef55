"""``langseg segment`` driven as a user would: real files, a tiny random-weight model saved in our format.

One test runs the installed command in a subprocess; the others call the same entry point in-process
(``langseg.cli.main``), which is the code the console script runs, to keep the suite fast.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SUBPROCESS_ENV
from PIL import Image

from langseg.cli import main
from langseg.inference import MultiScaleConfig, multi_scale, pad_value
from langseg.visualize import palette

LABELS = "a,b,c,d,e,f,g,h,i,j"  # ten labels: a random tiny model then picks a few, not all


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder: two good images (one EXIF-rotated JPEG, one RGBA in a sub-folder), one plain, two bad files."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 96, 3)) * 255).astype(np.uint8)).save(root / "a.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 70 wide x 40 high, shown 40 wide x 70 high
    Image.fromarray((rng.random((40, 70, 3)) * 255).astype(np.uint8)).save(root / "rot.jpg", exif=exif)
    (root / "sub").mkdir()
    rgba = (rng.random((50, 30, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "sub" / "c.png")
    (root / "broken.jpg").write_text("this is not a picture")
    (root / "empty.png").write_bytes(b"")
    return root


def normalized(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) normalized with the tiny model's mean = std = 0.5."""
    return (torch.from_numpy(np.array(arr)).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def legend_colors(overlay: Image.Image, width: int, height: int) -> set[tuple[int, ...]]:
    arr = np.asarray(overlay.convert("RGB"))
    region = np.concatenate([arr[:, width:].reshape(-1, 3), arr[height:, :width].reshape(-1, 3)])
    return {tuple(int(v) for v in c) for c in np.unique(region, axis=0)}


def test_segment_folder_subprocess(images, tiny_weights, tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "langseg",
            "segment",
            str(images),
            "--labels",
            LABELS,
            "--weights",
            str(tiny_weights),
            "--out",
            str(out),
            "--batch-size",
            "2",
        ],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # some inputs skipped, the others done
    assert "Traceback" not in proc.stderr
    assert "broken.jpg: not an image file" in proc.stderr and "empty.png: the file is empty" in proc.stderr
    assert "segmented 3 images" in proc.stdout
    from langseg import LSegPredictor

    predictor = LSegPredictor(tiny_model)
    names = LABELS.split(",")
    sha = hashlib.sha256((tiny_weights / "model.safetensors").read_bytes()).hexdigest()
    for rel, size in [("a", (96, 64)), ("rot", (40, 70)), ("sub/c", (30, 50))]:
        mask_img = Image.open(out / f"{rel}.mask.png")
        assert mask_img.mode == "P" and mask_img.size == size  # the upright input's size
        mask = np.asarray(mask_img)
        assert mask.max() < len(names)
        src = next(images.glob(f"{rel}.*"))
        expected = predictor.predict(src, names).labels
        assert np.array_equal(mask, expected)  # the model's answer, EXIF and RGBA handled the same
        record = json.loads((out / f"{rel}.json").read_text())
        present = sorted(int(i) for i in np.unique(mask))
        assert record["present"] == present
        assert record["image_size"] == {"width": size[0], "height": size[1]}
        counts = np.bincount(mask.ravel(), minlength=len(names)) / mask.size
        assert [lab["share"] for lab in record["labels"]] == pytest.approx(counts.tolist())
        assert [lab["name"] for lab in record["labels"]] == names
        assert record["weights"]["sha256"] == sha
        overlay = Image.open(out / f"{rel}.overlay.png")
        assert overlay.width >= size[0] and overlay.height >= size[1] and overlay.size != size
        in_legend = legend_colors(overlay, *size)
        listed = [i for i, c in enumerate(palette(len(names))) if tuple(int(v) for v in c) in in_legend]
        assert listed == present  # the legend lists exactly the labels present


def _expected_text(model, classes: list[list[str]], templates: list[str]) -> torch.Tensor:
    """Text features computed by hand: every prompt embedded, unit-normed, averaged per class, re-normed."""
    rows = []
    for names in classes:
        prompts = [t.format(n) for n in names for t in templates]
        with torch.no_grad():
            emb = F.normalize(model.text_encoder(model.text_encoder.tokenize(prompts)).float(), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


def test_synonyms_and_templates_change_the_text_embedding(images, tiny_weights, tiny_model, tmp_path, capsys):
    arr = np.asarray(Image.open(images / "a.png").convert("RGB"))
    x = normalized(arr)  # 64 x 96: no padding involved
    cases = {
        "plain": (["--labels", "cat,grass"], [["cat"], ["grass"]], ["{}"]),
        "synonyms": (["--labels", "cat;kitten,grass;lawn"], [["cat", "kitten"], ["grass", "lawn"]], ["{}"]),
        "templates": (
            ["--labels", "cat,grass", "--template", "a photo of a {}.", "--template", "a {} here"],
            [["cat"], ["grass"]],
            ["a photo of a {}.", "a {} here"],
        ),
    }
    got = {}
    for key, (argv, classes, templates) in cases.items():
        code, _, err = run_cli(
            capsys,
            "segment",
            images / "a.png",
            *argv,
            "--weights",
            tiny_weights,
            "--out",
            tmp_path / key,
            "--save-logits",
        )
        assert code == 0, err
        logits = torch.from_numpy(np.load(tmp_path / key / "a.logits.npy").astype(np.float32))
        with torch.no_grad():
            expected = tiny_model(x, _expected_text(tiny_model, classes, templates))[0]
        assert logits.shape == expected.shape == (2, 64, 96)
        assert torch.allclose(logits, expected, atol=2e-2)  # stored as float16
        record = json.loads((tmp_path / key / "a.json").read_text())
        assert [lab["synonyms"] for lab in record["labels"]] == classes
        got[key] = logits
    assert (got["synonyms"] - got["plain"]).abs().max() > 0.1  # synonyms really enter the embedding
    assert (got["templates"] - got["plain"]).abs().max() > 0.1


def test_multi_scale_equals_the_evaluator(images, tiny_weights, tiny_model, tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "segment",
        images / "a.png",
        "--labels",
        "a,b,c,d",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path,
        "--multi-scale",
        "--save-logits",
    )
    assert code == 0, err
    x = normalized(np.asarray(Image.open(images / "a.png").convert("RGB")))
    text = _expected_text(tiny_model, [["a"], ["b"], ["c"], ["d"]], ["{}"])
    with torch.no_grad():
        ref = multi_scale(
            lambda b: tiny_model(b, text), x, pad_value((0.5,) * 3, (0.5,) * 3), MultiScaleConfig()
        )[0]
    mask = np.asarray(Image.open(tmp_path / "a.mask.png"))
    logits = np.load(tmp_path / "a.logits.npy").astype(np.float32)
    assert np.allclose(logits, ref.numpy(), rtol=2e-3, atol=2e-2)  # float16 file of sums over 12 runs
    top2 = ref.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-3).numpy()  # ignore exact near-ties, where rounding may decide
    assert clear.mean() > 0.95
    assert np.array_equal(mask[clear], ref.argmax(0).numpy()[clear])
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["preprocessing"]["multi_scale"]["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert record["preprocessing"]["flip"] is True


def test_sliding_window_runs_windows_at_native_resolution(tiny_weights, tiny_model, tmp_path, capsys):
    """--sliding-window 64 on a 100x150 image: the evaluator's windows over the unresized image."""
    rng = np.random.default_rng(3)
    arr = (rng.random((100, 150, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.png")
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys,
        "segment",
        tmp_path / "big.png",
        "--labels",
        "a,b,c,d",
        "--weights",
        tiny_weights,
        "--out",
        out,
        "--sliding-window",
        "64",
        "--save-logits",
    )
    assert code == 0, err
    text = _expected_text(tiny_model, [["a"], ["b"], ["c"], ["d"]], ["{}"])
    cfg = MultiScaleConfig(scales=(1.0,), flip=False, base_size=150, crop_size=64)  # base = the long side
    with torch.no_grad():
        ref = multi_scale(
            lambda b: tiny_model(b, text), normalized(arr), pad_value((0.5,) * 3, (0.5,) * 3), cfg
        )[0]
    logits = np.load(out / "big.logits.npy").astype(np.float32)
    assert logits.shape == (4, 100, 150)
    assert np.allclose(logits, ref.numpy(), rtol=2e-3, atol=1e-2)
    record = json.loads((out / "big.json").read_text())["preprocessing"]
    assert record["mode"] == "sliding-window" and record["max_side"] is None  # native resolution by default
    assert record["multi_scale"]["crop_size"] == 64 and record["multi_scale"]["stride"] == 42

    code, _, err = run_cli(
        capsys,
        "segment",
        tmp_path / "big.png",
        "--labels",
        "a,b",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "x",
        "--sliding-window",
        "--multi-scale",
    )
    assert code != 0 and "--multi-scale and --sliding-window" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["segment", str(tmp_path / "big.png"), "--labels", "a", "--sliding-window", "100"])
    assert "multiple of 32" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--labels", ""], "the label list is empty"),
        (["--labels", "cat,dog,Cat"], "'Cat' appears twice"),
        (["--labels", "cat," + "very " * 80], "tokens long"),
        (["--labels", "cat", "--template", "a photo"], "exactly once"),
        (["--labels-file", "missing.txt"], "missing.txt: cannot read"),
        (["--labels", "cat", "--weights", "no/such/weights"], "no such file"),
        (["--labels", "cat", "--alpha", "2"], "--alpha"),
    ],
)
def test_bad_options_fail_cleanly_before_any_output(images, tiny_weights, tmp_path, capsys, argv, message):
    if "--weights" not in argv:
        argv = [*argv, "--weights", tiny_weights]
    code, out, err = run_cli(capsys, "segment", images / "a.png", *argv, "--out", tmp_path / "out")
    assert code == 2
    assert message in err and err.startswith("langseg: error:")
    assert not (tmp_path / "out").exists()


def test_no_images_found(tmp_path, tiny_weights, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        capsys,
        "segment",
        tmp_path / "empty",
        str(tmp_path / "*.png"),
        "--labels",
        "a",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "out",
    )
    assert code == 2 and "no images to process" in err and "*.png: the pattern matched no images" in err


def test_existing_outputs_are_kept_unless_asked(images, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    common = [
        "segment",
        images / "a.png",
        images / "sub",
        "--labels",
        "a,b,c",
        "--weights",
        tiny_weights,
        "--out",
        out,
    ]
    assert run_cli(capsys, *common)[0] == 0
    files = sorted(out.rglob("*"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files if p.is_file()}
    (out / "a.json").write_text("my notes")  # a user's edit must survive
    code, _, err = run_cli(capsys, *common)
    assert code == 2 and "output files exist" in err and "--overwrite" in err
    assert (out / "a.json").read_text() == "my notes"
    (out / "c.overlay.png").unlink()
    code, stdout, _ = run_cli(capsys, *common, "--skip-existing")
    assert code == 0 and "kept 1 already done" in stdout and "segmented 1 image" in stdout
    assert (out / "a.json").read_text() == "my notes"
    assert (out / "c.overlay.png").exists()
    assert (out / "c.mask.png").stat().st_mtime_ns == before[out / "c.mask.png"][1]  # not rewritten
    code, _, _ = run_cli(capsys, *common, "--overwrite")
    assert code == 0 and json.loads((out / "a.json").read_text())["input"].endswith("a.png")
    assert sorted(out.rglob("*")) == files  # no stray temporary files


def test_bad_and_oversized_inputs_are_skipped_others_written(images, tiny_weights, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (30, 20), (10, 200, 30)).save(src / "small.png")
    Image.new("RGB", (96, 64), (10, 200, 30)).save(src / "large.png")
    data = (images / "rot.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(data[: len(data) // 3])
    code, out, err = run_cli(
        capsys,
        "segment",
        src,
        "--labels",
        "a,b",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "out",
        "--max-pixels",
        "3000",
    )
    assert code == 1
    assert "large.png: 96x64 = 6,144 pixels is above the limit of 3,000" in err
    assert "cut.jpg: corrupt or truncated image" in err and "Traceback" not in err
    assert "segmented 1 image" in out
    assert Image.open(tmp_path / "out" / "small.mask.png").size == (30, 20)
    assert not (tmp_path / "out" / "large.mask.png").exists()


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in [
        "--labels-file",
        "--template",
        "--multi-scale",
        "--flip",
        "--max-side",
        "--max-pixels",
        "--batch-size",
        "--precision",
        "--device",
        "--overwrite",
        "--skip-existing",
        "examples:",
        "exit status",
    ]:
        assert option in text, option
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("langseg ")


def test_out_of_memory_retries_one_by_one_then_skips(images, tiny_weights, tmp_path, capsys, monkeypatch):
    from langseg.predictor import LSegPredictor

    original = LSegPredictor.predict

    def predict(self, imgs, labels=None, **kw):  # a batch never fits; the 40-wide image never fits
        if isinstance(imgs, list) and len(imgs) > 1 or getattr(imgs, "shape", (0, 0))[1] == 40:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, imgs, labels, **kw)

    monkeypatch.setattr(LSegPredictor, "predict", predict)
    code, out, err = run_cli(
        capsys,
        "segment",
        images / "a.png",
        images / "rot.jpg",
        "--labels",
        "a,b",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path,
        "--batch-size",
        "2",
    )
    assert code == 1
    assert "rot.jpg: out of memory for 40x70" in err and "--max-side" in err and "Traceback" not in err
    assert (tmp_path / "a.mask.png").exists() and not (tmp_path / "rot.mask.png").exists()
    assert "segmented 1 image" in out


def test_compile_exact_gives_the_eager_masks(images, tiny_weights, tmp_path, capsys, eager_compile):
    """--compile exact: the image network goes through torch.compile (the command asks for inductor;
    the test runs dynamo's eager backend) and the masks equal the eager run's."""
    common = [
        "segment",
        images / "a.png",
        images / "sub",
        "--labels",
        LABELS,
        "--weights",
        tiny_weights,
        "--no-overlay",
    ]
    code, _, err = run_cli(capsys, *common, "--out", tmp_path / "eager")
    assert code == 0, err
    code, _, err = run_cli(capsys, *common, "--out", tmp_path / "compiled", "--compile", "exact")
    assert code == 0, err
    assert eager_compile == ["inductor"]
    for name in ("a", "c"):
        eager = np.asarray(Image.open(tmp_path / "eager" / f"{name}.mask.png"))
        compiled = np.asarray(Image.open(tmp_path / "compiled" / f"{name}.mask.png"))
        assert np.array_equal(eager, compiled)
    record = json.loads((tmp_path / "compiled" / "a.json").read_text())
    assert record["preprocessing"]["compile"] == "exact"


def test_official_numerics_option(images, tiny_weights, tiny_model, tmp_path, capsys):
    """--numerics official: the logits of the model in official numerics (fp32 image network), recorded."""
    import copy

    code, _, err = run_cli(
        capsys,
        "segment",
        images / "a.png",
        "--labels",
        "a,b,c,d",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path,
        "--numerics",
        "official",
        "--save-logits",
        "--no-overlay",
    )
    assert code == 0, err
    model = copy.deepcopy(tiny_model)
    model.set_numerics("official")
    x = normalized(np.asarray(Image.open(images / "a.png").convert("RGB")))  # 64 x 96: no padding
    with torch.no_grad():
        expected = model(x, ["a", "b", "c", "d"])[0]
    logits = np.load(tmp_path / "a.logits.npy").astype(np.float32)
    assert np.allclose(logits, expected.numpy(), atol=2e-3)  # a float16 file
    record = json.loads((tmp_path / "a.json").read_text())["preprocessing"]
    assert record["numerics"] == "official" and record["precision"] == "fp32"
    code, _, err = run_cli(
        capsys,
        "segment",
        images / "a.png",
        "--labels",
        "a,b",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "x",
        "--numerics",
        "official",
        "--precision",
        "bf16",
    )
    assert code == 2 and "--numerics official" in err and "Traceback" not in err
