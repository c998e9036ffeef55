"""The input side of the command line: files, folders and globs expanded into images with the
relative names their outputs take, decoded ahead of the model in background threads."""

from __future__ import annotations

import glob
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TypeVar

import numpy as np

from .errors import LangsegError
from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageError, load_image
from .video import VIDEO_SUFFIXES, FrameReader, VideoError, is_video, list_frames

_GLOB_CHARS = "*?["
_WANTED = IMAGE_SUFFIXES + VIDEO_SUFFIXES  # what folders and globs yield
T = TypeVar("T")
R = TypeVar("R")


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, directories (recursively) and glob patterns into image paths, sorted per input."""
    return [item.path for item in expand_inputs(inputs)[0]]


@dataclass(frozen=True)
class InputImage:
    """One image to process and the relative name its outputs are derived from."""

    path: Path  # the file to read
    rel: PurePath  # path inside the folder (or below the glob's fixed part) it was found in; a file: its name
    root: str  # name of that folder (used only to tell apart same-named files from different folders)
    frame: int | None = None  # a video frame's index (presentation order); None for a picture file


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


def _resolved(path: Path) -> Path:
    """``path.resolve()``, or the absolute path when it cannot be resolved (a symlink loop): such an
    input is kept and reported by name when it is read, not allowed to stop the whole run."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


class _Found:
    """The images gathered so far: each file once; none under ``skip`` unless named explicitly."""

    def __init__(self, skip: Path | None, every: int) -> None:
        self.skip, self.every = skip, every
        self.images: list[InputImage] = []
        self.notes: list[str] = []  # inputs that gave no image, each naming the input
        self._seen: set[Path] = set()

    def add(self, path: Path, rel: PurePath, root: str, explicit: bool = False) -> None:
        """One file: a picture, or every ``every``-th frame of a video (a note when it cannot be read)."""
        key = _resolved(path)
        if key in self._seen or (not explicit and self.skip is not None and key.is_relative_to(self.skip)):
            return
        self._seen.add(key)
        if not is_video(path):
            self.images.append(InputImage(path, rel, root))
            return
        try:
            frames = list_frames(path, every=self.every)
        except VideoError as e:
            self.notes.append(str(e))
            return
        stem = rel.with_suffix("")
        self.images.extend(InputImage(path, stem / f.name, root, f.index) for f in frames)


def _wanted(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in _WANTED


def expand_inputs(
    inputs: Sequence[str | Path], *, exclude: str | Path | None = None, every: int = 1
) -> tuple[list[InputImage], list[str]]:
    """Files, folders (recursive) and glob patterns -> images in order, and notes on inputs that gave none.

    Folders and globs yield files with an image suffix, sorted, skipping hidden files and anything
    under ``exclude`` (the output folder, so a rerun does not read its own outputs). A file named
    explicitly is always kept, whatever its suffix, so that a bad one is reported by name later. A
    file reached twice is kept once. A video (``.mp4``, ``.mkv``, ...) gives every ``every``-th frame,
    named ``<video>/<index>_<ms>ms``; a video that cannot be read gives a note naming it.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    found = _Found(_resolved(Path(exclude)) if exclude is not None else None, every)
    for item in inputs:
        text = str(item)
        p = Path(item).expanduser()
        if p.is_dir():
            matches = [q for q in sorted(p.rglob("*")) if _wanted(q) and not _is_hidden(q, p)]
            for q in matches:
                found.add(q, PurePath(q.relative_to(p)), _resolved(p).name)
            if not matches:
                found.notes.append(
                    f"{text}: no images or videos in this folder (looked for {', '.join(_WANTED)})"
                )
        elif any(ch in text for ch in _GLOB_CHARS) and not p.exists():
            base = _glob_base(text)
            matches = [q for q in sorted(Path(m) for m in glob.glob(text, recursive=True)) if _wanted(q)]
            for q in matches:
                rel = q.relative_to(base) if q.is_relative_to(base) else q.name
                found.add(q, PurePath(rel), _resolved(base).name)
            if not matches:
                found.notes.append(f"{text}: the pattern matched no images")
        else:
            found.add(p, PurePath(p.name), _resolved(p).parent.name, explicit=True)
    return found.images, found.notes


def read_inputs_file(path: str | Path) -> list[str]:
    """Inputs listed in a text file, one per line (``#`` comments and blank lines ignored).

    Relative entries are taken relative to the file's folder, so a list travels with its data.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LangsegError(f"{path}: cannot read the input list ({e.__class__.__name__}: {e})") from None
    base = path.parent
    entries = [line.strip() for line in lines]
    return [
        str(base / e) if not Path(e).expanduser().is_absolute() else e
        for e in entries
        if e and not e.startswith("#")
    ]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``: the I-th of N deterministic slices of the inputs."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"expected I/N like 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


@dataclass
class Decoded:
    """An input after decoding: the RGB pixels, or the error that made it unusable."""

    item: InputImage
    image: np.ndarray | None  # (H, W, 3) uint8, upright
    error: ImageError | None
    seconds: float  # time spent decoding


def _decode(
    item: InputImage,
    max_pixels: int | None,
    background: tuple[int, int, int],
    readers: dict[Path, FrameReader],
) -> Decoded:
    start = time.perf_counter()
    try:
        if item.frame is not None:
            img = readers[item.path].get(item.frame)
        else:
            img = np.array(load_image(item.path, max_pixels=max_pixels, background=background))  # writable
        return Decoded(item, img, None, time.perf_counter() - start)
    except (ImageError, VideoError) as e:
        return Decoded(
            item,
            None,
            ImageError(f"{e} ({item.rel})") if item.frame is not None else e,
            time.perf_counter() - start,
        )


def prefetch_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int = 2, depth: int = 4
) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, in order, with at most ``depth`` results pending.

    Memory stays bounded by ``depth`` items however long ``items`` is. An exception raised by ``fn``
    surfaces when its item is reached; stopping early cancels the work not yet started.
    """
    if workers < 1 or depth < 1:
        raise ValueError(f"workers and depth must be at least 1, got {workers} and {depth}")
    pending: deque[Future[R]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="langseg-prefetch") as pool:
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


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
    its ``error`` instead of raising, so the caller can report it and go on. Video frames are decoded
    by one forward reader per video (:class:`~langseg.video.FrameReader`), never by seeking.
    """
    frames: dict[Path, list[int]] = {}
    for item in items:
        if item.frame is not None:
            frames.setdefault(item.path, []).append(item.frame)
    readers = {path: FrameReader(path, indices) for path, indices in frames.items()}
    try:
        yield from prefetch_map(
            lambda item: _decode(item, max_pixels, background, readers),
            items,
            workers=workers,
            depth=prefetch,
        )
    finally:
        for reader in readers.values():
            reader.close()
