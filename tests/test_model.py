"""The network on a tiny configuration: shapes, input checks, text cache, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from langseg.models import LabelError, create_model
from langseg.models.vit import resize_pos_embed


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (96, 32), (128, 160)])
def test_output_shapes_for_any_multiple_of_32(tiny_model, size):
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        logits = tiny_model(x, ["cat", "dog", "other"])
        emb = tiny_model.encode_image(x)
    assert logits.shape == (2, 3, *size) and logits.dtype == torch.float32
    assert emb.shape == (2, tiny_model.config.embed_dim, size[0] // 2, size[1] // 2)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2, size[0] // 2, size[1] // 2))
    assert logits.abs().max() <= tiny_model.logit_scale + 1e-4


@pytest.mark.parametrize("size", [(50, 64), (64, 48), (16, 64)])
def test_invalid_input_size_is_a_clear_error(tiny_model, size):
    with pytest.raises(ValueError, match="not a multiple of 32"):
        tiny_model(torch.randn(1, 3, *size), ["cat"])


def test_wrong_input_layout_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_model(torch.randn(3, 64, 64), ["cat"])


def test_logits_are_scaled_cosine_similarities(tiny_model):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        emb = F.normalize(tiny_model.forward_embeddings(x), dim=1)  # (1, D, 32, 32)
        text = tiny_model.encode_text(["a", "b"])
        lowres = tiny_model.logits_lowres(emb, text)
    manual = 14.285714149475098 * torch.einsum("dhw,kd->khw", emb[0], text)
    torch.testing.assert_close(lowres[0], manual, atol=1e-5, rtol=1e-5)
    full = tiny_model(x, ["a", "b"])
    torch.testing.assert_close(
        full, F.interpolate(lowres, scale_factor=2, mode="bilinear", align_corners=True), atol=1e-5, rtol=0
    )


def test_text_embeddings_are_cached_per_label_list(tiny_model, monkeypatch):
    tiny_model.clear_text_cache()
    calls = []
    original = tiny_model.text_encoder.forward
    monkeypatch.setattr(tiny_model.text_encoder, "forward", lambda t: calls.append(t.shape) or original(t))
    a = tiny_model.encode_text(["cat", "dog"])
    b = tiny_model.encode_text(["cat", "dog"])
    assert len(calls) == 1 and a is b
    tiny_model.encode_text(["dog", "cat"])
    assert len(calls) == 2
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))


def test_text_cache_is_safe_across_threads_and_survives_pickling(tiny_model):
    """Server threads share one model: concurrent lookups, inserts and evictions never fail, and a
    pickled or deep-copied model (DDP spawn) starts with its own empty cache and lock."""
    import copy
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    tiny_model.clear_text_cache()
    lists = [[f"label {i}", f"other {i % 5}"] for i in range(48)]  # more lists than the cache holds
    expected = [tiny_model.encode_text(labels).clone() for labels in lists]
    tiny_model.clear_text_cache()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: (i, tiny_model.encode_text(lists[i % 48])), range(400)))
    for i, emb in results:
        torch.testing.assert_close(emb, expected[i % 48])

    for clone in (copy.deepcopy(tiny_model), pickle.loads(pickle.dumps(tiny_model))):
        assert len(clone._text_cache) == 0 and clone._text_lock is not tiny_model._text_lock
        torch.testing.assert_close(clone.encode_text(lists[0]), expected[0])
    assert len(tiny_model._text_cache) > 0  # the original keeps its entries


def test_synonyms_and_templates_average_normalized_prompts(tiny_model):
    tiny_model.clear_text_cache()
    raw = F.normalize(tiny_model.text_encoder(tiny_model.text_encoder.tokenize(["cat", "kitten"])), dim=-1)
    group = tiny_model.encode_text([("cat", "kitten")])
    torch.testing.assert_close(group[0], F.normalize(raw.sum(0), dim=0))
    templ = tiny_model.encode_text(["cat"], templates=["a photo of a {}.", "{}"])
    prompts = tiny_model.text_encoder.tokenize(["a photo of a cat.", "cat"])
    expected = F.normalize(F.normalize(tiny_model.text_encoder(prompts), dim=-1).sum(0), dim=0)
    torch.testing.assert_close(templ[0], expected)
    assert not torch.allclose(templ[0], tiny_model.encode_text(["cat"])[0])


def test_label_errors(tiny_model):
    with pytest.raises(LabelError, match="empty"):
        tiny_model.encode_text([])
    with pytest.raises(LabelError, match="empty"):
        tiny_model.encode_text(["cat", "  "])
    with pytest.raises(LabelError, match="tokens long"):
        tiny_model.encode_text(["word " * 80])
    with pytest.raises(LabelError, match="template"):
        tiny_model.encode_text(["cat"], templates=["no placeholder"])


def test_per_image_label_sets(tiny_model):
    x = torch.randn(2, 3, 64, 64)
    pairs = torch.stack([tiny_model.encode_text(["others", n]) for n in ("cat", "dog")])
    with torch.no_grad():
        both = tiny_model(x, pairs)
        first = tiny_model(x[:1], ["others", "cat"])
        second = tiny_model(x[1:], ["others", "dog"])
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="per-image label sets"):
        tiny_model(x, pairs[:1].expand(3, -1, -1))


def test_gradients_reach_every_trainable_parameter_and_never_the_text_tower():
    torch.manual_seed(0)
    model = create_model("lseg_tiny", arch_option=1, block_depth=2).train()
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    x = torch.randn(2, 3, 64, 64)
    target = torch.randint(0, 3, (2, 64, 64))
    loss = F.cross_entropy(model(x, ["a", "b", "c"]), target)
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # parts the forward never runs: timm's final norm/classifier and the first RCU of the coarsest fusion block
    unused = ("image_encoder.vit.norm.", "image_encoder.vit.head.", "neck.fusion.3.rcu1.")
    for name, p in trainable.items():
        if name.startswith(unused):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.text_encoder.parameters())
    # a second step must work too (the official logit-scale tensor broke here)
    model.zero_grad()
    F.cross_entropy(model(x, ["a", "b", "c"]), target).backward()


def test_position_embedding_resize_is_identity_at_native_grid():
    pos = torch.randn(1, 1 + 24 * 24, 8)
    assert torch.equal(resize_pos_embed(pos, (24, 24)), pos)
    out = resize_pos_embed(pos, (20, 30))
    assert out.shape == (1, 1 + 600, 8)
    grid = pos[:, 1:].reshape(1, 24, 24, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(20, 30), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(out[:, 1:], ref.reshape(1, 600, 8))
    assert torch.equal(out[:, :1], pos[:, :1])


@pytest.mark.parametrize("arch_option", [1, 2])
def test_spatial_blocks(arch_option):
    torch.manual_seed(0)
    model = create_model("lseg_tiny", arch_option=arch_option, block_depth=3).eval()
    assert set(k for k in model.state_dict() if k.startswith("spatial_block")) == {
        "spatial_block.conv.weight",
        "spatial_block.conv.bias",
    }
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x, ["a", "b"])
        # label-equivariant: swapping labels swaps channels
        swapped = model(x, ["b", "a"])
    torch.testing.assert_close(out.flip(1), swapped, atol=1e-5, rtol=0)


def test_resnet_trunk_shapes():
    model = create_model(
        "lseg_zs_rn101", resnet=__import__("langseg").models.ResNetConfig(layers=(1, 1, 1, 1))
    )
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96), ["others", "cat"])
    assert out.shape == (1, 2, 64, 96)


def test_official_numerics_follow_the_fp32_path_within_fp16_rounding(tiny_model):
    """set_numerics("official"): float16 text tower and similarity (exactness against the official code
    is checked on the real variant in test_parity); here: dtypes, both label-set layouts, caches."""
    import copy
    import pickle

    model = copy.deepcopy(tiny_model)
    torch.manual_seed(3)
    images = torch.randn(2, 3, 64, 96)
    labels = ["cat", "dog", "grass"]
    with torch.no_grad():
        ref = model(images, labels)
        ref_per_image = model(
            images, torch.stack([model.encode_text(labels), model.encode_text(labels[::-1])])
        )
        model.set_numerics("official")
        text = model.encode_text(labels)
        got = model(images, labels)
        got_per_image = model(images, torch.stack([text, model.encode_text(labels[::-1])]))
    assert text.dtype == torch.float16 and got.dtype == torch.float32
    assert model.text_encoder.token_embedding.weight.dtype == torch.float32  # the model itself is untouched
    torch.testing.assert_close(text.float(), tiny_model.encode_text(labels), atol=2e-3, rtol=0)
    for a, b in ((got, ref), (got_per_image, ref_per_image)):
        assert (a - b).abs().max() < 0.05 and (a - b).abs().max() > 0  # fp16 rounding, not another function
    assert len(model._fp16_text) == 1
    clone = pickle.loads(pickle.dumps(model))
    assert clone.numerics == "official" and clone._fp16_text == []
    model.load_state_dict(tiny_model.state_dict())  # new weights: the float16 copy is rebuilt from them
    assert model._fp16_text == []
    with pytest.raises(ValueError, match="numerics"):
        model.set_numerics("fp16")
