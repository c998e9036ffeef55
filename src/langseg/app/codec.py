"""Bytes <-> images and arrays for the HTTP API: uploads, indexed mask PNGs, base64 float maps."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..images import ImageError, to_rgb_array


class ImageTooLargeError(ImageError):
    """An upload over the byte or pixel limit (HTTP 413)."""


def decode_image(
    data: bytes, *, name: str = "upload", max_pixels: int | None = None, max_bytes: int | None = None
) -> Image.Image:
    """Encoded image bytes -> upright RGB PIL image, or :class:`ImageError` naming ``name``.

    The size in pixels is checked from the header, before the pixels are decoded.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{name}: {len(data):,} bytes is above the upload limit of {max_bytes:,} bytes"
        )
    if not data:
        raise ImageError(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageTooLargeError(
                        f"{name}: {w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,} pixels"
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return Image.fromarray(to_rgb_array(img, max_pixels=None))
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageTooLargeError(f"{name}: refused as a possible decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image: {e}") from None


def encode_image_png(image: Image.Image) -> bytes:
    """PIL image -> PNG bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def encode_mask_png(mask: np.ndarray, n_labels: int) -> bytes:
    """``(H, W)`` label indices -> PNG bytes whose pixel values are the indices.

    Indexed colour ("P", with the label palette, so the file is viewable) up to 256 labels.
    """
    from ..visualize import mask_image

    return encode_image_png(mask_image(mask, n_labels))


def decode_mask_png(data: bytes) -> np.ndarray:
    """Mask PNG bytes (from :func:`encode_mask_png`) -> ``(H, W)`` int32 label indices."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in ("P", "L", "I;16", "I"):
            raise ValueError(f"expected an indexed PNG mask, got mode {img.mode}")
        return np.asarray(img).astype(np.int32)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def encode_array(arr: np.ndarray) -> dict:
    """A float array -> JSON-able ``{"dtype": "float16", "shape": [...], "data": base64}`` (little-endian)."""
    a = np.ascontiguousarray(arr, dtype="<f2")
    return {"dtype": "float16", "shape": list(a.shape), "data": b64encode(a.tobytes())}


def decode_array(obj: dict) -> np.ndarray:
    """Inverse of :func:`encode_array` -> float32 array."""
    if obj.get("dtype") != "float16":
        raise ValueError(f"unsupported array dtype {obj.get('dtype')!r}; expected 'float16'")
    shape = tuple(int(s) for s in obj["shape"])
    return np.frombuffer(b64decode(obj["data"]), dtype="<f2").reshape(shape).astype(np.float32)
