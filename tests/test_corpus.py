"""A corpus of bad input for every command: no traceback, ever; one line naming the file, label or key.

Each case runs ``langseg.cli.main`` in this process (the code the console script runs) on files this
module generates, and checks the exit status (0 done, 1 inputs skipped, 2 usage/model errors, 70
internal errors), that every name the message must carry is there, and that nothing printed or
logged contains "Traceback". Input files that cannot be read are segmented in one run next to good
images, which must still be processed; each bad file is then its own case against that run's report.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import sys
import types
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import langseg
from langseg.cli import EXIT_INTERNAL, INTERNAL_ERROR, main
from langseg.models import create_model, save_pretrained
from langseg.models.checkpoint import langseg_to_official

TOY_LABELS = "background,red circle,blue square"


@dataclass
class Result:
    code: int
    text: str  # stdout + stderr + log records, together


def run(capsys, caplog, *argv) -> Result:
    caplog.clear()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: usage errors exit 2 by SystemExit
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return Result(code, out.out + out.err + caplog.text)


def check(res: Result, code: int, *names: str) -> None:
    assert "Traceback" not in res.text, res.text
    assert res.code == code, f"exit status {res.code}, expected {code}:\n{res.text}"
    for name in names:
        assert name in res.text, f"{name!r} not in the output:\n{res.text}"


# ---------------------------------------------------------------------------------------- files
def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` (1-bit gray) with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_with_exif(arr: np.ndarray, exif: bytes) -> bytes:
    """A JPEG whose APP1 segment holds ``exif`` (raw bytes after the ``Exif\\0\\0`` marker)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    data = buf.getvalue()
    payload = b"Exif\x00\x00" + exif
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + app1 + data[2:]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Good and bad inputs, weights and configs, all generated here (a few hundred KB in all)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    good = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    (root / "good").mkdir()
    Image.fromarray(good).save(root / "good" / "one.png")
    Image.fromarray(good[::-1]).save(root / "good" / "two.jpg")
    return root


@pytest.fixture(scope="module")
def bad_images(files) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the message must say) for inputs that must be skipped by name."""
    d = files / "bad"
    d.mkdir()
    rng = np.random.default_rng(1)
    arr = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    full_png, jpg = png_bytes(arr), io.BytesIO()
    Image.fromarray(arr).save(jpg, format="JPEG")
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes | None, expect: str) -> Path:
        p = d / name
        if data is not None:
            p.write_bytes(data)
        out[name] = (p, expect)
        return p

    put("empty.png", b"", "empty")
    put("random.png", rng.bytes(4000), "not an image file")
    put("text.jpg", b"hello, this is plain text\n" * 20, "not an image file")
    put("truncated.png", full_png[: len(full_png) // 2], "corrupt or truncated")
    put("truncated.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 3], "corrupt or truncated")
    put("header_only.png", full_png[:33], "not an image file")
    put("bad_crc.png", full_png[:29] + bytes([full_png[29] ^ 0xFF]) + full_png[30:], "not an image file")
    put("zero_size.png", bomb_png(0, 10), "")
    put("bomb.png", bomb_png(60000, 60000), "above the limit of 100,000,000")
    put("bomb_pillow.png", bomb_png(20000, 20000), "above the limit of")
    put("png_named.gif", rng.bytes(100), "not an image file")
    put("html.png", b"<html><body>not found</body></html>", "not an image file")
    put("gzip.png", zlib.compress(b"x" * 1000), "not an image file")
    os.mkfifo(put("fifo.png", None, "named pipe"))
    os.symlink("/dev/zero", put("dev_zero.png", None, "device"))
    os.symlink("loop.png", put("loop.png", None, "symbolic link loop"))
    os.symlink("nowhere.png", put("dangling.png", None, "broken symbolic link"))
    put("missing.png", None, "no such file")
    put("folder.png", None, "no images or videos in this folder").mkdir()
    put("empty_dir", None, "no images or videos in this folder").mkdir()
    put("nothing*.png", None, "matched no images")
    out["zero_size.png"] = (out["zero_size.png"][0], "zero_size.png")
    return out


# A run of segment over every bad input between two good images; each case checks one line of it.
@pytest.fixture(scope="module")
def skip_run(files, bad_images, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("skip-run")
    args = [files / "good" / "one.png", *[p for p, _ in bad_images.values()], files / "good" / "two.jpg"]
    capture = io.StringIO()
    import contextlib
    import logging

    handler = logging.StreamHandler(capture)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stdout(capture), contextlib.redirect_stderr(capture):
            code = main(["segment", *map(str, args), "--labels", TOY_LABELS, "--out", str(out_dir)])
    finally:
        logging.getLogger().removeHandler(handler)
    return code, capture.getvalue(), out_dir


BAD_IMAGE_NAMES = [
    "empty.png",
    "random.png",
    "text.jpg",
    "truncated.png",
    "truncated.jpg",
    "header_only.png",
    "bad_crc.png",
    "zero_size.png",
    "bomb.png",
    "bomb_pillow.png",
    "png_named.gif",
    "html.png",
    "gzip.png",
    "fifo.png",
    "dev_zero.png",
    "loop.png",
    "dangling.png",
    "missing.png",
    "folder.png",
    "empty_dir",
    "nothing*.png",
]


@pytest.mark.parametrize("name", BAD_IMAGE_NAMES)
def test_bad_image_is_skipped_by_name(name, bad_images, skip_run):
    code, text, _ = skip_run
    path, expect = bad_images[name]
    assert "Traceback" not in text, text
    assert code == 1, text
    lines = [ln for ln in text.splitlines() if ln.startswith("langseg: skipped") and str(path) in ln]
    assert lines, f"{path} not reported:\n{text}"
    assert expect in lines[0], lines[0]
    assert "weights_only" not in text and "MAX_IMAGE_PIXELS" not in text


def test_skipping_run_still_processes_the_good_images(skip_run):
    code, text, out_dir = skip_run
    assert code == 1
    for stem in ("one", "two"):
        for suffix in (".mask.png", ".overlay.png", ".json"):
            assert (out_dir / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing:\n{text}"
    assert "segmented 2 images" in text
    assert f"skipped {len(BAD_IMAGE_NAMES)} inputs" in text


# ------------------------------------------------------------------------- inputs that must work
UNUSUAL = {
    "one_pixel.png": lambda: png_bytes(np.full((1, 1, 3), 200, np.uint8)),
    "strip.png": lambda: png_bytes(np.full((4, 900, 3), 90, np.uint8)),
    "gray16.png": lambda: _save(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30)), "PNG"),
    "palette_alpha.png": lambda: _save(_palette_with_alpha(), "PNG"),
    "cmyk.jpg": lambda: _save(Image.new("CMYK", (24, 16), (10, 200, 30, 5)), "JPEG"),
    "exif_garbage.jpg": lambda: jpeg_with_exif(np.full((16, 24, 3), 60, np.uint8), b"\x00" * 40),
    "exif_bad_offsets.jpg": lambda: jpeg_with_exif(np.full((16, 24, 3), 60, np.uint8), _bad_tiff()),
    "animated.gif": lambda: _animated_gif(),
    "float.tif": lambda: _save(
        Image.fromarray(np.linspace(0, 1, 300, dtype=np.float32).reshape(15, 20)), "TIFF"
    ),
}


@pytest.fixture(scope="module")
def unusual_run(tmp_path_factory):
    """One segment run over valid images of unusual kinds (all must be written)."""
    import contextlib
    import logging
    import warnings

    root = tmp_path_factory.mktemp("unusual")
    paths = []
    for name, make in UNUSUAL.items():
        (root / name).write_bytes(make())
        paths.append(root / name)
    capture = io.StringIO()
    handler = logging.StreamHandler(capture)
    logging.getLogger().addHandler(handler)
    try:
        with (
            contextlib.redirect_stdout(capture),
            contextlib.redirect_stderr(capture),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            code = main(["segment", *map(str, paths), "--labels", TOY_LABELS, "--out", str(root / "out")])
    finally:
        logging.getLogger().removeHandler(handler)
    return code, capture.getvalue(), root, caught


@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_but_valid_images_are_segmented(name, unusual_run):
    code, text, root, caught = unusual_run
    assert "Traceback" not in text and code == 0, text
    stem = Path(name).stem
    assert (root / "out" / f"{stem}.mask.png").is_file()
    with Image.open(root / "out" / f"{stem}.overlay.png") as ov:
        assert ov.width * ov.height <= 4 * 900 + 2_000_000  # bounded legend
    assert "PIL" not in text and "site-packages" not in text  # no raw library warning reached the user
    assert not [w for w in caught if "PIL" in w.filename or "PIL" in str(w.message)]
    for line in text.splitlines():  # any warning names its image
        assert not line.strip() or line.startswith(("segmented", "langseg:")) or str(root) in line, line


def _save(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _palette_with_alpha() -> Image.Image:
    img = Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20), "L").convert("P")
    img.info["transparency"] = 3
    return img


def _bad_tiff() -> bytes:
    """A TIFF header whose first IFD claims 500 entries pointing past the end."""
    return b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 500) + b"\x12\x01\x03\x00" + b"\xff" * 12


def _animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((12, 12, 3), v, np.uint8)) for v in (0, 120, 250)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- labels
LABEL_CASES = [
    ("newline", ["--labels", "sky\nblue,other"], "'sky\\nblue'"),
    ("tab", ["--labels", "sky\tblue,other"], "'sky\\tblue'"),
    ("carriage return", ["--labels", "a\rb,c"], "'a\\rb'"),
    ("nul", ["--labels", "a\x00b,c"], "U+0000"),
    ("line separator", ["--labels", "a\u2028b,c"], "U+2028"),
    ("escape sequence", ["--labels", "\x1b[31mred,c"], "U+001B"),
    ("empty list", ["--labels", ""], "empty"),
    ("only commas", ["--labels", ",,"], "empty"),
    ("empty label", ["--labels", "a,,b"], "empty label"),
    ("empty synonym", ["--labels", "cat;,dog"], "empty synonym"),
    ("duplicate", ["--labels", "cat,Cat"], "'Cat' appears twice"),
    ("duplicate synonym", ["--labels", "cat;kitten,kitten"], "'kitten' appears twice"),
    ("too long", ["--labels", "word " * 120 + ",b"], "tokens long"),
    ("template without braces", ["--labels", "a,b", "--template", "a photo"], "'a photo'"),
    ("template with a stray brace", ["--labels", "a,b", "--template", "a {} }"], "'a {} }'"),
    ("template with two fields", ["--labels", "a,b", "--template", "{0} {}"], "'{0} {}'"),
    ("labels and labels-file", ["--labels", "a,b", "--labels-file", "x.txt"], "not allowed with"),
]


@pytest.mark.parametrize("argv, expect", [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES])
def test_bad_labels_are_refused_naming_the_label(argv, expect, files, capsys, caplog):
    res = run(capsys, caplog, "segment", files / "good" / "one.png", *argv, "--out", files / "never")
    check(res, 2, expect)
    assert not (files / "never").exists()


LABELS_FILE_CASES = [
    ("missing", None, "cannot read the labels file"),
    ("binary", b"\xff\xfe\x00\x81garbage", "not UTF-8"),
    ("empty", b"# only a comment\n\n", "has no labels"),
    ("tab inside", b"sky\tblue\ngrass\n", "'sky\\tblue'"),
    ("duplicate", b"cat\ndog\ncat\n", "'cat' appears twice"),
    ("folder", "dir", "cannot read the labels file"),
]


@pytest.mark.parametrize(
    "content, expect", [c[1:] for c in LABELS_FILE_CASES], ids=[c[0] for c in LABELS_FILE_CASES]
)
def test_bad_labels_file_is_refused_naming_the_file(content, expect, files, tmp_path, capsys, caplog):
    path = tmp_path / "labels.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    res = run(
        capsys, caplog, "segment", files / "good" / "one.png", "--labels-file", path, "--out", tmp_path / "o"
    )
    check(res, 2, expect)
    if content not in (None, "dir") and "appears" not in expect and "'" not in expect:
        assert str(path) in res.text


def test_the_same_label_rule_holds_in_the_python_api_and_the_server_parser(tiny_model):
    from langseg.labels import parse_labels
    from langseg.predictor import LSegPredictor

    with pytest.raises(langseg.LabelError, match=r"'sky\\nblue'"):
        parse_labels("sky\nblue,other")
    with pytest.raises(langseg.LabelError, match=r"'sky\\nblue'"):  # a list skips the string parser
        LSegPredictor(tiny_model).predict(np.zeros((32, 32, 3), np.uint8), ["sky\nblue", "other"])
    assert parse_labels(" sky , blue\n") == [("sky",), ("blue",)]  # surrounding whitespace is no label


# ---------------------------------------------------------------------------------------- options
OPTION_CASES = [
    ("unknown option", ["--no-such-option"], 2, "--no-such-option"),
    ("max-side too small", ["--max-side", "5"], 2, "--max-side"),
    ("max-side not a number", ["--max-side", "big"], 2, "--max-side"),
    ("batch-size zero", ["--batch-size", "0"], 2, "--batch-size"),
    ("scales not numbers", ["--multi-scale", "--scales", "a,b"], 2, "--scales"),
    ("scales negative", ["--multi-scale", "--scales", "-1"], 2, "--scales"),
    ("scales without multi-scale", ["--scales", "1"], 2, "--scales needs --multi-scale"),
    ("two protocols", ["--multi-scale", "--sliding-window"], 2, "--sliding-window"),
    ("window not a multiple of 32", ["--sliding-window", "33"], 2, "multiple of 32"),
    ("bad background", ["--background", "mauve"], 2, "--background"),
    ("bad precision", ["--precision", "fp8"], 2, "--precision"),
    ("overwrite and skip-existing", ["--overwrite", "--skip-existing"], 2, "--skip-existing"),
    ("alpha out of range", ["--alpha", "2"], 2, "--alpha"),
    ("negative max-pixels", ["--max-pixels", "-1"], 2, "--max-pixels"),
    ("unknown device", ["--device", "tpu9"], 2, "tpu9"),
    ("numerics official with fp16", ["--numerics", "official", "--precision", "fp16"], 2, "--numerics"),
    ("unknown weights name", ["--weights", "lseg-nonexistent"], 2, "lseg-nonexistent"),
]


@pytest.mark.parametrize(
    "argv, code, expect", [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES]
)
def test_bad_options_are_usage_errors(argv, code, expect, files, tmp_path, capsys, caplog):
    res = run(
        capsys,
        caplog,
        "segment",
        files / "good" / "one.png",
        "--labels",
        TOY_LABELS,
        "--out",
        tmp_path / "o",
        *argv,
    )
    check(res, code, expect)


def test_out_that_is_a_file_is_a_usage_error(files, tmp_path, capsys, caplog):
    (tmp_path / "out.txt").write_text("keep me")
    res = run(
        capsys,
        caplog,
        "segment",
        files / "good" / "one.png",
        "--labels",
        TOY_LABELS,
        "--out",
        tmp_path / "out.txt",
    )
    check(res, 2, "out.txt")
    assert (tmp_path / "out.txt").read_text() == "keep me"


def test_no_input_found_is_a_usage_error(tmp_path, capsys, caplog):
    res = run(
        capsys, caplog, "segment", tmp_path / "nothing-*.png", "--labels", TOY_LABELS, "--out", tmp_path / "o"
    )
    check(res, 2, "nothing-*.png")


# ----------------------------------------------------------------------------------------- weights
@pytest.fixture(scope="module")
def toy_folder() -> Path:
    return langseg.bundled_weights()["lseg-toy"]


def _config_variant(root: Path, toy: Path, name: str, edit) -> Path:
    out = root / name
    shutil.copytree(toy, out)
    meta = json.loads((out / "config.json").read_text())
    edit(meta)
    (out / "config.json").write_text(json.dumps(meta))
    return out


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(meta):
        node = meta["model"]
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


CONFIG_CASES = [
    ("depth as a string", _set("vit", "depth", "4"), "model.vit.depth"),
    ("zero heads", _set("vit", "num_heads", 0), "model.vit.num_heads"),
    ("heads not dividing width", _set("vit", "num_heads", 3), "model.vit.num_heads"),
    ("negative patch", _set("vit", "patch_size", -16), "model.vit.patch_size"),
    ("hooks past the last block", _set("vit", "hooks", [0, 1, 2, 9]), "model.vit.hooks"),
    ("hooks not a list", _set("vit", "hooks", 3), "model.vit.hooks"),
    ("mlp ratio null", _set("vit", "mlp_ratio", None), "model.vit.mlp_ratio"),
    ("bool as int", _set("features", True), "model.features"),
    ("text heads zero", _set("text", "heads", 0), "model.text.heads"),
    ("text as a list", _set("text", [1, 2]), "model.text"),
    ("unknown readout", _set("vit", "readout", "concat"), "model.vit.readout"),
    ("unknown activation", _set("activation", "gelu"), "model.activation"),
    ("arch option 7", _set("arch_option", 7), "arch_option"),
    ("no trunk", _set("vit", None), "image trunk"),
    ("unknown key", _set("vit", "depthh", 4), "depthh"),
    ("unknown name", _set("name", "lseg_giant"), "model.name"),
    ("name of a ResNet variant", _set("name", "lseg_zs_rn101"), "model.name"),
    ("labels empty", _set("labels", []), "model.labels"),
    ("labels not strings", _set("labels", [1, 2]), "model.labels.0"),
    ("std zero", _set("std", [0.5, 0, 0.5]), "model.std"),
    ("logit scale nan", _set("logit_scale", float("nan")), "model.logit_scale"),
    ("model not a mapping", lambda meta: meta.update(model=[1]), "model"),
    ("wrong format", lambda meta: meta.update(format="other-v9"), "not a langseg config"),
]


@pytest.mark.parametrize("edit, expect", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_json_names_the_key(edit, expect, files, toy_folder, tmp_path, capsys, caplog):
    weights = _config_variant(tmp_path, toy_folder, "w", edit)
    res = run(
        capsys,
        caplog,
        "segment",
        files / "good" / "one.png",
        "--labels",
        TOY_LABELS,
        "--weights",
        weights,
        "--out",
        tmp_path / "o",
    )
    check(res, 2, expect, "config.json")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _callback_with_arguments(path: Path, state_dict) -> None:
    """An official-layout file whose Lightning callback key is *called* with arguments when unpickled."""
    mod = "pytorch_lightning.callbacks.model_checkpoint"
    added = []
    for i in range(1, 4):
        name = ".".join(mod.split(".")[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    try:
        cls = type(
            "ModelCheckpoint",
            (),
            {"__module__": mod, "__reduce__": lambda self: (type(self), ("val_loss", 3))},
        )
        sys.modules[mod].ModelCheckpoint = cls
        torch.save({"state_dict": state_dict, "callbacks": {cls(): {"best_model_score": None}}}, path)
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory, tiny_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    rng = np.random.default_rng(2)
    official = langseg_to_official(tiny_model.state_dict())
    out = {}
    out["random.ckpt"] = root / "random.ckpt"
    out["random.ckpt"].write_bytes(rng.bytes(5000))
    out["empty.ckpt"] = root / "empty.ckpt"
    out["empty.ckpt"].write_bytes(b"")
    good = root / "good.ckpt"
    torch.save({"state_dict": official}, good)
    out["truncated.ckpt"] = root / "truncated.ckpt"
    out["truncated.ckpt"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out["evil.ckpt"] = root / "evil.ckpt"
    with open(out["evil.ckpt"], "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f, protocol=2)
    out["foreign.ckpt"] = root / "foreign.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, out["foreign.ckpt"])
    out["not_tensors.ckpt"] = root / "not_tensors.ckpt"
    torch.save({"state_dict": {"net.scratch.a": 1}}, out["not_tensors.ckpt"])
    out["missing_keys.ckpt"] = root / "missing_keys.ckpt"
    torch.save(
        {"state_dict": {k: v for i, (k, v) in enumerate(official.items()) if i % 7}}, out["missing_keys.ckpt"]
    )
    out["bad_shape.ckpt"] = root / "bad_shape.ckpt"
    torch.save(
        {"state_dict": {**official, "net.scratch.head1.weight": torch.zeros(3)}}, out["bad_shape.ckpt"]
    )
    out["text.ckpt"] = root / "text.ckpt"
    out["text.ckpt"].write_text("model weights go here\n")
    out["zip_garbage.ckpt"] = root / "zip_garbage.ckpt"
    out["zip_garbage.ckpt"].write_bytes(b"PK\x03\x04" + rng.bytes(3000))
    os.mkfifo(root / "fifo.ckpt")
    out["fifo.ckpt"] = root / "fifo.ckpt"
    os.symlink("/dev/zero", root / "zero.ckpt")
    out["zero.ckpt"] = root / "zero.ckpt"
    folder = root / "no_config"
    save_pretrained(tiny_model, folder)
    (folder / "config.json").unlink()
    out["no_config"] = folder
    folder = root / "corrupt_safetensors"
    save_pretrained(tiny_model, folder)
    (folder / "model.safetensors").write_bytes(rng.bytes(2000))
    out["corrupt_safetensors"] = folder
    folder = root / "config_not_json"
    save_pretrained(tiny_model, folder)
    (folder / "config.json").write_bytes(b"{not json")
    out["config_not_json"] = folder
    folder = root / "config_binary"
    save_pretrained(tiny_model, folder)
    (folder / "config.json").write_bytes(b"\xff\xfe\x81")
    out["config_binary"] = folder
    other = create_model("lseg_tiny", features=16)
    folder = root / "other_weights"
    save_pretrained(tiny_model, folder)
    save_pretrained(other, root / "other")
    shutil.copy(root / "other" / "model.safetensors", folder / "model.safetensors")
    out["other_weights"] = folder
    _callback_with_arguments(root / "callback_args.ckpt", official)
    out["callback_args.ckpt"] = root / "callback_args.ckpt"
    return out


WEIGHT_CASES = [
    ("random.ckpt", "not a PyTorch checkpoint"),
    ("empty.ckpt", "empty"),
    ("truncated.ckpt", "not a readable PyTorch file"),
    ("evil.ckpt", "not loaded"),
    ("foreign.ckpt", "not an official lang-seg checkpoint"),
    ("not_tensors.ckpt", "no state dict of tensors"),
    ("missing_keys.ckpt", "missing"),
    ("bad_shape.ckpt", "shape"),
    ("text.ckpt", "not a PyTorch checkpoint"),
    ("zip_garbage.ckpt", "not a readable PyTorch file"),
    ("fifo.ckpt", "not a regular file"),
    ("zero.ckpt", "not a regular file"),
    ("no_config", "config file config.json is missing"),
    ("corrupt_safetensors", "not a readable safetensors file"),
    ("config_not_json", "not a readable config.json"),
    ("config_binary", "not a readable config.json"),
    ("other_weights", "does not fit"),
]


@pytest.mark.parametrize("name, expect", WEIGHT_CASES, ids=[c[0] for c in WEIGHT_CASES])
def test_bad_weights_are_refused_naming_the_file(name, expect, weight_files, files, tmp_path, capsys, caplog):
    path = weight_files[name]
    res = run(
        capsys,
        caplog,
        "segment",
        files / "good" / "one.png",
        "--labels",
        TOY_LABELS,
        "--weights",
        path,
        "--out",
        tmp_path / "o",
    )
    check(res, 2, expect, path.name)
    assert "weights_only=False" not in res.text and "will likely succeed" not in res.text


def test_official_file_whose_callback_key_is_called_with_arguments_loads(
    weight_files, files, tmp_path, capsys, caplog
):
    res = run(
        capsys,
        caplog,
        "segment",
        files / "good" / "one.png",
        "--labels",
        "a,b",
        "--weights",
        weight_files["callback_args.ckpt"],
        "--out",
        tmp_path / "o",
    )
    check(res, 0)
    assert (tmp_path / "o" / "one.mask.png").is_file()


def test_weights_without_labels_need_labels(weight_files, files, tmp_path, capsys, caplog):
    """An official file has no label list; segment without --labels refuses instead of painting one class."""
    res = run(
        capsys,
        caplog,
        "segment",
        files / "good" / "one.png",
        "--weights",
        weight_files["callback_args.ckpt"],
        "--out",
        tmp_path / "o",
    )
    check(res, 2, "--labels", "callback_args.ckpt")


# -------------------------------------------------------------------------------- other commands
def test_features_skips_bad_inputs_and_writes_the_good(files, bad_images, tmp_path, capsys, caplog):
    bad = [bad_images[n][0] for n in ("random.png", "fifo.png", "loop.png", "bomb.png")]
    res = run(capsys, caplog, "features", files / "good" / "one.png", *bad, "--out", tmp_path / "f")
    check(res, 1, *(str(p) for p in bad))
    assert (tmp_path / "f" / "one.npy").is_file() or any((tmp_path / "f").glob("one*"))


FEATURE_CASES = [
    ("bad format", ["--format", "hdf5"], "--format"),
    ("zero resolution", ["--resolution", "0x0"], "--resolution"),
    ("resolution not a size", ["--resolution", "big"], "--resolution"),
    ("no out", [], "--out"),
]


@pytest.mark.parametrize("argv, expect", [c[1:] for c in FEATURE_CASES], ids=[c[0] for c in FEATURE_CASES])
def test_features_usage_errors(argv, expect, files, tmp_path, capsys, caplog):
    out = [] if not argv else ["--out", tmp_path / "f"]
    res = run(capsys, caplog, "features", files / "good" / "one.png", *out, *argv)
    check(res, 2, expect)


def test_convert_refuses_what_is_not_an_official_file(weight_files, toy_folder, tmp_path, capsys, caplog):
    for path, expect in (
        (weight_files["random.ckpt"], "not a PyTorch checkpoint"),
        (toy_folder, "langseg folder already"),
        (tmp_path / "missing.ckpt", "no such file"),
        (weight_files["fifo.ckpt"], "not a regular file"),
    ):
        res = run(capsys, caplog, "convert", path, tmp_path / "out")
        check(res, 2, expect, path.name)
    (tmp_path / "file").write_text("x")
    res = run(capsys, caplog, "convert", weight_files["callback_args.ckpt"], tmp_path / "file")
    check(res, 2, "file")


def test_convert_of_an_unnamed_official_file_says_it_has_no_labels(weight_files, tmp_path, capsys, caplog):
    res = run(capsys, caplog, "convert", weight_files["callback_args.ckpt"], tmp_path / "out")
    check(res, 0, "no label list")


WEIGHTS_CMD_CASES = [
    (["weights", "path", "lseg-nope"], 2, "lseg-nope"),
    (["weights", "download", "lseg-nope"], 2, "lseg-nope"),
    (["weights", "path"], 2, "needs at least one weights name"),
    (["weights", "list", "extra"], 2, "takes no names"),
    (["weights", "fetch"], 2, "invalid choice"),
    (["weights", "path", "lseg-demo-vitl16"], 1, "not downloaded yet"),
    (["weights", "path", "lseg-toy"], 0, "lseg-toy"),
]


@pytest.mark.parametrize(
    "argv, code, expect", WEIGHTS_CMD_CASES, ids=[" ".join(c[0]) for c in WEIGHTS_CMD_CASES]
)
def test_weights_command(argv, code, expect, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("LANGSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    res = run(capsys, caplog, *argv)
    check(res, code, expect)


def _no_network(*args, **kwargs):
    raise AssertionError("the command tried to download")


def _toy_dataset(root: Path, labels: str) -> Path:
    (root / "images" / "val").mkdir(parents=True)
    (root / "masks" / "val").mkdir(parents=True)
    (root / "labels.txt").write_text(labels)
    rng = np.random.default_rng(3)
    for i in range(2):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(
            root / "images" / "val" / f"s{i}.png"
        )
        Image.fromarray((rng.random((32, 32)) * 3).astype(np.uint8)).save(
            root / "masks" / "val" / f"s{i}.png"
        )
    return root


DATA_CASES = [
    (["data", "toy", "--out", "{tmp}/t", "--size", "1"], 2, "size 1"),
    (["data", "toy", "--out", "{tmp}/t", "--n-train", "-3"], 2, "-3"),
    (["data", "toy", "--out", "{file}"], 2, "file.txt"),
    (["data", "toy"], 2, "--out"),
    (["data", "frobnicate"], 2, "invalid choice"),
    (["eval", "--dataset", "generic", "--data-root", "{tmp}/nowhere"], 2, "nowhere"),
    (
        [
            "eval",
            "--dataset",
            "generic",
            "--data-root",
            "{ds}",
            "--template",
            "a {} }",
            "--weights",
            "lseg-toy",
            "--out",
            "{tmp}/e.json",
        ],
        2,
        "a {} }",
    ),
    (
        [
            "eval",
            "--dataset",
            "generic",
            "--data-root",
            "{ds}",
            "--limit",
            "0",
            "--weights",
            "lseg-toy",
            "--out",
            "{tmp}/e.json",
        ],
        2,
        "--limit",
    ),
    (
        ["eval", "--dataset", "generic", "--data-root", "{ds}", "--weights", "lseg-toy", "--out", "{file}"],
        2,
        "file.txt",
    ),
    (["eval", "--dataset", "imagenet", "--data-root", "{ds}"], 2, "imagenet"),
    (["eval-zeroshot", "--dataset", "pascal", "--data-root", "{tmp}/nowhere"], 2, "nowhere"),
    (["eval-zeroshot", "--dataset", "fss", "--fold", "2", "--data-root", "{tmp}"], 2, "--fold"),
    (["train", "--config", "{tmp}/missing.yaml"], 2, "missing.yaml"),
    (["train", "--config", "{bad_yaml}"], 2, "bad.yaml"),
    (["train", "--config", "{file}"], 2, "file.txt"),
    (["train"], 2, "--config"),
    (["app", "--examples", "{tmp}/no-such-example.png"], 2, "no-such-example.png"),
    (["app", "--port", "http"], 2, "--port"),
    ([], 2, "COMMAND"),
    (["frobnicate"], 2, "invalid choice"),
]


@pytest.mark.parametrize(
    "argv, code, expect", DATA_CASES, ids=[" ".join(c[0][:2]) + f" {i}" for i, c in enumerate(DATA_CASES)]
)
def test_other_commands_refuse_bad_arguments(argv, code, expect, tmp_path, capsys, caplog):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n  - : :\n")
    places = {
        "tmp": str(tmp_path),
        "file": str(tmp_path / "file.txt"),
        "bad_yaml": str(tmp_path / "bad.yaml"),
        "ds": str(tmp_path / "ds")
        if "{ds}" in " ".join(argv) and _toy_dataset(tmp_path / "ds", "a\nb\nc\n")
        else "",
    }
    res = run(capsys, caplog, *[_fill(a, places) for a in argv])
    check(res, code, expect)


def _fill(arg: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def test_unexpected_exceptions_are_internal_errors_without_traceback(
    files, tmp_path, monkeypatch, capsys, caplog
):
    """A bug is reported as one, with its own exit status, and only in one image: the others are written."""
    import langseg.cli.segment as segment

    real = segment._write
    calls = []

    def flaky(args, session, classes, d, pred, files_, infer_s):
        calls.append(d.item.path.name)
        if d.item.path.name == "one.png":
            raise ZeroDivisionError("division by zero")
        return real(args, session, classes, d, pred, files_, infer_s)

    monkeypatch.setattr(segment, "_write", flaky)
    res = run(
        capsys,
        caplog,
        "segment",
        files / "good" / "one.png",
        files / "good" / "two.jpg",
        "--labels",
        TOY_LABELS,
        "--out",
        tmp_path / "o",
    )
    check(res, EXIT_INTERNAL, INTERNAL_ERROR, "one.png", "ZeroDivisionError")
    assert (tmp_path / "o" / "two.mask.png").is_file() and not (tmp_path / "o" / "one.mask.png").exists()

    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(segment, "run", broken)
    res = run(capsys, caplog, "segment", files / "good" / "one.png", "--labels", TOY_LABELS)
    check(res, EXIT_INTERNAL, INTERNAL_ERROR, "KeyError")


def test_eval_skips_an_unreadable_image_and_scores_the_rest(tmp_path, capsys, caplog):
    ds = _toy_dataset(tmp_path / "ds", "a\nb\nc\n")
    (ds / "images" / "val" / "s1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (ds / "images" / "val" / "s2.png").write_bytes(b"")
    (ds / "masks" / "val" / "s2.png").write_bytes(b"")
    out = tmp_path / "e.json"
    res = run(
        capsys,
        caplog,
        "eval",
        "--dataset",
        "generic",
        "--data-root",
        ds,
        "--weights",
        "lseg-toy",
        "--out",
        out,
    )
    check(res, 1, "s1.png", "s2.png", "skipped 2")
    record = json.loads(out.read_text())
    assert record["images"] == 3 and len(record["skipped"]) == 2 and record["complete"]
    assert int(np.asarray(record["confusion_matrix"]).sum()) == 32 * 32  # only s0.png was scored
