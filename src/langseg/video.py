"""Video files as inputs: frames listed by demuxing (no decoding), then decoded in one sequential pass.

Decoding uses PyAV (``pip install 'langseg[video]'``), imported only when a video is actually read, so
everything else works without it. A frame is named by its index in presentation order and its
timestamp in seconds (``000120_4.000s``), so outputs of a frame can be traced back to the video.
"""

from __future__ import annotations

import logging
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
        """``<index>_<seconds>s``, e.g. ``000120_4.000s``: a file stem that sorts in frame order."""
        return f"{self.index:06d}_{self.seconds:.3f}s"


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
    last = max(wanted)
    path = Path(path)
    container = _open(path)
    av = _av()
    index = -1
    try:
        for frame in container.decode(video=0):
            index += 1
            if index in wanted:
                yield index, frame.to_ndarray(format="rgb24")
            if index >= last:
                return
    except av.FFmpegError as e:
        raise VideoError(f"{path}: frame {index + 1} cannot be decoded ({e})") from None
    finally:
        container.close()
    if index < last:
        raise VideoError(f"{path}: the video ends at frame {index}, frame {last} was asked for")
