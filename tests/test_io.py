"""Input robustness: every image mode to upright RGB, size limits, bad files named; input expansion,
output naming, atomic writes, label checks, and the Predictor on awkward inputs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path, PurePath

import numpy as np
import pytest
import torch
from PIL import Image

from langseg.errors import LangsegError
from langseg.files import OutputExistsError, atomic_write, write_folder, write_json
from langseg.images import ImageError, load_image, to_rgb_array
from langseg.inputs import InputImage, expand_inputs, iter_decoded
from langseg.labels import LabelError, check_prompt_lengths, parse_labels, parse_templates, read_labels_file
from langseg.outputs import output_stems


def _png(path: Path, width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> Path:
    """A PNG written by hand (for 16-bit RGB and for headers that lie about the size)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


# ------------------------------------------------------------------------------ modes to RGB
def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high
    arr[:, :10] = 255  # white band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.size == (20, 40)  # upright: 20 wide, 40 high
    up = np.asarray(img)
    assert up[:8].mean() > 200 and up[-20:].mean() < 50  # the stored left edge is now the top


def test_grayscale_bilevel_and_palette(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "g.png")), np.repeat(gray[:, :, None], 3, 2))
    Image.fromarray(gray > 100).save(tmp_path / "b.png")  # mode "1"
    assert set(np.unique(np.asarray(load_image(tmp_path / "b.png")))) == {0, 255}
    pal = Image.new("P", (4, 4))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "p.png")
    out = np.asarray(load_image(tmp_path / "p.png"))
    assert out.shape == (4, 4, 3) and tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (200, 100, 50)


def test_transparency_is_composited_on_the_background(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 40, 0)
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[0, 2, 3] = 0, 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    white = np.asarray(load_image(tmp_path / "a.png")).astype(int)
    black = np.asarray(load_image(tmp_path / "a.png", background=(0, 0, 0))).astype(int)
    assert tuple(white[0, 0]) == (255, 255, 255) and tuple(black[0, 0]) == (0, 0, 0)  # transparent
    assert tuple(white[0, 1]) == (200, 40, 0)  # opaque: the colour itself
    assert np.abs(white[0, 2] - np.array([228, 148, 127])).max() <= 1  # half: a mix, by hand
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert tuple(to_rgb_array(la)[0, 0]) == (255, 255, 255)
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0  # palette entry 0 transparent
    assert to_rgb_array(pal).tolist() == [[[255, 255, 255], [0, 255, 0]]]


def test_cmyk_and_16_bit(tmp_path):
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    cyan = np.asarray(load_image(tmp_path / "c.jpg")).astype(int)
    assert np.abs(cyan[0, 0] - [0, 255, 255]).max() <= 3
    g16 = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert np.asarray(load_image(tmp_path / "g16.png"))[0, :, 0].tolist() == [0, 1, 128, 255]
    rgb16 = np.array([[[65535, 0, 32896], [257, 12850, 0]]], dtype=">u2")
    _png(tmp_path / "rgb16.png", 2, 1, 16, 2, b"\x00" + rgb16.tobytes())
    assert np.asarray(load_image(tmp_path / "rgb16.png")).tolist() == [[[255, 0, 128], [1, 50, 0]]]
    arr16 = np.full((2, 2, 3), 65535, np.uint16)
    assert (to_rgb_array(arr16) == 255).all()


# ------------------------------------------------------------------------------ bad files
def test_bad_files_are_named(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image at all")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    cases = {
        "empty.png": "empty",
        "notes.jpg": "not an image",
        "cut.jpg": "truncated",
        "missing.png": "no such",
    }
    for name, words in cases.items():
        with pytest.raises(ImageError, match=words) as info:
            load_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
        assert isinstance(info.value, LangsegError)


def test_size_limits_and_decompression_bombs(tmp_path):
    Image.new("RGB", (200, 100)).save(tmp_path / "big.png")
    with pytest.raises(
        ImageError, match=r"200x100 = 20,000 pixels is above the limit of 10,000.*--max-pixels"
    ):
        load_image(tmp_path / "big.png", max_pixels=10_000)
    assert load_image(tmp_path / "big.png", max_pixels=None).size == (200, 100)
    bomb = _png(tmp_path / "bomb.png", 100_000, 100_000, 8, 0, b"")  # 30 bytes claiming 10^10 pixels
    for limit in (None, 10**11):  # Pillow's own guard refuses before decoding, with our message
        with pytest.raises(
            ImageError, match="bomb.png: refused as a possible decompression bomb.*--max-pixels"
        ):
            load_image(bomb, max_pixels=limit)
    with pytest.raises(ImageError, match="above the limit"):
        to_rgb_array(Image.new("RGB", (200, 100)), max_pixels=10)


# ------------------------------------------------------------------------------ inputs and outputs
def test_expand_inputs_folders_globs_and_notes(tmp_path):
    for rel in ["a/x.png", "a/sub/y.JPG", "a/.hidden/z.png", "a/readme.txt", "b/x.png", "out/old.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    items, notes = expand_inputs(
        [
            tmp_path / "a",
            str(tmp_path / "b" / "*.png"),
            tmp_path / "a" / "x.png",
            tmp_path / "empty",
            str(tmp_path / "none*.png"),
            tmp_path,
            tmp_path / "gone.png",
        ],
        exclude=tmp_path / "out",
    )
    got = [(i.path.relative_to(tmp_path).as_posix(), i.rel.as_posix()) for i in items]
    assert got == [
        ("a/sub/y.JPG", "sub/y.JPG"),
        ("a/x.png", "x.png"),
        ("b/x.png", "x.png"),
        ("gone.png", "gone.png"),
    ]
    assert len(notes) == 2 and "empty" in notes[0] and "none*.png" in notes[1]  # named, not silent


def test_output_stems_are_distinct_and_stable():
    def item(rel: str, root: str) -> InputImage:
        return InputImage(Path("/x") / root / rel, PurePath(rel), root)

    items = [
        item("cat.jpg", "a"),
        item("cat.png", "a"),
        item("dog.png", "a"),
        item("dog.png", "b"),
        item("sub/cat.jpg", "a"),
        item("Cow.png", "a"),
        item("cow.PNG", "c"),
    ]
    stems = [s.as_posix() for s in output_stems(items)]
    assert stems == ["cat_jpg", "cat_png", "a/dog", "b/dog", "sub/cat", "a/Cow", "c/cow"]
    assert stems == [s.as_posix() for s in output_stems(items)]
    same = [item("x.png", "r"), item("x.png", "r"), item("x-2.png", "q")]
    assert [s.as_posix() for s in output_stems(same)] == ["r/x_png", "r/x_png-2", "x-2"]


def test_atomic_write_never_leaves_partial_files(tmp_path):
    target = tmp_path / "deep" / "r.json"
    write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_json(target, {"a": 2})

    def crash(f):
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash, overwrite=True)
    assert target.read_text() == '{\n  "a": 1\n}\n'  # untouched
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "new.bin", crash)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "r.json"]  # no temporary left
    write_json(target, {"a": 3}, overwrite=True)
    assert '"a": 3' in target.read_text()


def test_write_folder_appears_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "model"

    def fill(version):
        def write(folder):
            (folder / "a.bin").write_bytes(version * 3)
            if version == b"crash":
                raise RuntimeError("interrupted between the two files")
            (folder / "b.json").write_bytes(version)

        return write

    with pytest.raises(RuntimeError):
        write_folder(dest, fill(b"crash"))
    assert list(tmp_path.iterdir()) == []  # nothing, not half a folder, no temporary left
    write_folder(dest, fill(b"v1"))
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {"a.bin": b"v1v1v1", "b.json": b"v1"}
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_folder(dest, fill(b"v2"))
    with pytest.raises(RuntimeError):
        write_folder(dest, fill(b"crash"), overwrite=True)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {"a.bin": b"v1v1v1", "b.json": b"v1"}
    write_folder(dest, fill(b"v2"), overwrite=True)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {"a.bin": b"v2v2v2", "b.json": b"v2"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the old folder is gone


def test_iter_decoded_keeps_order_and_reports_errors(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        if i == 2:
            p.write_bytes(b"junk")
        else:
            Image.new("RGB", (8 + i, 4), (i, i, i)).save(p)
        paths.append(InputImage(p, PurePath(p.name), "t"))
    out = list(iter_decoded(paths, prefetch=2))
    assert [d.item for d in out] == paths
    assert [d.error is None for d in out] == [True, True, False, True, True]
    assert out[3].image.shape == (4, 11, 3) and out[3].image.flags.writeable
    assert "2.png" in str(out[2].error)


# ------------------------------------------------------------------------------ labels
def test_label_checks(tmp_path):
    assert parse_labels("cat;kitten, grass ,other") == [("cat", "kitten"), ("grass",), ("other",)]
    for bad, words in [
        ("", "empty"),
        (" , ", "empty"),
        ("cat,,dog", "empty label"),
        ("cat;", "empty synonym"),
        ("cat,Cat", "twice"),
        ("cat;dog,dog", "twice"),
    ]:
        with pytest.raises(LabelError, match=words):
            parse_labels(bad)
    (tmp_path / "l.txt").write_text("# classes\ncat;kitten\n\ncoffee table, cocktail table\n")
    assert read_labels_file(tmp_path / "l.txt") == [("cat", "kitten"), ("coffee table, cocktail table",)]
    (tmp_path / "none.txt").write_text("# nothing\n")
    with pytest.raises(LabelError, match="no labels"):
        read_labels_file(tmp_path / "none.txt")
    with pytest.raises(LabelError, match="cannot read"):
        read_labels_file(tmp_path / "missing.txt")
    assert parse_templates(["a photo of a {}."]) == ["a photo of a {}."]
    for bad in ["no slot", "{} and {}", "a {0}", "a {} }"]:
        with pytest.raises(LabelError, match="exactly once"):
            parse_templates([bad])
    check_prompt_lengths([("cat",)], ["a photo of a {}."])
    with pytest.raises(LabelError, match="tokens long"):
        check_prompt_lengths([("word " * 80,)])
    with pytest.raises(LabelError, match="tokens long in the prompt"):
        check_prompt_lengths([("word " * 70,)], ["a very very very very very detailed photo of {}"])


# ------------------------------------------------------------------------------ predictor
def test_predictor_composites_rgba_and_flips(tiny_model):
    from langseg import LSegPredictor

    rng = np.random.default_rng(3)
    rgba = (rng.random((64, 64, 4)) * 255).astype(np.uint8)
    rgba[:32, :, 3] = 0
    p = LSegPredictor(tiny_model)
    flat = to_rgb_array(Image.fromarray(rgba, "RGBA"))
    assert (flat[:32] == 255).all()  # not silently dropped: composited on white
    assert torch.equal(p.preprocess(Image.fromarray(rgba, "RGBA"))[0], p.preprocess(flat)[0])
    x = p.preprocess(flat)[0]
    text = tiny_model.encode_text(["a", "b", "c"])
    with torch.no_grad():
        expected = tiny_model(x, text) + tiny_model(x.flip(-1), text).flip(-1)  # official module_inference
        plain = tiny_model(x, text)
    flipped = LSegPredictor(tiny_model, flip=True).logits_tensor(x, text)
    assert torch.allclose(flipped, expected, atol=1e-5)
    assert not torch.allclose(flipped, 2 * plain, atol=1e-3)
    f = LSegPredictor(tiny_model, flip=True).features(flat)
    with torch.no_grad():
        e = tiny_model.encode_image(x) + tiny_model.encode_image(x.flip(-1)).flip(-1)
    assert torch.allclose(f, torch.nn.functional.normalize(e, dim=1)[0], atol=1e-5)
