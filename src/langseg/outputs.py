"""Writing results safely: atomic files, output names derived from input names, provenance records.

Every file is written to a hidden temporary file in the destination folder and moved into place in
one step, so an interrupted run leaves either the complete file or nothing. Existing files are
never replaced unless asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np

from .errors import LangsegError
from .inputs import InputImage


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


# ------------------------------------------------------------------------------------------- naming
def output_stems(items: Sequence[InputImage]) -> list[PurePath]:
    """A distinct relative stem per input (``sub/photo``) to which each output adds its suffix.

    The stem is the input's relative path without its suffix. Inputs that would share a stem (case
    insensitively, for macOS and Windows) are told apart by the first of these that works for the
    group: their suffix (``photo_jpg``, ``photo_png``), their folder's name (``a/photo``,
    ``b/photo``), both; what still clashes gets a counter (``photo-2``). The result depends only
    on the list, so reruns name files the same way.
    """
    stems = [item.rel.with_suffix("") if item.rel.suffix else item.rel for item in items]
    groups: defaultdict[str, list[int]] = defaultdict(list)
    for i, stem in enumerate(stems):
        groups[_key(stem)].append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        for rename in (
            _with_suffix,
            _with_root,
            lambda item, stem: _with_root(item, _with_suffix(item, stem)),
        ):
            tried = [rename(items[i], stems[i]) for i in members]
            if len({_key(t) for t in tried}) == len(tried):
                break
        for i, new in zip(members, tried):
            stems[i] = new
    return _number_duplicates(stems)


def _number_duplicates(stems: list[PurePath]) -> list[PurePath]:
    """Keep the first of equal stems; later ones get ``-2``, ``-3``... (never a name already in use)."""
    taken = Counter(_key(s) for s in stems)
    used: set[str] = set()
    out: list[PurePath] = []
    for stem in stems:
        new, k = stem, 1
        while _key(new) in used or (new != stem and taken[_key(new)]):
            k += 1
            new = stem.with_name(f"{stem.name}-{k}")
        used.add(_key(new))
        out.append(new)
    return out


def _key(stem: PurePath) -> str:
    return str(stem).casefold()


def _with_suffix(item: InputImage, stem: PurePath) -> PurePath:
    suffix = item.rel.suffix.lstrip(".")
    return stem.with_name(f"{stem.name}_{suffix}") if suffix else stem


def _with_root(item: InputImage, stem: PurePath) -> PurePath:
    return PurePath(item.root or "_") / stem


def output_path(out_dir: str | Path, stem: PurePath, suffix: str) -> Path:
    """``out_dir/stem`` + ``suffix`` (e.g. ``.mask.png``), keeping the stem's sub-folders."""
    return Path(out_dir) / stem.parent / f"{stem.name}{suffix}"


def existing(paths: Sequence[Path], limit: int = 5) -> str:
    """A short list of the given paths that exist ('' if none), for an error message."""
    found = [str(p) for p in paths if p.exists()]
    if not found:
        return ""
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return ", ".join(found[:limit]) + more


# --------------------------------------------------------------------------------------- provenance
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_record(spec: str, path: str | Path, config_name: str) -> dict[str, Any]:
    """What a downstream user needs to get the same weights: the name given, the file and its SHA-256."""
    path = Path(path)
    weights_file = path / "model.safetensors" if path.is_dir() else path
    return {
        "weights": spec,
        "path": str(path.resolve()),
        "file": weights_file.name,
        "sha256": sha256_file(weights_file) if weights_file.is_file() else None,
        "model": config_name,
    }
