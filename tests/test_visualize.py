"""Palette, indexed masks, overlays with legends and the PCA picture (Pillow and numpy only, no model)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from langseg.visualize import (
    colorize,
    legend_entries,
    legend_font_size,
    mask_image,
    overlay,
    palette,
    pca_rgb,
)


def test_palette_is_stable_distinct_and_visible():
    big = palette(1000)
    assert big.shape == (1000, 3) and big.dtype == np.uint8
    assert len({tuple(c) for c in big}) == 1000  # every colour distinct, even for hundreds of labels
    for n in (1, 7, 150, 999):
        assert np.array_equal(palette(n), big[:n])  # colour i never depends on n
    assert big.max(axis=1).min() >= 100  # nothing near black: visible over dark images
    assert big.min(axis=1).max() <= 200  # nothing near white: visible on the white legend panel
    first = big[:12].astype(int)  # the first labels contrast clearly with each other
    gaps = np.abs(first[:, None] - first[None]).sum(-1)[~np.eye(12, dtype=bool)]
    assert gaps.min() > 60
    with pytest.raises(ValueError):
        palette(-1)


def test_colorize_keeps_indices_and_palette():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 5, size=(13, 17))
    mask[0, 0] = 255  # ignore pixel
    img = colorize(mask, 5)
    assert img.mode == "P" and img.size == (17, 13)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    back = Image.open(io.BytesIO(buf.getvalue()))
    assert back.mode == "P"
    assert np.array_equal(np.asarray(back), mask)  # lossless: pixel values are the label indices
    pal = np.asarray(back.getpalette()[: 5 * 3], dtype=np.uint8).reshape(5, 3)
    assert np.array_equal(pal, palette(5))
    assert np.array_equal(np.asarray(back.convert("RGB"))[0, 0], [0, 0, 0])  # ignore is black
    with pytest.raises(ValueError, match="not a label index"):
        colorize(np.full((2, 2), 7), 5)
    with pytest.raises(ValueError, match="at most 256"):
        colorize(np.zeros((2, 2), int), 300)
    with pytest.raises(ValueError, match="integer"):
        colorize(np.zeros((2, 2)), 3)


def test_mask_image_above_256_labels_is_16_bit_and_lossless():
    mask = np.arange(300 * 4).reshape(40, 30) % 300
    img = mask_image(mask, 300)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    assert np.array_equal(back.astype(int), mask)
    assert mask_image(mask % 4, 4).mode == "P"


def _legend_colors(out: Image.Image, width: int, height: int) -> set[tuple[int, int, int]]:
    arr = np.asarray(out)
    region = np.concatenate([arr[:, width:].reshape(-1, 3), arr[height:, :width].reshape(-1, 3)])
    return {tuple(int(v) for v in c) for c in np.unique(region, axis=0)}


def test_overlay_blends_and_lists_only_present_labels():
    rng = np.random.default_rng(1)
    image = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    mask = np.zeros((60, 80), dtype=np.int64)
    mask[:, 40:] = 3  # labels 0 and 3 present; 1, 2, 4 absent
    names = ["sky", "tree", "grass", "house", "road"]
    out = overlay(image, mask, names, alpha=0.4)
    assert out.mode == "RGB" and out.width >= 80 and out.height >= 60 and out.size != (80, 60)
    colors = palette(5).astype(np.float64)
    expected = np.clip(0.6 * image[10, 50] + 0.4 * colors[3] + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(out)[10, 50], expected)  # the blend, computed by hand
    in_legend = _legend_colors(out, 80, 60)
    for i in range(5):  # a label's swatch is in the legend exactly when the label is in the mask
        assert (tuple(int(c) for c in palette(5)[i]) in in_legend) == (i in (0, 3)), names[i]
    entries = legend_entries(mask, names)
    assert [(e.index, e.name) for e in entries] == [(0, "sky"), (3, "house")]
    assert [e.share for e in entries] == [0.5, 0.5]
    plain = overlay(Image.fromarray(image), mask, names, legend=False)
    assert plain.size == (80, 60)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, mask[:10], names)


def test_overlay_legend_is_readable_at_any_size():
    names = ["a", "b"]
    small = overlay(np.zeros((20, 30, 3), np.uint8), np.eye(20, 30, dtype=int), names)
    assert small.height >= 2 * 12  # the legend needs room: the canvas grows beyond a tiny image
    big_img = np.zeros((1200, 1600, 3), np.uint8)
    big_mask = np.zeros((1200, 1600), int)
    big_mask[600:] = 1
    big = overlay(big_img, big_mask, names)
    assert legend_font_size(1600, 1200) == 40 and legend_font_size(30, 20) == 12
    legend_area = big.width * big.height - 1600 * 1200
    assert legend_area > 40 * 40 * 2  # text and swatches grew with the image


def test_pca_rgb_separates_structure_deterministically():
    D, h, w = 16, 12, 20
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(D), rng.standard_normal(D)
    feats = np.empty((D, h, w), np.float32)
    feats[:, :, :10] = a[:, None, None]
    feats[:, :, 10:] = b[:, None, None]
    feats += 0.01 * rng.standard_normal((D, h, w)).astype(np.float32)
    rgb = pca_rgb(torch.from_numpy(feats))
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    left, right = rgb[:, :10].reshape(-1, 3).astype(int), rgb[:, 10:].reshape(-1, 3).astype(int)
    assert np.abs(left.mean(0) - right.mean(0)).max() > 150  # the two regions get different colours
    assert np.array_equal(pca_rgb(feats), rgb)  # numpy and torch inputs, same answer
    assert np.array_equal(pca_rgb(feats, chunk=7), rgb)  # projected in chunks, same answer
    flat = pca_rgb(np.ones((4, 3, 3), np.float32))
    assert (flat == 128).all()  # no structure: neutral gray, no division by zero
    with pytest.raises(ValueError):
        pca_rgb(np.zeros((3, 4)))


@pytest.mark.parametrize(
    "text",
    ["été Ñandú ß ÿ", "Ελληνικά", "Кириллица", "中文标签", "日本語のラベル"],
    ids=["latin-1", "greek", "cyrillic", "chinese", "japanese"],
)
def test_legend_draws_every_script_as_glyphs_not_boxes(text):
    """Each character is drawn by a font of the fallback chain that has it: never the notdef box."""
    from langseg.visualize import LegendFont, has_glyph

    font = LegendFont(16)
    notdef = font.primary.getmask("\U0010fffd")
    for piece, f in font.runs(text):
        for ch in piece.replace(" ", ""):
            assert has_glyph(f, ch), f"{ch!r} drawn as a box by {getattr(f, 'path', f)}"
            mask = f.getmask(ch)
            assert (mask.size, bytes(mask)) != (notdef.size, bytes(notdef)) or f is not font.primary
    # and the picture: the legend text differs from the same number of notdef boxes
    mask = np.zeros((40, 60), int)
    mask[20:] = 1
    drawn = np.asarray(overlay(np.zeros((40, 60, 3), np.uint8), mask, [text, "x"]))
    boxes = np.asarray(overlay(np.zeros((40, 60, 3), np.uint8), mask, ["\U0010fffd" * len(text), "x"]))
    assert drawn.shape[0] == boxes.shape[0] and not np.array_equal(drawn[:, 60:], boxes[:, 60:])


def test_has_glyph_tells_a_missing_character_from_a_present_one():
    from langseg.visualize import LegendFont, has_glyph

    font = LegendFont(16).primary
    assert has_glyph(font, "a") and has_glyph(font, " ")
    assert not has_glyph(font, "\U0010fffe")  # a private-use code point: no font maps it


@pytest.mark.parametrize("shape", [(10, 30000), (30000, 10), (3, 3)])
def test_overlay_size_is_bounded_for_extreme_shapes(shape):
    from langseg.visualize import LEGEND_PIXEL_ALLOWANCE

    H, W = shape
    mask = np.zeros(shape, int)
    mask[H // 2 :, W // 2 :] = 1
    out = overlay(np.zeros((H, W, 3), np.uint8), mask, ["sky", "ground"])
    extra = out.width * out.height - W * H
    assert 0 <= extra <= max(LEGEND_PIXEL_ALLOWANCE, W * H)
    assert out.width >= W and out.height >= H
    assert out.width * out.height < Image.MAX_IMAGE_PIXELS  # Pillow opens it again


def test_legend_lists_at_most_the_largest_labels_and_counts_the_rest():
    from langseg.visualize import MAX_LEGEND_ENTRIES

    K = MAX_LEGEND_ENTRIES + 25
    mask = np.arange(200 * 300).reshape(200, 300) % K
    mask[:100] = 0  # label 0 has the largest share
    out = overlay(np.zeros((200, 300, 3), np.uint8), mask, [f"label {i:02d}" for i in range(K)])
    few = overlay(
        np.zeros((200, 300, 3), np.uint8),
        mask % MAX_LEGEND_ENTRIES,
        [f"label {i:02d}" for i in range(MAX_LEGEND_ENTRIES)],
    )
    assert out.width * out.height <= 2 * few.width * few.height  # 65 labels cost about what 40 do
    legend = np.asarray(out)[:, 300:] if out.width > 300 else np.asarray(out)[200:]
    colours = {tuple(c) for c in legend.reshape(-1, 3)}
    assert tuple(palette(K)[0]) in colours  # the largest label is listed
    assert sum(tuple(c) in colours for c in palette(K)) == MAX_LEGEND_ENTRIES
