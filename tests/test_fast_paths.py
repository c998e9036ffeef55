"""Every inference/training fast path against the reference (official op order) outputs.

Tolerances (documented in docs/performance.md): fp32 rearrangements <= 1e-5 absolute on logits
(which are bounded by +-14.3) and on unit-norm embeddings; bf16 autocast on CPU <= 0.1 on logits
with embedding cosine >= 0.999; bucketed compile is approximate and only checked for shapes.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
import time

import numpy as np
import pytest
import torch

from langseg import LSegPredictor
from langseg.accel import CompiledLSeg, ShapeBuckets, autocast, channels_last, resolve_precision
from langseg.inputs import prefetch_map
from langseg.models import FastPaths, create_model

FP32_TOL = 1e-5
BF16_LOGIT_TOL = 0.1
LABELS = ["cat", "grass", "sky", "other"]
FLAGS = [f.name for f in dataclasses.fields(FastPaths)]


def _model(**overrides):
    torch.manual_seed(0)
    model = create_model("lseg_tiny", **overrides).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 96, 128, generator=g)  # not square, not the native 64x64 grid


def _run(model, images, paths: FastPaths, labels=LABELS):
    model.set_fast_paths(paths)
    try:
        with torch.no_grad():
            return model(images, labels), model.encode_image(images)
    finally:
        model.set_fast_paths(FastPaths())


@pytest.fixture(scope="module")
def reference(model, images):
    return _run(model, images, FastPaths.reference())


@pytest.mark.parametrize("flag", FLAGS)
def test_each_fast_path_matches_reference(model, images, reference, flag):
    logits, emb = _run(model, images, dataclasses.replace(FastPaths.reference(), **{flag: True}))
    ref_logits, ref_emb = reference
    assert logits.shape == ref_logits.shape == (2, len(LABELS), 96, 128)
    assert (logits - ref_logits).abs().max() <= FP32_TOL
    assert (emb - ref_emb).abs().max() <= FP32_TOL


def test_all_fast_paths_match_reference(model, images, reference):
    logits, emb = _run(model, images, FastPaths())
    assert (logits - reference[0]).abs().max() <= FP32_TOL
    assert (emb - reference[1]).abs().max() <= FP32_TOL
    assert torch.equal(logits.argmax(1), reference[0].argmax(1))


def test_fast_paths_with_spatial_block_and_per_image_text(images):
    model = _model(arch_option=1, block_depth=2)
    text = torch.nn.functional.normalize(torch.randn(2, 3, model.config.embed_dim), dim=-1)  # (B, K, D)
    ref, _ = _run(model, images, FastPaths.reference(), labels=text)
    out, _ = _run(model, images, FastPaths(), labels=text)
    assert (out - ref).abs().max() <= FP32_TOL


def test_sdpa_matches_explicit_attention(model, images):
    explicit, _ = _run(model, images, dataclasses.replace(FastPaths(), fused_attn=False))
    fused, _ = _run(model, images, FastPaths())
    assert (fused - explicit).abs().max() <= FP32_TOL
    assert not torch.equal(fused, explicit)  # a different kernel really ran


def test_training_fast_paths_give_reference_gradients(images):
    grads = {}
    for name, paths in (("ref", FastPaths.reference()), ("fast", FastPaths())):
        model = _model().train()
        model.set_fast_paths(paths)
        model(images[:1], LABELS).logsumexp(1).mean().backward()
        grads[name] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        missing = [
            n
            for n, g in grads[name].items()
            if g is None and "fusion.3.rcu1" not in n and "vit.norm" not in n
        ]
        assert not missing
    for n, g in grads["ref"].items():
        if g is not None:
            assert torch.allclose(grads["fast"][n], g, atol=1e-5, rtol=1e-4), n


def test_grad_checkpointing_gives_same_gradients(images):
    grads = []
    for enabled in (False, True):
        model = _model().train()
        model.set_grad_checkpointing(enabled)
        model(images[:1], LABELS).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5), n


def test_channels_last_matches_reference(images, reference):
    model = channels_last(_model())
    assert model.neck.proj[0].weight.is_contiguous(memory_format=torch.channels_last)
    logits, emb = _run(model, images, FastPaths())
    assert (logits - reference[0]).abs().max() <= FP32_TOL
    assert (emb - reference[1]).abs().max() <= FP32_TOL


def test_bf16_autocast_on_cpu_within_loose_tolerance(model, images, reference):
    assert resolve_precision("cpu") == "fp32"  # CPU default stays fp32
    with torch.no_grad(), autocast("cpu", "bf16"):
        logits, emb = model(images, LABELS), model.encode_image(images)
    assert logits.dtype == torch.float32
    diff = (logits - reference[0]).abs().max()
    assert 0 < diff <= BF16_LOGIT_TOL  # bf16 really ran, and stayed close
    assert (emb * reference[1]).sum(1).min() >= 0.999


def test_deepcopy_and_pickle_drop_derived_caches(model, images):
    with torch.no_grad():
        model(images, LABELS)
    clone = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    for m in (clone, restored):
        assert len(m._text_cache) == 0
        with torch.no_grad():
            assert torch.allclose(m(images, LABELS), model(images, LABELS), atol=FP32_TOL)


def test_model_built_in_inference_mode_runs_fast_paths(images, reference):
    with torch.inference_mode():  # weights are inference tensors (no version counters)
        model = _model()
        assert (model(images, LABELS) - reference[0]).abs().max() <= FP32_TOL


def test_unknown_fast_path_is_a_clear_error(model):
    with pytest.raises(ValueError, match="unknown fast path"):
        model.set_fast_paths(warp_speed=True)


def test_compiled_exact_and_bucketed_modes(images, reference):
    # backend="eager" traces with dynamo and runs the captured graph without generating code (an
    # inductor build of even the tiny model takes minutes on a small CPU; the benchmark runs it)
    model = _model()
    exact = CompiledLSeg(model, mode="exact", backend="eager", max_shapes=1)
    with torch.no_grad():
        assert (exact(images, LABELS) - reference[0]).abs().max() <= FP32_TOL
        out = exact(images[:1, :, :64, :64], LABELS)  # over max_shapes: runs eagerly
    assert exact.compiled_shapes == [(2, 3, 96, 128)]
    assert out.shape == (1, 4, 64, 64)
    pred = LSegPredictor(exact).predict(np.zeros((40, 50, 3), np.uint8), LABELS)  # stands in for LSeg
    assert pred.labels.shape == (40, 50) and pred.label_names == LABELS

    bucketed = CompiledLSeg(model, mode="bucketed", backend="eager", buckets=ShapeBuckets(multiple=64))
    x = images[:1, :, :, :96]  # 96x96 -> bucket 128x128, padded with normalized black
    padded = torch.cat([x, bucketed.pad.view(1, 3, 1, 1).expand(1, 3, 96, 32)], dim=3)
    padded = torch.cat([padded, bucketed.pad.view(1, 3, 1, 1).expand(1, 3, 32, 128)], dim=2)
    with torch.no_grad():
        a = bucketed.forward_embeddings(x)
        b = bucketed(images[:1], LABELS)  # 96x128 -> the same bucket: no new graph
        expected = model.forward_embeddings(padded)[:, :, :48, :48]
    assert a.shape == (1, 32, 48, 48) and b.shape == (1, 4, 96, 128)
    assert bucketed.compiled_shapes == [(1, 3, 128, 128)]
    assert (a - expected).abs().max() <= FP32_TOL  # bucketed == run on the padded image, cropped


def test_prefetch_map_is_ordered_bounded_and_raises():
    started, lock = [], threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.002 * (i % 3))
        if i == 7:
            raise RuntimeError("bad item 7")
        return i * i

    got = []
    with pytest.raises(RuntimeError, match="bad item 7"):
        for v in prefetch_map(work, range(20), workers=3, depth=4):
            with lock:
                assert max(started) < len(got) + 4  # never more than `depth` items in flight
            got.append(v)
    assert got == [i * i for i in range(7)]
    assert max(started) < 7 + 4  # work past the failure was never started
