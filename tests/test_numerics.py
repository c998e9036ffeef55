"""fp32 vs the official float16 numerics at the logit range of real checkpoints (+-1/0.07 = +-14.3)."""

from __future__ import annotations

import torch

import langseg
from langseg.data.base import IGNORE_INDEX

LABELS = ["cat", "dog", "grass", "sky", "road", "car"]


def wide_logit_model(seed: int = 0):
    """A tiny LSeg whose pixel embeddings lie in the span of the label embeddings, so that cosine
    similarities (and logits = cos / 0.07) reach the +-14.3 that trained checkpoints reach, unlike
    random or synthesized weights, whose logits stay within about +-2."""
    torch.manual_seed(seed)
    model = langseg.create_model("lseg_tiny").eval()
    with torch.no_grad():
        text = model.encode_text(LABELS).float()  # (K, D)
        mix = torch.randn(len(LABELS), model.pixel_embed.weight.shape[1]) * 4  # (K, F)
        model.pixel_embed.weight.copy_((text.t() @ mix)[..., None, None])  # (D, F, 1, 1)
        model.pixel_embed.bias.zero_()
    model.clear_text_cache()
    return model


def test_fp32_vs_official_numerics_at_the_real_logit_range():
    """README: the fp32 default differs from the official float16 path by < 2e-2 where logits reach
    +-14.3 (one float16 step there is 2**-7 = 7.8e-3; the float16 text tower adds the rest)."""
    model = wide_logit_model()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32 = model(x, LABELS)
        model.set_numerics("official")
        official = model(x, LABELS)
    assert fp32.abs().max() > 13.5  # the weights do span the real range
    diff = (fp32 - official).abs().max().item()
    assert 2**-9 < diff < 2e-2  # larger than at +-2 (so the range matters), within the stated bound
    assert (fp32.argmax(1) == official.argmax(1)).float().mean() >= 0.99


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def official_training_step(model, images, target, labels) -> None:
    """The official step written out (LSegNet.forward + SegmentationLosses, fp32 trainer, no AMP):
    fp32 image network, fp16 text features, ``(scale * e.half()) @ t.T`` in float16, back to float32,
    x2 bilinear upsampling, cross-entropy; ``backward`` runs through the same float16 product."""
    with torch.no_grad():
        text = model.encode_text(labels)  # (K, D) float16 from the float16 tower (test_parity: bit-exact)
    assert text.dtype == torch.float16
    emb = model.forward_embeddings(images)  # (B, D, h, w) float32
    B, D, h, w = emb.shape
    e = emb.permute(0, 2, 3, 1).reshape(B * h * w, D)  # rows, as the official code flattens
    e = e / e.norm(dim=-1, keepdim=True)  # fp32, no epsilon
    scale = torch.tensor(model.logit_scale, dtype=torch.float32)  # 0-dim fp32: 14.2857...
    logits = (scale * e.half()) @ text.t()  # float16 forward, float16 backward
    logits = logits.float().view(B, h, w, -1).permute(0, 3, 1, 2)  # (B, K, h, w)
    out = torch.nn.functional.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)
    loss = torch.nn.functional.cross_entropy(out, target, ignore_index=IGNORE_INDEX)
    loss.backward()  # no loss scaling


def test_official_training_numerics_give_the_gradients_of_the_official_fp16_step():
    import copy

    from langseg.train.config import ModelSpec
    from langseg.train.module import segmentation_loss
    from langseg.train.run import build_model

    torch.manual_seed(0)
    ours = build_model(ModelSpec(name="lseg_tiny", numerics="official")).train()
    reference = copy.deepcopy(ours)
    fp32 = copy.deepcopy(ours)
    fp32.set_numerics("fp32")
    labels = ["cat", "dog", "grass"]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 64, 64, generator=g)
    target = torch.randint(0, 3, (2, 64, 64), generator=g)
    target[:, :8] = IGNORE_INDEX
    for model in (ours, fp32):
        text = model.encode_text(labels)
        segmentation_loss(model(x, text), target).backward()  # what LSegTrainModule.training_step runs
    official_training_step(reference, x, target, labels)
    got, want, plain = _grads(ours), _grads(reference), _grads(fp32)
    assert got.keys() == want.keys() and "pixel_embed.weight" in got
    for name in want:
        assert torch.equal(got[name], want[name]), name  # bit for bit
    # the option matters: the fp32 default's gradients differ (by 7.5e-3 of the largest entry here)
    gap = max((plain[n] - want[n]).abs().max().item() / want[n].abs().max().item() for n in want)
    assert gap > 1e-3
