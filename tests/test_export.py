"""langseg export --format onnx: dynamic sizes, logits with labels, parity with the eager model, refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime as ort
import pytest
import torch

import langseg
from langseg.cli import main
from langseg.export import ExportError, export_onnx

LABELS = "background,red circle;red disc,blue square"


def test_cli_export_with_labels_matches_eager(tmp_path, capsys):
    out = tmp_path / "toy.onnx"
    argv = ["export", "lseg-toy", str(out), "--format", "onnx", "--labels", LABELS]
    assert main([*argv, "--verify-size", "64x64", "--verify-size", "96x160"]) == 0
    printed = capsys.readouterr().out
    diffs = [float(d) for d in re.findall(r"max \|onnxruntime - eager\| = (\S+)", printed)]
    assert len(diffs) == 4 and max(diffs) <= 1e-4, printed  # pixels and logits at two sizes
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["outputs"] == ["pixels", "logits"] and record["labels"] == LABELS.split(",")

    # independently of the export's own check: a third size, batch 2, against the model as users run it
    model = langseg.load_model("lseg-toy")
    images = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pixels, logits = session.run(["pixels", "logits"], {"images": images.numpy()})
    with torch.no_grad():
        eager_logits = model(images, [x.split(";") if ";" in x else x for x in LABELS.split(",")])
        eager_pixels = model.encode_image(images)
    assert logits.shape == (2, 3, 128, 96) and pixels.shape == (2, model.config.embed_dim, 64, 48)
    assert np.abs(logits - eager_logits.numpy()).max() < 1e-3  # eager fast paths: rounding only
    assert np.abs(pixels - eager_pixels.numpy()).max() < 1e-4
    assert (logits.argmax(1) == eager_logits.argmax(1).numpy()).mean() > 0.999

    # outputs are never replaced without --overwrite
    assert main(argv) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_float16_export_leaves_the_model_alone(tiny_model, tmp_path):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    result = export_onnx(
        tiny_model, tmp_path / "tiny16.onnx", dtype=torch.float16, verify_sizes=[(64, 64), (64, 128)]
    )
    assert result.outputs == ["pixels"] and all(c.ok and c.tolerance == 2e-2 for c in result.checks)
    assert not tiny_model.training and tiny_model.fast_paths == langseg.models.lseg.FastPaths()
    for k, v in tiny_model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k


def test_refusals(tiny_model, tmp_path, capsys):
    with pytest.raises(ExportError, match="bfloat16"):
        export_onnx(tiny_model, tmp_path / "a.onnx", dtype=torch.bfloat16)
    with pytest.raises(ExportError, match="opset 13 is too old"):
        export_onnx(tiny_model, tmp_path / "a.onnx", opset=13)
    tiny_model.set_numerics("official")
    try:
        with pytest.raises(ExportError, match="official numerics"):
            export_onnx(tiny_model, tmp_path / "a.onnx")
    finally:
        tiny_model.set_numerics("fp32")
    assert not (tmp_path / "a.onnx").exists()
    with pytest.raises(SystemExit):
        main(["export", "lseg-toy", str(tmp_path / "b.onnx"), "--verify-size", "100x100"])
    assert "multiples of 32" in capsys.readouterr().err
