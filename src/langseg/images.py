"""Reading images robustly: EXIF orientation, every PIL mode to RGB, size limits, clear errors."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterator
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


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (missing, a folder, a FIFO, a device, a symlink loop), or None."""
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        return "a broken symbolic link" if path.is_symlink() else "no such file"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot read it: {e.strerror or e}"
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a special file"
        )
        return f"not a regular file ({kind}); only files are read"
    if st.st_size == 0:
        return "the file is empty"
    return None


_PILLOW_BOMB = re.compile(r"\((\d+) pixels\)")


def load_image(
    path: str | Path,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Open an image file as upright RGB, or raise :class:`ImageError` naming the file.

    Warnings of the decoder (a malformed EXIF block, a damaged ICC profile, ...) are logged with the
    file's name instead of reaching the user as raw library warnings.
    """
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise ImageError(f"{path}: {problem}")
    limit = (
        f"the limit of {max_pixels:,} (--max-pixels; raise it if the image is genuine)" if max_pixels else ""
    )
    try:
        with _decoder_warnings_logged(path), Image.open(path) as img:
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(f"{path}: {w}x{h} = {w * h:,} pixels is above {limit}")
            img.load()
            return _to_rgb(_upright(img, path), background)
    except _DECODER_ERRORS as e:
        raise _decode_error(path, e, limit) from None


# what decoders raise on a bad file (Pillow's plugins raise assorted types on malformed data)
_DECODER_ERRORS = (
    ImageError,
    Image.DecompressionBombError,
    OSError,  # UnidentifiedImageError, truncated data
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    MemoryError,
)


@contextlib.contextmanager
def _decoder_warnings_logged(path: Path) -> Iterator[None]:
    """Warnings raised inside -> log lines naming ``path`` (Pillow's bomb warning: our own limit decides)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            for w in caught:
                log.warning(
                    "%s: %s", path, str(w.message).splitlines()[0] if str(w.message) else w.category.__name__
                )


def _decode_error(path: Path, e: BaseException, limit: str) -> ImageError:
    """What went wrong while decoding ``path`` -> one line naming the file."""
    if isinstance(e, ImageError):
        return e if str(e).startswith(str(path)) else ImageError(f"{path}: {e}")
    if isinstance(e, Image.DecompressionBombError):
        m = _PILLOW_BOMB.search(str(e))
        size = f"{int(m[1]):,} pixels" if m else "its size"
        decoder_limit = (
            f"the decoder's limit of {Image.MAX_IMAGE_PIXELS or 0:,} pixels "
            "(give a limit of your own with --max-pixels, max_pixels= in Python)"
        )
        return ImageError(
            f"{path}: refused as a possible decompression bomb: {size} is above {limit or decoder_limit}"
        )
    if isinstance(e, UnidentifiedImageError):
        return ImageError(f"{path}: not an image file (unrecognized format)")
    if isinstance(e, MemoryError):
        return ImageError(f"{path}: not enough memory to decode the image")
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ImageError(f"{path}: corrupt or truncated image: {first}")


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
