"""segment and features on 2 processes (gloo, CPU, as under torchrun) equal a single-process run."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
from conftest import run_ranks
from PIL import Image

from langseg.cli import main
from langseg.pca import load_basis

WORLD = 2
LABELS = "background,red circle,blue square,green triangle"


def _inputs(folder: Path) -> Path:
    """7 images of three sizes (not a multiple of the world size) and one corrupt file."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(40, 56), (64, 48), (40, 56), (33, 70), (64, 48), (40, 56), (50, 50)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    (folder / "f7.png").write_bytes(b"not a png")
    return folder


def _commands(src: Path, out: Path) -> list[list[str]]:
    return [
        ["segment", str(src), "--labels", LABELS, "--out", str(out / "seg"), "--batch-size", "2"],
        ["features", str(src), "--out", str(out / "feat"), "--batch-size", "2", "--dtype", "float32"],
        [
            "features",
            str(src),
            "--out",
            str(out / "pca"),
            "--pca-dim",
            "3",
            "--layout",
            "hwc",
            "--dtype",
            "float32",
        ],
    ]


def _worker(rank: int, port: int, src: Path, out: Path) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    codes = [main(args) for args in _commands(src, out)]
    (out / f"codes{rank}.json").write_text(json.dumps(codes))


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_two_processes_write_what_one_process_writes(tmp_path, capsys):
    src = _inputs(tmp_path / "in")
    single = tmp_path / "single"
    single.mkdir()
    assert [main(args) for args in _commands(src, single)] == [1, 1, 1]  # the corrupt file is skipped
    multi = tmp_path / "multi"
    multi.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_ranks(_worker, (port, src, multi), WORLD)
    for rank in range(WORLD):
        assert json.loads((multi / f"codes{rank}.json").read_text()) == [1, 1, 1]  # every rank agrees

    assert _files(single / "seg") == _files(multi / "seg")
    for name in _files(single / "seg"):
        if name.endswith(".mask.png"):
            assert np.array_equal(
                np.asarray(Image.open(single / "seg" / name)), np.asarray(Image.open(multi / "seg" / name))
            ), name
    assert _files(single / "feat") == _files(multi / "feat")  # no index parts left behind
    one = json.loads((single / "feat" / "index.json").read_text())
    two = json.loads((multi / "feat" / "index.json").read_text())
    assert [e["file"] for e in two["images"]] == [e["file"] for e in one["images"]]
    assert len(one["images"]) == 7
    for entry in one["images"]:
        a = np.load(single / "feat" / entry["file"])
        b = np.load(multi / "feat" / entry["file"])
        np.testing.assert_allclose(a, b, atol=1e-5)
    # the dataset-wide PCA: one basis (fitted once, under a lock, on the same sample) for all ranks
    assert _files(single / "pca") == _files(multi / "pca")
    a, b = load_basis(single / "pca" / "pca.safetensors"), load_basis(multi / "pca" / "pca.safetensors")
    np.testing.assert_allclose(a.components, b.components, atol=1e-5)
    for entry in json.loads((multi / "pca" / "index.json").read_text())["images"]:
        np.testing.assert_allclose(
            np.load(single / "pca" / entry["file"]), np.load(multi / "pca" / entry["file"]), atol=1e-5
        )
