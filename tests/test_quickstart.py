"""The README's quick start, run as written, and the bundled lseg-toy scored on fresh toy scenes."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

import langseg
from langseg.cli import main
from langseg.data.toy import ToyConfig, ToySegmentation
from langseg.eval.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


def readme_first_command() -> str:
    """The first line of the first bash block of README.md (the quick start)."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return next(ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#"))


def test_readme_quick_start_writes_its_three_outputs(tmp_path, monkeypatch, capsys):
    setup, segment = (part.strip() for part in readme_first_command().split("&&"))
    assert setup == "bash scripts/setup.sh" and (ROOT / "scripts" / "setup.sh").is_file()  # CI ran it already
    argv = shlex.split(segment)
    assert argv[0] == ".venv/bin/langseg"  # the console script; scripts/test.sh runs it from a built wheel
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)  # relative paths as in a checkout, outputs away from it
    assert main(argv[1:]) == 0
    out = tmp_path / "langseg-out"
    labels = ["background", "red circle", "blue square", "green triangle", "yellow diamond"]
    mask = Image.open(out / "toy_scene.mask.png")
    assert mask.mode == "P" and mask.size == (96, 96)  # indexed PNG, pixel value = label index
    truth = np.asarray(Image.open(ROOT / "tests" / "data" / "toy_scene_mask.png"))
    assert (np.asarray(mask) == truth).mean() > 0.95  # the toy model gets the example right
    overlay = Image.open(out / "toy_scene.overlay.png")
    assert overlay.mode == "RGB" and overlay.size[1] >= 96  # the picture (plus its legend)
    record = json.loads((out / "toy_scene.json").read_text())
    assert [entry["name"] for entry in record["labels"]] == labels
    shares = np.array([entry["share"] for entry in record["labels"]])
    counts = np.bincount(np.asarray(mask).ravel(), minlength=len(labels)) / np.asarray(mask).size
    assert np.allclose(shares, counts) and record["weights"]["weights"] == "lseg-toy"
    assert record["outputs"] == {"mask": "toy_scene.mask.png", "overlay": "toy_scene.overlay.png"}


def test_data_example_writes_the_readme_example(tmp_path, capsys):
    """An installed wheel has no examples/: 'langseg data example' writes the same pixels."""
    assert main(["data", "example", "--out", str(tmp_path)]) == 0
    ours, shipped = Image.open(tmp_path / "toy_scene.png"), Image.open(ROOT / "examples" / "toy_scene.png")
    assert ours.mode == shipped.mode and np.array_equal(np.asarray(ours), np.asarray(shipped))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy_scene.png"]  # no ground truth among photos
    assert main(["data", "example", "--out", str(tmp_path)]) == 2  # never overwrites silently
    assert "--overwrite" in capsys.readouterr().err


def test_bundled_toy_model_scores_on_fresh_toy_scenes():
    """README: toy val mIoU 0.9685 (100 scenes of the training seed); here scenes of an unseen seed."""
    model = langseg.load_model("lseg-toy")
    predictor = langseg.LSegPredictor(model)
    scenes = ToySegmentation(40, "val", ToyConfig(seed=2027))
    score = evaluate(predictor, scenes, progress=False).metrics()["mIoU"]  # one confusion matrix, 40 scenes
    print(f"lseg-toy mIoU on 40 unseen scenes: {score:.4f}")
    assert score >= 0.95, score
