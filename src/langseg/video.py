"""Video files as inputs: frames listed by demuxing (no decoding), then decoded in one sequential pass.

Decoding uses PyAV (``pip install 'langseg[video]'``), imported only when a video is actually read, so
everything else works without it. A frame is named by its index in presentation order and its
timestamp in milliseconds (``000120_4000ms``), so outputs of a frame can be traced back to the video.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LangsegError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


class VideoError(LangsegError, ValueError):
    """A video file that cannot be listed or decoded (the message names the file)."""


@dataclass(frozen=True)
class VideoFrame:
    """One frame of a video: the file, its index in presentation order and its time in seconds."""

    path: Path
    index: int
    seconds: float

    @property
    def name(self) -> str:
        """``<index>_<milliseconds>ms``, e.g. ``000120_4000ms``: a file stem (no dot) that sorts in
        frame order and tells when the frame was shown."""
        return f"{self.index:06d}_{round(self.seconds * 1000)}ms"


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise LangsegError(
            "reading video needs PyAV: pip install 'langseg[video]' (or pip install av)"
        ) from None
    return av


def _open(path: Path) -> Any:
    av = _av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: the file has no video stream")
    return container


def list_frames(path: str | Path, *, every: int = 1) -> list[VideoFrame]:
    """Every ``every``-th frame of the first video stream, with timestamps, by demuxing only.

    Timestamps come from the packets' presentation times (sorted, since packets arrive in decode
    order); a stream without them falls back to ``index / frame rate``.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        pts: list[int | None] = []
        try:
            for packet in container.demux(stream):
                if packet.size:  # the final flush packet is empty
                    pts.append(packet.pts)
        except _av().FFmpegError as e:
            raise VideoError(f"{path}: corrupt after {len(pts)} frames ({e})") from None
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        base = float(stream.time_base) if stream.time_base else None
    finally:
        container.close()
    if not pts:
        raise VideoError(f"{path}: the video has no frames")
    if base is not None and all(p is not None for p in pts):
        start = min(pts)
        times = [(p - start) * base for p in sorted(pts)]
    elif rate:
        times = [i / rate for i in range(len(pts))]
    else:
        times = [0.0] * len(pts)
    return [VideoFrame(path, i, float(times[i])) for i in range(0, len(pts), every)]


def iter_frames(path: str | Path, indices: Collection[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the frames at ``indices`` (presentation order) in one pass: ``(index, (H, W, 3) uint8)``.

    Frames are decoded sequentially and only the wanted ones are converted to RGB; decoding stops after
    the last wanted index. A frame that cannot be decoded raises :class:`VideoError` naming it.
    """
    wanted = set(indices)
    if not wanted:
        return
    reader = FrameReader(path, wanted)
    try:
        for index in sorted(wanted):
            yield index, reader.get(index)
    finally:
        reader.close()


class FrameReader:
    """One open video decoded forward, serving the ``wanted`` frames to decode-ahead threads.

    Threads may ask for frames slightly out of order: wanted frames decoded on the way to a later
    one wait in a buffer until asked for, so the buffer never holds more frames than requests are
    in flight. Thread-safe.
    """

    def __init__(self, path: str | Path, wanted: Collection[int]) -> None:
        self.path = Path(path)
        self.wanted = frozenset(wanted)
        self._lock = threading.Lock()
        self._buffer: dict[int, np.ndarray] = {}
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._index = -1  # index of the last decoded frame
        self._served = 0

    def get(self, index: int) -> np.ndarray:
        """The frame at ``index`` (presentation order) as ``(H, W, 3)`` uint8 RGB."""
        with self._lock:
            frame = self._buffer.pop(index, None)
            if frame is None:
                frame = self._decode_to(index)
            self._served += 1
            if self._served >= len(self.wanted) and not self._buffer:
                self._close()  # every wanted frame is out: give the file back now
            return frame

    def _decode_to(self, index: int) -> np.ndarray:
        """Decode forward to ``index`` (from the start when it lies behind), buffering wanted frames."""
        if index <= self._index:  # asked again or far out of order: start over
            self._close()
        if self._container is None:
            self._container = _open(self.path)
            self._frames = iter(self._container.decode(video=0))
            self._index = -1
        av = _av()
        while True:
            try:
                frame = next(self._frames)  # type: ignore[arg-type]
            except StopIteration:
                raise VideoError(
                    f"{self.path}: the video ends at frame {self._index}, frame {index} was asked for"
                ) from None
            except av.FFmpegError as e:
                raise VideoError(f"{self.path}: frame {self._index + 1} cannot be decoded ({e})") from None
            self._index += 1
            if self._index == index:
                return frame.to_ndarray(format="rgb24")
            if self._index in self.wanted:
                self._buffer[self._index] = frame.to_ndarray(format="rgb24")

    def _close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._index = None, None, -1

    def close(self) -> None:
        with self._lock:
            self._close()
            self._buffer.clear()
