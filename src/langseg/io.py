"""Reading images robustly: EXIF orientation, every PIL mode to RGB, size limits, clear errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import LangsegError

DEFAULT_MAX_PIXELS = 100_000_000  # refuse images above this many pixels (decompression-bomb guard)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageError(LangsegError, ValueError):
    """An input that is not a usable image (missing, empty, corrupt, too large)."""


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on ``background``, 16-bit is rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if img.mode == "F":
            top = max(float(arr.max()), 1e-12)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        base = Image.new("RGB", img.size, background)
        base.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return base
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


def load_image(
    path: str | Path,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Open an image file as upright RGB, or raise :class:`ImageError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageError(
                        f"{path}: {w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,} "
                        "(raise it with --max-pixels if the image is genuine)"
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img, background)
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: refused as a possible decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: corrupt or truncated image: {e}") from None


def to_rgb_array(
    image: str | Path | Image.Image | np.ndarray,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """A path, PIL image or array -> ``(H, W, 3)`` uint8 RGB array."""
    if isinstance(image, (str, Path)):
        return np.asarray(load_image(image, max_pixels=max_pixels, background=background))
    if isinstance(image, Image.Image):
        w, h = image.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"image of {w}x{h} pixels is above the limit of {max_pixels:,}")
        return np.asarray(_to_rgb(image, background))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ImageError(f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {arr.shape}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        if arr.dtype == np.uint16:
            arr = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
        elif arr.dtype in (np.float32, np.float64):
            arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        elif arr.dtype != np.uint8:
            raise ImageError(f"unsupported array dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
        if arr.shape[2] == 4:
            return np.asarray(_to_rgb(Image.fromarray(arr, "RGBA"), background))
        return np.ascontiguousarray(arr)
    raise ImageError(f"unsupported image type {type(image).__name__}; give a path, PIL image or numpy array")


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Expand files, directories (recursively) and glob patterns into image paths, sorted per input."""
    import glob

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        elif any(ch in str(item) for ch in "*?["):
            out.extend(sorted(Path(q) for q in glob.glob(str(item), recursive=True) if Path(q).is_file()))
        else:
            out.append(p)
    return out
