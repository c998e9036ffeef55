"""Input lists, shards and video frames for segment/features (in-process CLI, toy model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_video import write_video

from langseg.cli import main
from langseg.distributed import split
from langseg.inputs import expand_inputs, iter_decoded, parse_shard, read_inputs_file
from langseg.outputs import output_stems

LABELS = "background,red circle,blue square"


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_split_covers_every_item_once():
    for n in range(0, 23):
        for world in range(1, 6):
            parts = [split(list(range(n)), r, world) for r in range(world)]
            assert sorted(sum(parts, [])) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_inputs_from_file_resolves_against_its_folder(tmp_path):
    paths = _images(tmp_path / "data" / "frames", 3)
    listing = tmp_path / "data" / "list.txt"
    listing.write_text(f"# frames\nframes/im0.png\n\n{paths[2]}\nframes/im1.png\n", encoding="utf-8")
    entries = read_inputs_file(listing)
    assert [Path(e).resolve() for e in entries] == [
        paths[0].resolve(),
        paths[2].resolve(),
        paths[1].resolve(),
    ]
    items, notes = expand_inputs(entries)
    assert [i.path.name for i in items] == ["im0.png", "im2.png", "im1.png"] and not notes


def test_shards_write_exactly_the_full_run(tmp_path, capsys):
    _images(tmp_path / "in", 5)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(f"in/im{i}.png" for i in range(5)), encoding="utf-8")
    full = tmp_path / "full"
    assert (
        main(
            ["segment", "--inputs-from", str(listing), "--labels", LABELS, "--out", str(full), "--no-overlay"]
        )
        == 0
    )
    sharded = tmp_path / "sharded"
    for i in range(3):
        args = ["segment", "--inputs-from", str(listing), "--labels", LABELS, "--out", str(sharded)]
        assert main([*args, "--no-overlay", "--shard", f"{i}/3", "--skip-existing"]) == 0
    names = sorted(p.relative_to(full).as_posix() for p in full.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(sharded).as_posix() for p in sharded.rglob("*") if p.is_file())
    for name in names:
        if name.endswith(".mask.png"):
            assert np.array_equal(np.asarray(Image.open(full / name)), np.asarray(Image.open(sharded / name)))


def test_video_frames_are_inputs(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    write_video(video, 7, size=(64, 48))
    items, notes = expand_inputs([video], every=3)
    assert [i.frame for i in items] == [0, 3, 6] and not notes
    assert [str(s) for s in output_stems(items)] == [
        "clip/000000_0ms",
        "clip/000003_300ms",
        "clip/000006_600ms",
    ]
    decoded = list(iter_decoded(items, prefetch=3, workers=2))
    assert all(d.error is None and d.image.shape == (48, 64, 3) for d in decoded)
    out = tmp_path / "feats"
    assert main(["features", str(video), "--every", "3", "--out", str(out)]) == 0
    index = json.loads((out / "index.json").read_text())
    assert [e["file"] for e in index["images"]] == [
        f"clip/{s}.npy" for s in ("000000_0ms", "000003_300ms", "000006_600ms")
    ]


def test_a_broken_video_is_skipped_by_name(tmp_path, capsys):
    good = _images(tmp_path, 1)[0]
    bad = tmp_path / "broken.mkv"
    bad.write_bytes(b"\x00garbage" * 50)
    code = main(
        ["segment", str(good), str(bad), "--labels", LABELS, "--out", str(tmp_path / "o"), "--no-overlay"]
    )
    assert code == 1
    assert (tmp_path / "o" / "im0.mask.png").exists()
    err = capsys.readouterr().err
    assert "broken.mkv" in err and "Traceback" not in err
