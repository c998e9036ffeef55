"""Video input: frames listed by demuxing and decoded in one pass, on small videos the tests write."""

from __future__ import annotations

from pathlib import Path

import av  # the [video] extra, part of [all]
import numpy as np
import pytest

from langseg.errors import LangsegError
from langseg.video import VideoError, is_video, iter_frames, list_frames

FPS = 10


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> list[int]:
    """A clip whose frame ``i`` is flat grey ``20 * i``; returns the grey levels."""
    w, h = size
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    levels = [20 * i % 256 for i in range(frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for level in levels:
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), level, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return levels


def test_list_frames_indices_and_timestamps(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, 12)
    frames = list_frames(path)
    assert [f.index for f in frames] == list(range(12))
    np.testing.assert_allclose([f.seconds for f in frames], np.arange(12) / FPS, atol=1e-3)
    assert frames[5].name == "000005_500ms"
    assert [f.index for f in list_frames(path, every=5)] == [0, 5, 10]


def test_iter_frames_decodes_the_wanted_frames_in_order(tmp_path):
    path = tmp_path / "clip.mkv"
    levels = write_video(path, 9, size=(32, 32))
    got = list(iter_frames(path, [7, 2, 4]))
    assert [i for i, _ in got] == [2, 4, 7]
    for i, rgb in got:
        assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
        assert abs(float(rgb.mean()) - levels[i]) < 4  # lossy codec: close to the written grey


def test_bad_videos_are_named(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoError, match="junk.mp4"):
        list_frames(junk)
    path = tmp_path / "short.mp4"
    write_video(path, 3)
    with pytest.raises(VideoError, match="ends at frame 2"):
        list(iter_frames(path, [5]))
    assert is_video("a/B.MOV") and not is_video("a/b.png")


def test_missing_pyav_is_a_one_line_error(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("no av")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    with pytest.raises(LangsegError, match=r"pip install 'langseg\[video\]'"):
        list_frames(tmp_path / "x.mp4")
