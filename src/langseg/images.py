"""Reading images robustly: EXIF orientation, every PIL mode to RGB, size limits, clear errors."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import LangsegError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000  # refuse images above this many pixels (decompression-bomb guard)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageError(LangsegError, ValueError):
    """An input that is not a usable image (missing, empty, corrupt, too large)."""


def _gray_to_uint8(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit ``L``.

    ``I;16*`` uses the full 16-bit range. ``I`` (how some readers give 16-bit data) uses the 16-bit
    range when its values fit in it, else its own min..max. ``F`` in [0, 1] is scaled by 255, other
    float data by its min..max.
    """
    arr = np.asarray(img, dtype=np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
    if img.mode.startswith("I;16") or (img.mode == "I" and lo >= 0 and hi <= 65535):
        lo, top = 0.0, 65535.0
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        lo, top = 0.0, 1.0
    else:
        top = hi
    span = max(top - lo, 1e-12)
    arr = np.clip((arr - lo) / span * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "L")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    """CMYK through its embedded ICC profile when there is one (print colours), else Pillow's formula."""
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception as e:  # a broken profile must not make the image unreadable
            log.warning("ignoring an unusable ICC profile (%s); converting CMYK without it", e)
    return img.convert("RGB")


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on ``background``, 16-bit is rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _gray_to_uint8(img).convert("RGB")
    if img.mode == "CMYK":
        return _cmyk_to_rgb(img)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "PA", "La", "RGBa") or (img.mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        base = Image.new("RGB", img.size, background)
        base.paste(img, mask=img.getchannel("A"))
        return base
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")  # L, 1, YCbCr, LAB, HSV, RGBX
        except ValueError:
            raise ImageError(f"unsupported colour mode {img.mode!r}") from None
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
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as img:
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageError(
                        f"{path}: {w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,} "
                        "(raise it with --max-pixels if the image is genuine)"
                    )
                img.load()
                img = _upright(img, path)
                return _to_rgb(img, background)
    except ImageError as e:
        if str(e).startswith(str(path)):
            raise
        raise ImageError(f"{path}: {e}") from None
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{path}: refused as a possible decompression bomb: {e} "
            "(raise --max-pixels if the image is genuine)"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{path}: corrupt or truncated image: {e}") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode the image") from None


def _upright(img: Image.Image, path: Path | str) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the image as stored (with a warning)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:  # Pillow raises assorted errors on malformed EXIF data
        log.warning("%s: unreadable EXIF orientation (%s); using the image as stored", path, e)
        return img


def to_rgb_array(
    image: str | Path | Image.Image | np.ndarray,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """A path, PIL image or array -> ``(H, W, 3)`` uint8 RGB array."""
    if isinstance(image, (str, Path)):
        return np.array(load_image(image, max_pixels=max_pixels, background=background))  # writable
    if isinstance(image, Image.Image):
        w, h = image.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"image of {w}x{h} pixels is above the limit of {max_pixels:,}")
        return np.array(_to_rgb(_upright(image, "<image>"), background))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape:
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
