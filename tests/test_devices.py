"""Everything that runs on a GPU keeps its tensors there: checked without a GPU on fake CUDA tensors.

``FakeTensorMode`` gives tensors a device, shape and dtype but no data, and refuses to mix devices
in one op, so a tensor created on the CPU by mistake (an index, a padding value, a mean) inside the
model, the inference protocols, the Predictor or the training step fails here as it would on a GPU.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from langseg.inference import MultiScaleConfig
from langseg.models import create_model
from langseg.predictor import LSegPredictor
from langseg.train.module import segmentation_loss

LABELS = ["sky", "tree;bush", "road"]


@pytest.fixture()
def fake_cuda(monkeypatch):
    """A tiny model with fake CUDA weights, inside the fake-tensor mode."""
    torch.manual_seed(0)
    model = create_model("lseg_tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast("cuda") warns that CUDA is absent and stays off
        with FakeTensorMode(allow_non_fake_inputs=True):
            model = model.to("cuda")
            # a second .to() of fake parameters trips over torch's tensor swapping; it is a no-op
            monkeypatch.setattr(model, "to", lambda *args, **kwargs: model)
            yield model


def _on_cuda(t: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert isinstance(t, FakeTensor) and t.device.type == "cuda" and tuple(t.shape) == shape


@pytest.mark.parametrize("protocol", ["single", "flip", "multi-scale", "sliding-window"])
def test_predictor_protocols_stay_on_the_device(fake_cuda, protocol):
    model = fake_cuda.eval()
    ms = {
        "multi-scale": MultiScaleConfig(scales=(0.75, 1.0), base_size=96, crop_size=64, batch_size=2),
        "sliding-window": MultiScaleConfig.sliding_window(64, flip=True, batch_size=3),
    }.get(protocol)
    predictor = LSegPredictor(model, multi_scale=ms, flip=protocol == "flip")  # on the model's device
    assert predictor.device.type == "cuda" and predictor.precision in ("bf16", "fp16")  # "auto" on CUDA
    image = (np.random.default_rng(0).random((70, 100, 3)) * 255).astype(np.uint8)
    x, size = predictor.preprocess(image)
    _on_cuda(x, (1, 3, 70, 100))
    text, _ = predictor.text_features(LABELS)
    _on_cuda(text, (3, model.config.embed_dim))
    _on_cuda(predictor.logits_tensor(x, text), (1, 3, 70, 100))
    _on_cuda(predictor.features(image), (model.config.embed_dim, 35, 50))
    _on_cuda(predictor.features(image, resolution="full"), (model.config.embed_dim, 70, 100))


def test_training_loss_stays_on_the_device_without_host_syncs(fake_cuda):
    """The forward and loss of a training step: fake tensors refuse ``.item()``/``bool()`` on data,
    so this also checks that the step never waits for the GPU. (Backward needs a real CUDA context.)"""
    model = fake_cuda.train()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    y = torch.randint(0, 3, (2, 64, 64), device="cuda")
    loss = segmentation_loss(model(x, model.encode_text(LABELS)), y)
    _on_cuda(loss, ())
    assert loss.requires_grad
