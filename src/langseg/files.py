"""Writing files safely: the one place that creates files for langseg.

Every file is written to a hidden temporary file in the destination folder, flushed to disk
(``fsync``) and moved into place in one step, so an interrupted run leaves either the complete
file or nothing. Existing files are never replaced unless asked.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import LangsegError


class OutputExistsError(LangsegError, FileExistsError):
    """An output file is already there and overwriting was not allowed."""


class OutputError(LangsegError, OSError):
    """An output file could not be written (permissions, full disk, ...)."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], *, overwrite: bool = False) -> Path:
    """Create ``path`` by calling ``write(binary_file)`` on a temporary file, then moving it in place.

    Without ``overwrite`` an existing ``path`` raises :class:`OutputExistsError` (also when it appears
    while writing: the final step does not replace files). On any error the temporary file is removed
    and ``path`` is untouched.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _move_into_place(tmp, path, overwrite)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, LangsegError):
            raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
        raise
    return path


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if `path` exists: no race between the check and the move
    except FileExistsError:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it") from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def write_bytes(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda f: f.write(data), overwrite=overwrite)


def write_json(path: str | Path, obj: Any, *, overwrite: bool = False) -> Path:
    """Pretty JSON (UTF-8, trailing newline), atomically."""
    data = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return write_bytes(path, data, overwrite=overwrite)


def write_image(
    path: str | Path, image: Any, *, overwrite: bool = False, format: str = "PNG", **options: Any
) -> Path:
    """A PIL image, atomically (PNG unless ``format`` says otherwise; ``options`` go to ``save``)."""
    return atomic_write(path, lambda f: image.save(f, format=format, **options), overwrite=overwrite)


def write_array(
    path: str | Path,
    array: np.ndarray,
    fmt: str,
    *,
    overwrite: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """One array as ``npy``, ``safetensors`` (key ``"features"``, string metadata) or ``pt`` (a tensor)."""
    if fmt == "npy":
        return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), overwrite=overwrite)
    if fmt == "safetensors":
        from safetensors.numpy import save

        return write_bytes(
            path, save({"features": np.ascontiguousarray(array)}, metadata=metadata), overwrite=overwrite
        )
    if fmt == "pt":
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return atomic_write(path, lambda f: torch.save(tensor, f), overwrite=overwrite)
    raise ValueError(f"unknown array format {fmt!r}; expected 'npy', 'safetensors' or 'pt'")
