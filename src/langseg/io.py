"""Reading images robustly: EXIF orientation, every PIL mode to RGB, size limits, clear errors.

Also the input side of the command line: expanding files, folders and globs into images with the
relative names their outputs take, and decoding them ahead of the model in a background thread.
"""

from __future__ import annotations

import glob
import io
import logging
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import LangsegError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000  # refuse images above this many pixels (decompression-bomb guard)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GLOB_CHARS = "*?["


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


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, directories (recursively) and glob patterns into image paths, sorted per input."""
    return [item.path for item in expand_inputs(inputs)[0]]


@dataclass(frozen=True)
class InputImage:
    """One image to process and the relative name its outputs are derived from."""

    path: Path  # the file to read
    rel: PurePath  # path inside the folder (or below the glob's fixed part) it was found in; a file: its name
    root: str  # name of that folder (used only to tell apart same-named files from different folders)


def _glob_base(pattern: str) -> Path:
    """The leading part of a glob pattern without wildcards (``photos/**/*.jpg`` -> ``photos``)."""
    fixed: list[str] = []
    for part in Path(pattern).parts:
        if any(c in part for c in _GLOB_CHARS):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _is_hidden(path: Path, base: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def expand_inputs(
    inputs: Sequence[str | Path], *, exclude: str | Path | None = None
) -> tuple[list[InputImage], list[str]]:
    """Files, folders (recursive) and glob patterns -> images in order, and notes on inputs that gave none.

    Folders and globs yield files with an image suffix, sorted, skipping hidden files and anything
    under ``exclude`` (the output folder, so a rerun does not read its own outputs). A file named
    explicitly is always kept, whatever its suffix, so that a bad one is reported by name later. A
    file reached twice is kept once.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[InputImage] = []
    notes: list[str] = []
    seen: set[Path] = set()

    def add(path: Path, rel: PurePath, root: str, explicit: bool = False) -> None:
        key = path.resolve()
        if key in seen or (not explicit and skip is not None and key.is_relative_to(skip)):
            return
        seen.add(key)
        found.append(InputImage(path, rel, root))

    for item in inputs:
        text = str(item)
        p = Path(item).expanduser()
        if p.is_dir():
            matches = [
                q
                for q in sorted(p.rglob("*"))
                if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES and not _is_hidden(q, p)
            ]
            for q in matches:
                add(q, PurePath(q.relative_to(p)), p.resolve().name)
            if not matches:
                notes.append(f"{text}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
        elif any(ch in text for ch in _GLOB_CHARS) and not p.exists():
            base = _glob_base(text)
            matches = [
                q
                for q in sorted(Path(m) for m in glob.glob(text, recursive=True))
                if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
            ]
            for q in matches:
                add(
                    q,
                    PurePath(q.relative_to(base)) if q.is_relative_to(base) else PurePath(q.name),
                    base.resolve().name,
                )
            if not matches:
                notes.append(f"{text}: the pattern matched no images")
        else:
            add(p, PurePath(p.name), p.resolve().parent.name, explicit=True)
    return found, notes


@dataclass
class Decoded:
    """An input after decoding: the RGB pixels, or the error that made it unusable."""

    item: InputImage
    image: np.ndarray | None  # (H, W, 3) uint8, upright
    error: ImageError | None
    seconds: float  # time spent decoding


def _decode(item: InputImage, max_pixels: int | None, background: tuple[int, int, int]) -> Decoded:
    start = time.perf_counter()
    try:
        img = np.array(load_image(item.path, max_pixels=max_pixels, background=background))  # writable
        return Decoded(item, img, None, time.perf_counter() - start)
    except ImageError as e:
        return Decoded(item, None, e, time.perf_counter() - start)


def iter_decoded(
    items: Sequence[InputImage],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    prefetch: int = 4,
    workers: int = 2,
) -> Iterator[Decoded]:
    """Decode images in background threads, ``prefetch`` ahead of the consumer, yielding in order.

    At most ``prefetch`` decoded images wait in memory. A bad file yields a :class:`Decoded` with
    its ``error`` instead of raising, so the caller can report it and go on.
    """
    if prefetch < 1 or workers < 1:
        raise ValueError(f"prefetch and workers must be >= 1, got {prefetch} and {workers}")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="langseg-decode")
    pending: deque[Future[Decoded]] = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(pool.submit(_decode, item, max_pixels, background))
            if len(pending) >= prefetch:
                break
        while pending:
            done = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_decode, nxt, max_pixels, background))
            yield done
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)
