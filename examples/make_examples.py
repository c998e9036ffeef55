"""Render the example pictures in this folder (garden.jpg, beach.jpg) from code.

They are drawn, not photographed, so they can be redistributed freely (CC0). Deterministic: the
same Pillow and numpy give the same files. Run: ``python examples/make_examples.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
W, H = 640, 480


def noise(rng: np.random.Generator, scale: float, smooth: float) -> np.ndarray:
    """(H, W) noise in [-scale, scale]: white below ``smooth`` 1, else bicubic value noise of that cell size."""
    if smooth <= 1:
        a = rng.standard_normal((H, W)).astype(np.float32)
    else:
        cells = rng.standard_normal((int(H / smooth) + 2, int(W / smooth) + 2)).astype(np.float32)
        a = np.asarray(Image.fromarray(cells, "F").resize((W, H), Image.BICUBIC), dtype=np.float32)
        a = (a - a.mean()) / (a.std() + 1e-6)
    return np.clip(a, -2, 2) / 2 * scale


def vertical_gradient(top: tuple[int, int, int], bottom: tuple[int, int, int], h: int) -> np.ndarray:
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    return (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)  # (h, 1, 3)


def textured(img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], tex: np.ndarray) -> None:
    img[mask] = np.clip(np.array(color, np.float32) + tex[mask][:, None], 0, 255)


def garden(rng: np.random.Generator) -> Image.Image:
    """Sky with clouds, a hill, a lawn, a house with a red roof, a tree and a gravel path."""
    img = np.broadcast_to(vertical_gradient((70, 130, 210), (175, 210, 240), H), (H, W, 3)).copy()
    yy, xx = np.mgrid[0:H, 0:W]
    cover = np.clip((noise(rng, 1.0, 48) - 0.2) * 2.5, 0, 1) * np.clip((230 - yy) / 80, 0, 1)  # soft clouds
    img = img * (1 - cover[:, :, None]) + 245 * cover[:, :, None]
    hill = yy > 260 - 40 * np.sin(xx / W * np.pi * 1.3)
    textured(img, hill, (70, 120, 60), noise(rng, 18, 3))
    lawn = yy > 330 + 10 * np.sin(xx / 90)
    textured(img, lawn, (80, 160, 50), noise(rng, 35, 1.2))
    path = lawn & (np.abs(xx - (420 + (yy - 330) * 0.9)) < 18 + (yy - 330) * 0.35)
    textured(img, path, (170, 160, 140), noise(rng, 25, 0.8))
    pic = Image.fromarray(img.astype(np.uint8))
    d = ImageDraw.Draw(pic)
    d.rectangle([330, 230, 520, 345], fill=(225, 205, 170))  # house walls
    d.polygon([(315, 232), (425, 160), (535, 232)], fill=(170, 50, 40))  # roof
    d.rectangle([405, 280, 440, 345], fill=(100, 60, 35))  # door
    for x0 in (350, 465):
        d.rectangle([x0, 255, x0 + 35, 290], fill=(120, 170, 210), outline=(250, 250, 250), width=3)
    d.rectangle([140, 250, 162, 360], fill=(95, 65, 40))  # trunk
    for cx, cy, r in ((150, 215, 62), (115, 245, 45), (190, 245, 45), (150, 170, 45)):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(40, 105, 40))
    arr = np.asarray(pic, dtype=np.float32)
    arr += noise(rng, 6, 0.6)[:, :, None]  # sensor-like grain
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def beach(rng: np.random.Generator) -> Image.Image:
    """Sky, sea with waves, sand, a palm tree and a beach umbrella."""
    img = np.broadcast_to(vertical_gradient((40, 110, 200), (190, 220, 245), H), (H, W, 3)).copy()
    yy, xx = np.mgrid[0:H, 0:W]
    sea = yy > 230
    waves = noise(rng, 20, 1.5) + 12 * np.sin(yy / 3.0 + noise(rng, 3, 6))
    textured(img, sea, (30, 100, 150), waves)
    sand = yy > 330 + 15 * np.sin(xx / 70)
    textured(img, sand, (220, 195, 140), noise(rng, 22, 0.9))
    foam = sand & (yy < 345 + 15 * np.sin(xx / 70))
    img[foam] = 0.4 * img[foam] + 0.6 * 245
    pic = Image.fromarray(img.astype(np.uint8))
    d = ImageDraw.Draw(pic)
    d.line([(120, 420), (135, 330), (160, 240), (175, 190)], fill=(110, 80, 50), width=14)  # palm trunk
    for dx, dy in ((-90, 30), (-70, -20), (80, 25), (70, -30), (0, -60), (-30, 50), (40, 55)):
        mid = (175 + dx * 0.5, 190 + dy * 0.5)
        d.polygon(
            [(175, 190), (mid[0], mid[1] - 14), (175 + dx, 190 + dy), (mid[0], mid[1] + 14)],
            fill=(45, 120, 45),
        )
    d.pieslice([400, 270, 560, 370], 180, 360, fill=(220, 60, 60))  # umbrella
    d.line([(480, 320), (480, 420)], fill=(90, 90, 90), width=5)
    arr = np.asarray(pic, dtype=np.float32) + noise(rng, 5, 0.6)[:, :, None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def main() -> None:
    garden(np.random.default_rng(1)).save(HERE / "garden.jpg", quality=90)
    beach(np.random.default_rng(2)).save(HERE / "beach.jpg", quality=90)
    print(f"wrote {HERE / 'garden.jpg'} and {HERE / 'beach.jpg'}")


if __name__ == "__main__":
    main()
