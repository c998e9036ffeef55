"""Writing files safely: the one place that creates files for langseg.

Every file is written to a hidden temporary file in the destination folder, flushed to disk
(``fsync``) and moved into place in one step, so an interrupted run leaves either the complete
file or nothing. Existing files are never replaced unless asked. A folder that belongs together
(a saved model: weights + config) is written the same way with :func:`write_folder`: filled
beside its destination and renamed into place, so it appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
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
    with _cleanup(tmp, path):
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _move_into_place(tmp, path, overwrite)
    return path


@contextlib.contextmanager
def _cleanup(tmp: Path, path: Path) -> Iterator[None]:
    """On any error: remove the temporary file; an OS error becomes a one-line error naming ``path``."""
    try:
        yield
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, LangsegError):
            raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
        raise


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


def temp_path(path: str | Path) -> Path:
    """The hidden temporary name beside ``path`` for a writer that needs a file name rather than a
    file object (Lightning's ``save_checkpoint``); move it into place with :func:`publish`."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def publish(tmp: str | Path, path: str | Path, *, overwrite: bool = False) -> Path:
    """Flush the finished file ``tmp`` to disk and move it to ``path`` in one step."""
    tmp, path = Path(tmp), Path(path)
    with _cleanup(tmp, path):
        _fsync(tmp)
        _move_into_place(tmp, path, overwrite)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda f: f.write(data), overwrite=overwrite)


def write_text(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """UTF-8 text, atomically."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_json(path: str | Path, obj: Any, *, overwrite: bool = False) -> Path:
    """Pretty JSON (UTF-8, trailing newline; NaN and infinity are refused, as JSON has none), atomically."""
    return write_text(
        path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n", overwrite=overwrite
    )


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object written by :func:`write_json`; a clear error names a file that is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LangsegError(f"{path}: not a readable JSON file: {e}") from None
    if not isinstance(data, dict):
        raise LangsegError(f"{path}: expected a JSON object")
    return data


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


def write_npy_stream(
    path: str | Path, shape: tuple[int, ...], dtype: Any, chunks: Any, *, overwrite: bool = False
) -> Path:
    """An ``.npy`` file of ``shape`` and ``dtype`` written from ``chunks`` (arrays whose elements, in
    order, are the array's in C order), atomically: a large array never needs to be in memory whole.
    Raises ``ValueError`` when the chunks do not add up to ``shape``."""
    dtype = np.dtype(dtype)
    total = int(np.prod(shape))

    def write(f: IO[bytes]) -> None:
        np.lib.format.write_array_header_2_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        )
        written = 0
        for chunk in chunks:
            data = np.ascontiguousarray(chunk, dtype=dtype)
            f.write(data.tobytes())
            written += data.size
        if written != total:
            raise ValueError(f"{path}: the chunks hold {written} values, the shape {tuple(shape)} {total}")

    return atomic_write(path, write, overwrite=overwrite)


def write_folder(dest: str | Path, fill: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Create the folder ``dest`` whole or not at all: ``fill(folder)`` writes the files into a hidden
    folder beside ``dest``, which is flushed to disk and renamed to ``dest``.

    An empty ``dest`` is replaced. A non-empty one raises :class:`OutputExistsError` unless
    ``overwrite``; then it is moved aside, the new folder renamed into place and the old one
    removed, so readers see the old folder or the new one, never a mix. On any error the
    temporary folder is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    if not overwrite and _non_empty(dest):
        raise OutputExistsError(f"{dest} exists and is not empty; pass --overwrite to replace it")
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"{dest} is a file; give a folder")
    tag = secrets.token_hex(4)
    tmp, old = dest.with_name(f".{dest.name}.{tag}.tmp"), dest.with_name(f".{dest.name}.{tag}.old")
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise OutputError(f"{dest}: cannot write: {e.strerror or e}") from None
    try:
        fill(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        if _non_empty(dest):
            if not overwrite:
                raise OutputExistsError(f"{dest} exists and is not empty; pass --overwrite to replace it")
            os.replace(dest, old)
        os.replace(tmp, dest)  # replaces an empty folder, as rename(2) does
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dest.exists():
            os.replace(old, dest)  # put the previous folder back
        if isinstance(e, OSError) and not isinstance(e, LangsegError):
            raise OutputError(f"{dest}: cannot write: {e.strerror or e}") from None
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _non_empty(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())
