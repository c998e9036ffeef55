"""The procedurally generated toy dataset: determinism, word-named classes, generic layout, CLI."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from langseg.cli import main
from langseg.data import DatasetError, GenericSegmentation
from langseg.data.toy import TOY_LABELS, ToyConfig, ToySegmentation, scene_rng, toy_scene, write_toy_dataset

SMALL = ToyConfig(size=48)


def test_scenes_are_a_function_of_seed_split_and_index():
    a = toy_scene(scene_rng(3, "train", 5), SMALL)
    b = toy_scene(scene_rng(3, "train", 5), SMALL)
    c = toy_scene(scene_rng(3, "val", 5), SMALL)
    d = toy_scene(scene_rng(4, "train", 5), SMALL)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and np.array_equal(a[1], b[1])
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(d[0]))


def test_scene_content_matches_its_words():
    """Pixels labelled "<colour> <shape>" have that colour; every scene holds at least one shape."""
    data = ToySegmentation(40, "train", SMALL)
    hues = {"red": 0.0, "blue": 0.62, "green": 0.33, "yellow": 0.15}
    seen = set()
    for i in range(len(data)):
        s = data[i]
        assert s.image.size == (48, 48) and s.image.mode == "RGB"
        assert s.mask.shape == (48, 48) and s.mask.dtype == np.int64
        assert set(np.unique(s.mask)) <= set(range(len(TOY_LABELS)))
        assert (s.mask > 0).any()
        rgb = np.asarray(s.image, dtype=np.float64) / 255
        for cls in np.unique(s.mask):
            seen.add(int(cls))
            mean = rgb[s.mask == cls].mean(0)
            h, sat, _ = colorsys.rgb_to_hsv(*mean)
            if cls == 0:
                continue  # textured background: low saturation on average is not guaranteed per scene
            want = hues[TOY_LABELS[cls].split()[0]]
            assert min(abs(h - want), 1 - abs(h - want)) < 0.06, (TOY_LABELS[cls], h)
            assert sat > 0.4
    assert seen == set(range(len(TOY_LABELS)))  # every class occurs in 40 scenes


def test_bad_toy_settings_are_errors():
    with pytest.raises(ValueError, match="size"):
        ToyConfig(size=8)
    with pytest.raises(ValueError, match="radius"):
        ToyConfig(min_radius=0.4, max_radius=0.3)
    with pytest.raises(ValueError, match="split"):
        scene_rng(0, "training", 0)
    with pytest.raises(DatasetError, match="at least one"):
        ToySegmentation(0)


def test_written_dataset_reads_back_with_the_generic_reader(tmp_path):
    out = write_toy_dataset(tmp_path / "toy", n_train=3, n_val=2, cfg=SMALL)
    assert (out / "labels.txt").read_text().splitlines() == list(TOY_LABELS)
    memory = ToySegmentation(2, "val", SMALL)
    disk = GenericSegmentation(out, "val")
    assert disk.labels == list(TOY_LABELS) and len(disk) == 2
    assert len(GenericSegmentation(out, "train")) == 3
    for i in range(2):
        assert np.array_equal(disk[i].mask, memory[i].mask)
        assert np.array_equal(np.asarray(disk[i].image), np.asarray(memory[i].image))


def test_writer_never_overwrites_without_permission(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not empty"):
        write_toy_dataset(tmp_path, 1, 1, SMALL)
    write_toy_dataset(tmp_path, 1, 1, SMALL, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "user data"
    assert (tmp_path / "images" / "train" / "train_00000.png").is_file()


def test_cli_data_toy(tmp_path, capsys):
    assert (
        main(["data", "toy", "--out", str(tmp_path / "t"), "--n-train", "2", "--n-val", "1", "--size", "32"])
        == 0
    )
    assert "red circle" in capsys.readouterr().out
    assert len(list((tmp_path / "t" / "masks" / "train").glob("*.png"))) == 2
    assert main(["data", "toy", "--out", str(tmp_path / "t"), "--n-train", "1", "--n-val", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["data", "toy", "--help"])
    assert e.value.code == 0
    assert "generic layout" in capsys.readouterr().out
