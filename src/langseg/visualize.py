"""Pictures of results: a stable label palette, indexed masks, overlays with a legend, PCA of features.

Only Pillow and numpy: no plotting library. Colours depend on the label index alone, so label ``i``
has the same colour in every picture, whatever the number of labels.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import math
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)
IGNORE_INDEX = 255  # mask value drawn as "no label" (datasets mark unlabeled pixels with it)
MAX_PALETTE_LABELS = 256  # an indexed ("P") PNG holds at most this many colours

_GOLDEN = 0.6180339887498949  # hue step: consecutive labels land far apart on the colour wheel
_LEVELS = ((0.85, 0.95), (0.60, 0.85), (1.00, 0.70), (0.45, 1.00))  # (saturation, value) per block
_BLOCK = 12  # labels per (saturation, value) level; hues that come back close differ in shade


def palette(n: int) -> np.ndarray:
    """``n`` distinct colours ``(n, 3)`` uint8; colour ``i`` never depends on ``n``.

    Hues follow a golden-ratio walk (neighbouring indices contrast strongly); saturation and value
    change every 12 labels so hues that meet again later differ in shade. Every colour is distinct
    (a colour equal to an earlier one is nudged), and none is near black or white.
    """
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    out = np.zeros((n, 3), dtype=np.uint8)
    seen: set[tuple[int, int, int]] = set()
    for i in range(n):
        s, v = _LEVELS[(i // _BLOCK) % len(_LEVELS)]
        hue = (0.02 + i * _GOLDEN) % 1.0
        rgb = _quantize(colorsys.hsv_to_rgb(hue, s, v))
        step = 0
        while rgb in seen:  # rare: two hues rounded to the same bytes; darken until unique
            step += 1
            rgb = _quantize(colorsys.hsv_to_rgb(hue, s, max(0.3, v - 0.004 * step)))
            if step > 100:
                hue = (hue + 0.001) % 1.0
                step = 0
        seen.add(rgb)
        out[i] = rgb
    return out


def _quantize(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(c * 255)) for c in rgb)  # type: ignore[return-value]


def _check_mask(mask: np.ndarray, n_labels: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"a mask must hold integer label indices, got dtype {mask.dtype}")
    valid = (mask >= 0) & (mask < n_labels)
    if not valid.all():
        bad = mask[~valid & (mask != IGNORE_INDEX)]
        if bad.size:
            raise ValueError(f"mask value {int(bad.flat[0])} is not a label index in [0, {n_labels})")
    return mask


def colorize(mask: np.ndarray, n_labels: int) -> Image.Image:
    """``(H, W)`` label indices -> mode "P" image whose pixel values are the indices, with :func:`palette`.

    Pixels equal to 255 (ignore) are black. At most 256 labels fit an indexed image; for more use
    :func:`mask_image`, which falls back to 16-bit grayscale.
    """
    if n_labels > MAX_PALETTE_LABELS:
        raise ValueError(f"an indexed image holds at most {MAX_PALETTE_LABELS} labels, got {n_labels}")
    mask = _check_mask(mask, n_labels)
    img = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
    colors = np.zeros((MAX_PALETTE_LABELS, 3), dtype=np.uint8)  # unused entries (and 255) black
    colors[: min(n_labels, IGNORE_INDEX)] = palette(min(n_labels, IGNORE_INDEX))
    img.putpalette(colors.ravel().tolist())
    return img


def mask_image(mask: np.ndarray, n_labels: int) -> Image.Image:
    """The lossless mask picture to save: indexed colour up to 256 labels, 16-bit grayscale above."""
    if n_labels <= MAX_PALETTE_LABELS:
        return colorize(mask, n_labels)
    if n_labels > 65535:
        raise ValueError(f"at most 65535 labels can be saved in a mask image, got {n_labels}")
    mask = _check_mask(mask, n_labels)
    return Image.fromarray(mask.astype(np.uint16))  # mode "I;16": pixel value = label index


@dataclass(frozen=True)
class LegendEntry:
    """One label present in a mask."""

    index: int  # label index (pixel value)
    name: str  # display name
    share: float  # fraction of the labelled pixels
    color: tuple[int, int, int]  # palette colour


def legend_entries(mask: np.ndarray, names: list[str]) -> list[LegendEntry]:
    """The labels that occur in ``mask`` (ignore pixels excluded), in label order."""
    mask = _check_mask(mask, len(names))
    counts = np.bincount(
        mask[mask != IGNORE_INDEX].ravel() if len(names) <= IGNORE_INDEX else mask.ravel(),
        minlength=len(names),
    )[: len(names)]
    total = max(int(counts.sum()), 1)
    colors = palette(len(names))
    return [
        LegendEntry(i, names[i], float(counts[i]) / total, tuple(int(c) for c in colors[i]))
        for i in np.flatnonzero(counts)
    ]


# ----------------------------------------------------------------------------------- legend text
MAX_LEGEND_ENTRIES = 40  # labels listed in a legend (largest shares first); the rest are counted
MAX_LEGEND_FONT_PX = 64  # legend text never grows beyond this, whatever the image size
LEGEND_PIXEL_ALLOWANCE = 2_000_000  # a legend may add at most max(this, the image's own pixels)
_NOTDEF_PROBE = "\U0010fffd"  # a private-use code point no font maps: it draws the font's notdef glyph


@functools.lru_cache(maxsize=64)
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(path, size)
    except (OSError, ValueError, ImportError):
        return None


@functools.lru_cache(maxsize=1024)
def _fontconfig_file(pattern: str) -> str | None:
    """The font file fontconfig picks for ``pattern`` (e.g. ``sans-serif:charset=4e2d``), if fc-match exists."""
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--format=%{file}", pattern], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _glyph_mask(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, ch: str) -> tuple:
    mask = font.getmask(ch)
    return mask.size, bytes(mask)


def has_glyph(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, ch: str) -> bool:
    """Whether ``font`` draws ``ch`` as a glyph of its own rather than its notdef box (spaces count)."""
    if ch.isspace():
        return True
    return _glyph_mask(font, ch) != _glyph_mask(font, _NOTDEF_PROBE)


class LegendFont:
    """Text in a fallback chain of fonts: the system's sans-serif (via fontconfig) or Pillow's default,
    then, per character it lacks, the font fontconfig names for that character.

    Labels in any script (Latin-1, Greek, Cyrillic, CJK, ...) are drawn with real glyphs whenever a
    font on the system has them; a character no font has is drawn as the first font's notdef box.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        primary = _fontconfig_file("sans-serif")
        font = _truetype(primary, size) if primary else None
        if font is None:
            try:
                font = ImageFont.load_default(size=size)
            except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
                font = ImageFont.load_default()
        self.primary = font

    def font_for(self, ch: str) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
        if has_glyph(self.primary, ch):
            return self.primary
        path = _fontconfig_file(f"sans-serif:charset={ord(ch):x}")
        font = _truetype(path, self.size) if path else None
        return font if font is not None and has_glyph(font, ch) else self.primary

    def runs(self, text: str) -> list[tuple[str, ImageFont.ImageFont | ImageFont.FreeTypeFont]]:
        """``text`` split into pieces that one font draws each."""
        out: list[tuple[str, ImageFont.ImageFont | ImageFont.FreeTypeFont]] = []
        for ch in text:
            font = self.font_for(ch)
            if out and out[-1][1] is font:
                out[-1] = (out[-1][0] + ch, font)
            else:
                out.append((ch, font))
        return out

    def length(self, draw: ImageDraw.ImageDraw, text: str) -> float:
        return sum(draw.textlength(piece, font=font) for piece, font in self.runs(text))

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill) -> None:
        """Draw ``text`` with its left edge at ``x`` and its middle at ``y``."""
        x, y = xy
        for piece, font in self.runs(text):
            draw.text((x, y), piece, fill=fill, font=font, anchor="lm")
            x += draw.textlength(piece, font=font)


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _draw_legend(entries: list[LegendEntry], font_px: int, columns: int, more: int = 0) -> Image.Image:
    """A white panel: per entry a colour swatch, the label name and its pixel share; then, when
    ``more`` labels were left out, a line saying so."""
    font = LegendFont(font_px)
    pad, row = max(4, font_px // 2), int(font_px * 1.6)
    texts = [f"{_shorten(e.name)}  {e.share:.1%}" for e in entries]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    tail = f"+{more} more labels (see the JSON record)" if more else ""
    text_w = max(int(math.ceil(font.length(probe, t))) for t in texts)
    cell_w = pad + font_px + pad + text_w + pad
    rows = math.ceil(len(entries) / columns)
    width = max(cell_w * columns + pad, int(math.ceil(font.length(probe, tail))) + 2 * pad if tail else 0)
    panel = Image.new("RGB", (width, (rows + bool(tail)) * row + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for k, (entry, text) in enumerate(zip(entries, texts)):
        c, r = divmod(k, rows)
        x, y = pad + c * cell_w, pad + r * row
        top = y + (row - font_px) // 2
        draw.rectangle([x, top, x + font_px - 1, top + font_px - 1], fill=entry.color)
        font.draw(draw, (x + font_px + pad, y + row // 2), text, fill=(20, 20, 20))
    if tail:
        font.draw(draw, (pad, pad + rows * row + row // 2), tail, fill=(90, 90, 90))
    return panel


def legend_font_size(width: int, height: int) -> int:
    """Legend text height in pixels: grows with the image so it stays readable when viewed whole,
    between 12 and :data:`MAX_LEGEND_FONT_PX`, and at most a quarter of the short side (above 12)."""
    grow = min(MAX_LEGEND_FONT_PX, round(max(width, height) / 40), min(width, height) // 4)
    return max(12, grow)


def overlay(
    image: Image.Image | np.ndarray,
    mask: np.ndarray,
    names: list[str],
    alpha: float = 0.5,
    legend: bool = True,
) -> Image.Image:
    """Blend label colours over ``image`` (``(H, W)`` mask, same size) and add a legend beside it.

    The legend lists the labels present (swatch, name, pixel share; at most
    :data:`MAX_LEGEND_ENTRIES`, largest shares first, the rest counted), with text scaled to the
    image size; it goes to the right or below, whichever adds less area. It adds at most
    ``max(LEGEND_PIXEL_ALLOWANCE, H * W)`` pixels: for an image too narrow or too flat to hold it
    in that room (a 10 x 30000 strip), the overlay comes without a legend (the JSON record lists
    the labels and colours). Returns an RGB image of at least the input size (exactly the input
    size with ``legend=False``).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be RGB (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    mask = _check_mask(mask, len(names))
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {rgb.shape[:2]} differ in size")
    labelled = mask != IGNORE_INDEX if len(names) <= IGNORE_INDEX else np.ones(mask.shape, dtype=bool)
    colors = palette(len(names)).astype(np.float32)
    blend = rgb.astype(np.float32)
    blend[labelled] = (1 - alpha) * blend[labelled] + alpha * colors[mask[labelled]]
    out = Image.fromarray(np.clip(blend + 0.5, 0, 255).astype(np.uint8), "RGB")
    entries = legend_entries(mask, names) if legend else []
    if not entries:
        return out
    return _attach_legend(out, entries)


def _attach_legend(img: Image.Image, entries: list[LegendEntry]) -> Image.Image:
    W, H = img.size
    more = max(0, len(entries) - MAX_LEGEND_ENTRIES)
    if more:  # the largest shares, listed in label order
        top = sorted(entries, key=lambda e: -e.share)[:MAX_LEGEND_ENTRIES]
        entries = sorted(top, key=lambda e: e.index)
    font_px = legend_font_size(W, H)
    side = _draw_legend(entries, font_px, columns=1, more=more)
    below = _draw_legend(entries, font_px, columns=max(1, min(len(entries), W // side.width)), more=more)
    area_side = (W + side.width) * max(H, side.height)
    area_below = max(W, below.width) * (H + below.height)
    if min(area_side, area_below) - W * H > max(LEGEND_PIXEL_ALLOWANCE, W * H):
        log.info("overlay of %dx%d: no room for a legend within the size bound; drawn without one", W, H)
        return img
    if area_side <= area_below:
        canvas = Image.new("RGB", (W + side.width, max(H, side.height)), (255, 255, 255))
        canvas.paste(img, (0, 0))
        canvas.paste(side, (W, 0))
    else:
        canvas = Image.new("RGB", (max(W, below.width), H + below.height), (255, 255, 255))
        canvas.paste(img, (0, 0))
        canvas.paste(below, (0, H))
    return canvas


def pca_rgb(features: torch.Tensor | np.ndarray, max_samples: int = 20000, chunk: int = 65536) -> np.ndarray:
    """``(D, h, w)`` features -> ``(h, w, 3)`` uint8: the top 3 principal components as RGB.

    Components are fitted on up to ``max_samples`` evenly strided pixels, signed so that each
    component's largest loading is positive (deterministic), and stretched between their 1st and
    99th percentiles. Pixels are projected ``chunk`` at a time, so memory beyond the input is
    ``chunk x D`` plus ``(h, w, 3)`` (a million-point map has no float64 copy).
    """
    if torch.is_tensor(features):
        t = features.detach().cpu()
        x = (t if t.dtype in (torch.float16, torch.float32, torch.float64) else t.float()).numpy()
    else:
        x = np.asarray(features)
    if x.ndim != 3:
        raise ValueError(f"features must be (D, h, w), got shape {x.shape}")
    D, h, w = x.shape
    columns = x.reshape(D, h * w)  # (D, N), one column per pixel
    fit = columns[:, :: max(1, math.ceil(h * w / max_samples))].T.astype(np.float64)  # (S, D)
    mean = fit.mean(axis=0)
    cov = (fit - mean).T @ (fit - mean) / max(len(fit) - 1, 1)  # (D, D)
    values, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
    k = min(3, D)
    top = vectors[:, ::-1][:, :k]  # (D, k) strongest first
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(k)])  # sign: largest loading positive
    proj = np.empty((h * w, k))
    for start in range(0, h * w, chunk):
        proj[start : start + chunk] = (columns[:, start : start + chunk].T.astype(np.float64) - mean) @ top
    rgb = np.full((h * w, 3), 0.5)
    for c in range(k):
        lo, hi = np.percentile(proj[:, c], [1, 99])
        if hi - lo > 1e-12 and values[::-1][c] > 1e-12:
            rgb[:, c] = np.clip((proj[:, c] - lo) / (hi - lo), 0.0, 1.0)
    return (rgb.reshape(h, w, 3) * 255 + 0.5).astype(np.uint8)
