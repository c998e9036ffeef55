"""Zero-shot benchmarks: HSNet layouts, fold classes, fixed episodes, label pairs, HSNet metrics, CLI."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from langseg.cli import main
from langseg.data import DatasetError
from langseg.eval.fewshot import (
    EpisodeDataset,
    coco20i,
    fold_classes,
    fss1000,
    label_names,
    load_benchmark,
    pascal5i,
)
from langseg.eval.zeroshot import evaluate_zeroshot, label_pairs, pair_text

PASCAL_IMAGES = ("2007_000001", "2007_000002", "2007_000003")


def _save_rgb(path: Path, h: int, w: int, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)


def make_pascal(root: Path, seed: int = 0) -> Path:
    """VOC2012/JPEGImages + SegmentationClassAug (32x64) and splits/pascal/val/fold{0..3}.txt."""
    rng = np.random.default_rng(seed)
    for name in PASCAL_IMAGES:
        _save_rgb(root / "VOC2012" / "JPEGImages" / f"{name}.jpg", 32, 64, rng)
        values = np.array([0, 255] + list(range(1, 21)))
        mask = values[rng.integers(0, len(values), (32, 64))].astype(np.uint8)
        (root / "VOC2012" / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, "L").save(root / "VOC2012" / "SegmentationClassAug" / f"{name}.png")
    for f in range(4):
        split = root / "splits" / "pascal" / "val" / f"fold{f}.txt"
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text("".join(f"{n}__{5 * f + 1 + 2 * i}\n" for i, n in enumerate(PASCAL_IMAGES)))
    return root


def make_coco(root: Path, seed: int = 0) -> tuple[Path, dict[int, list[str]]]:
    """COCO2014/val2014 + annotations/val2014 (5 images) and splits/coco/val/fold0.pkl."""
    rng = np.random.default_rng(seed)
    names = [f"val2014/COCO_val2014_{i:012d}.jpg" for i in range(5)]
    for name in names:
        _save_rgb(root / "COCO2014" / name, 24, 40, rng)
        mask = rng.integers(0, 81, (24, 40)).astype(np.uint8)
        path = root / "COCO2014" / "annotations" / name.replace(".jpg", ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, "L").save(path)
    classwise = {c: [names[j] for j in range(5) if (c + j) % 3] for c in range(80)}
    split = root / "splits" / "coco" / "val" / "fold0.pkl"
    split.parent.mkdir(parents=True)
    split.write_bytes(pickle.dumps(classwise))
    return root, classwise


def make_fss(root: Path, seed: int = 0) -> Path:
    """FSS-1000/<class>/{1,2,10}.jpg|png for three classes; splits/fss/test.txt (unsorted)."""
    rng = np.random.default_rng(seed)
    for cat in ("cat_b", "cat_a", "cat_c"):
        for n in (1, 2, 10):
            _save_rgb(root / "FSS-1000" / cat / f"{n}.jpg", 28, 36, rng)
            gray = np.where(rng.random((28, 36)) < 0.5, 127, 128).astype(np.uint8)
            Image.fromarray(gray, "L").save(root / "FSS-1000" / cat / f"{n}.png")
        (root / "FSS-1000" / cat / "notes.txt").write_text("not an image")
    (root / "splits" / "fss").mkdir(parents=True)
    (root / "splits" / "fss" / "test.txt").write_text("cat_b\ncat_a\ncat_c\n")
    return root


def test_fold_classes_and_label_files():
    assert fold_classes("pascal", 2) == [10, 11, 12, 13, 14]
    assert fold_classes("coco", 1) == list(range(1, 80, 4)) and len(fold_classes("coco", 3)) == 20
    assert fold_classes("fss") == list(range(760, 1000))
    pascal, coco = label_names("pascal"), label_names("coco")
    assert (
        len(pascal) == 20
        and pascal[0] == "aeroplane"
        and pascal[10] == "diningtable"
        and pascal[19] == "tvmonitor"
    )
    assert len(coco) == 80 and coco[:5] == ["person", "bicycle", "car", "motorbike", "aeroplane"]
    assert coco[9] == "trafficlight" and coco[79] == "toothbrush" and not any(" " in n for n in coco)
    with pytest.raises(ValueError, match="fold"):
        fold_classes("pascal", 4)


def test_pascal_episodes_repeat_the_split_in_order(tmp_path):
    root = make_pascal(tmp_path)
    bench = pascal5i(root, 1)
    assert bench.class_ids == [5, 6, 7, 8, 9] and bench.class_names[5] == "bus"
    assert len(bench.episodes) == 1000
    for k in (0, 1, 2, 3, 500, 999):
        ep = bench.episodes[k]
        assert ep.image.stem == PASCAL_IMAGES[k % 3] and ep.class_id == 5 + 2 * (k % 3)
        assert ep.mask == root / "VOC2012" / "SegmentationClassAug" / f"{PASCAL_IMAGES[k % 3]}.png"
    assert pascal5i(root, 1).episodes == bench.episodes
    assert len(pascal5i(root, 1, episodes=7).episodes) == 7


def test_missing_split_file_names_it_and_hsnet(tmp_path):
    root = make_pascal(tmp_path)
    with pytest.raises(DatasetError, match=r"fold0\.txt.*HSNet"):
        pascal5i(root, 0, splits_dir=tmp_path / "elsewhere")
    (root / "COCO2014" / "annotations").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"coco/val/fold2\.pkl.*HSNet"):
        load_benchmark("coco", root, 2)
    (root / "splits" / "pascal" / "val" / "fold3.txt").write_text("2007_000009__16\n")
    with pytest.raises(DatasetError, match="2007_000009.jpg"):
        pascal5i(root, 3)


def test_pascal_targets_and_boundary(tmp_path):
    root = make_pascal(tmp_path)
    bench = pascal5i(root, 0, episodes=3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ds = EpisodeDataset(bench, mean, std, size=64)
    for k in range(3):
        x, target, ignore, cls = ds[k]
        ep = bench.episodes[k]
        raw = np.asarray(Image.open(ep.mask)).astype(np.int64)  # (32, 64) -> (64, 64): rows doubled
        up = raw[np.arange(64) // 2]
        assert cls == ep.class_id
        assert np.array_equal(target.numpy(), (up == cls + 1).astype(np.int64))
        assert np.array_equal(ignore.numpy(), up == 255)
        img = Image.open(ep.image).convert("RGB").resize((64, 64), Image.BILINEAR)
        ref = (np.asarray(img, dtype=np.float32) / 255 - np.array(mean, np.float32)) / np.array(
            std, np.float32
        )
        assert x.shape == (3, 64, 64)
        assert np.allclose(x.permute(1, 2, 0).numpy(), ref, atol=1e-6)


def _global_rng_draws(classwise, class_ids, n, seed):
    """The official sequence: np.random.seed + np.random.choice on numpy's global generator."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        out = []
        for _ in range(n):
            c = np.random.choice(class_ids, 1, replace=False)[0]
            out.append((int(c), str(np.random.choice(classwise[c], 1, replace=False)[0])))
        return out
    finally:
        np.random.set_state(state)


def test_coco_episodes_follow_the_seeded_official_sequence(tmp_path):
    root, classwise = make_coco(tmp_path)
    before = np.random.get_state()[1].copy()
    bench = coco20i(root, 0)
    assert np.array_equal(np.random.get_state()[1], before)  # no global RNG use
    assert bench.class_ids == list(range(0, 80, 4)) and len(bench.episodes) == 1000
    draws = _global_rng_draws(classwise, bench.class_ids, 1000, 0)
    got = [(ep.class_id, ep.image.relative_to(root / "COCO2014").as_posix()) for ep in bench.episodes]
    assert got == draws
    assert len({c for c, _ in got}) > 10  # the draws really vary
    assert coco20i(root, 0).episodes == bench.episodes  # two runs, same episodes
    assert coco20i(root, 0, seed=1).episodes != bench.episodes
    ep = bench.episodes[0]
    assert ep.mask == root / "COCO2014" / "annotations" / ep.image.relative_to(root / "COCO2014").with_suffix(
        ".png"
    )
    _, target, ignore, cls = EpisodeDataset(bench, (0.5,) * 3, (0.5,) * 3, size=48)[0]
    raw = np.asarray(Image.open(ep.mask)).astype(np.int64)[np.arange(48) // 2][:, (np.arange(48) * 40) // 48]
    assert np.array_equal(target.numpy(), (raw == cls + 1).astype(np.int64)) and not ignore.any()


def test_coco_split_loader_runs_no_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    root, _ = make_coco(tmp_path)
    (root / "splits" / "coco" / "val" / "fold0.pkl").write_bytes(pickle.dumps({0: [Evil()]}))
    with pytest.raises(DatasetError, match="refusing"):
        coco20i(root, 0)


def test_fss_episodes_classes_and_threshold(tmp_path):
    root = make_fss(tmp_path)
    bench = fss1000(root)
    assert bench.class_ids == [760, 761, 762]
    assert bench.class_names == {760: "cat_a", 761: "cat_b", 762: "cat_c"}
    assert [(ep.class_id, ep.image.name) for ep in bench.episodes[:3]] == [
        (760, "1.jpg"),
        (760, "10.jpg"),
        (760, "2.jpg"),
    ]
    assert len(bench.episodes) == 9 and bench.num_classes == 763
    _, target, _, _ = EpisodeDataset(bench, (0.5,) * 3, (0.5,) * 3, size=56)[1]
    gray = np.asarray(Image.open(bench.episodes[1].mask)).astype(np.int64)
    up = gray[np.arange(56) // 2][:, (np.arange(56) * 36) // 56]
    assert np.array_equal(target.numpy(), (up >= 128).astype(np.int64))


def test_label_pair_is_others_then_class(tiny_model, tmp_path):
    bench = fss1000(make_fss(tmp_path))
    text, rows = pair_text(tiny_model, bench)
    pairs = label_pairs(text, rows, torch.tensor([762, 760]))
    assert pairs.shape == (2, 2, tiny_model.config.embed_dim)
    for b, name in enumerate(["cat_c", "cat_a"]):
        ref = tiny_model.encode_text(["others", name])
        assert torch.allclose(pairs[b], ref, atol=1e-6)


def test_zero_shot_loop_equals_independent_computation(tiny_model, tmp_path):
    bench = fss1000(make_fss(tmp_path))
    res = evaluate_zeroshot(tiny_model, bench, batch_size=4, image_size=64, progress=False)
    ds = EpisodeDataset(bench, tiny_model.config.mean, tiny_model.config.std, size=64)
    inter, union = {}, {}
    for k, ep in enumerate(bench.episodes):
        x, target, _, _ = ds[k]
        with torch.no_grad():
            logits = tiny_model(x[None], ["others", bench.class_names[ep.class_id]])[0]  # (2, 64, 64)
        pred, gt = logits.argmax(0).numpy(), target.numpy()
        i = np.array([((pred == c) & (gt == c)).sum() for c in (0, 1)])
        u = np.array([((pred == c) | (gt == c)).sum() for c in (0, 1)])
        inter[ep.class_id] = inter.get(ep.class_id, 0) + i
        union[ep.class_id] = union.get(ep.class_id, 0) + u
    ids = bench.class_ids
    miou = np.mean([inter[c][1] / max(union[c][1], 1) for c in ids]) * 100
    fb = np.mean(sum(inter[c] for c in ids) / sum(union[c] for c in ids)) * 100
    m = res.metrics()
    assert m["episodes"] == 9
    assert m["mIoU"] == pytest.approx(miou, abs=1e-9) and m["FB-IoU"] == pytest.approx(fb, abs=1e-9)
    assert set(m["per_class_iou"]) == {"cat_a", "cat_b", "cat_c"}


def _zs(*argv: str) -> int:
    return main(["eval-zeroshot", *argv, "--workers", "0", "--no-progress", "--device", "cpu"])


def test_cli_zeroshot_is_reproducible_and_records_provenance(tiny_weights, tmp_path, capsys):
    root = make_pascal(tmp_path / "data")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        assert (
            _zs(
                "--dataset",
                "pascal",
                "--fold",
                "0",
                "--data-root",
                str(root),
                "--weights",
                str(tiny_weights),
                "--episodes",
                "6",
                "--batch-size",
                "3",
                "--out",
                str(out),
            )
            == 0
        )
    printed = capsys.readouterr().out
    assert "fold 0, 0-shot ==> mIoU" in printed and "FB-IoU" in printed
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert (
        ra["mIoU"] == rb["mIoU"]
        and ra["FB-IoU"] == rb["FB-IoU"]
        and ra["per_class_iou"] == rb["per_class_iou"]
    )
    assert ra["episodes"] == 6 and ra["fold"] == 0 and ra["dataset"]["name"] == "pascal"
    assert ra["test_classes"] == ["aeroplane", "bicycle", "bird", "boat", "bottle"]
    assert (
        ra["weights"]["sha256"]
        == hashlib.sha256((tiny_weights / "model.safetensors").read_bytes()).hexdigest()
    )
    assert ra["environment"]["torch_version"] == torch.__version__
    assert 0 <= ra["mIoU"] <= 100 and 0 <= ra["FB-IoU"] <= 100


def test_cli_all_folds_table(tiny_weights, tmp_path, capsys):
    root = make_pascal(tmp_path / "data")
    out = tmp_path / "all.json"
    assert (
        _zs(
            "--dataset",
            "pascal",
            "--folds",
            "all",
            "--data-root",
            str(root),
            "--weights",
            str(tiny_weights),
            "--episodes",
            "2",
            "--out",
            str(out),
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "mean" in printed
    data = json.loads(out.read_text())
    assert sorted(data["folds"]) == ["0", "1", "2", "3"]
    assert data["mean"]["mIoU"] == pytest.approx(np.mean([data["folds"][f]["mIoU"] for f in "0123"]))
    assert data["folds"]["3"]["test_classes"][0] == "pottedplant"


def test_cli_zeroshot_errors(tiny_weights, tmp_path, capsys):
    root = make_pascal(tmp_path / "data")
    assert _zs("--dataset", "coco", "--data-root", str(root), "--weights", str(tiny_weights)) == 2
    assert "COCO2014" in capsys.readouterr().err
    assert (
        _zs(
            "--dataset",
            "pascal",
            "--data-root",
            str(root),
            "--weights",
            str(tiny_weights),
            "--splits-dir",
            str(tmp_path / "none"),
        )
        == 2
    )
    assert "HSNet" in capsys.readouterr().err
    assert _zs("--dataset", "fss", "--fold", "2", "--data-root", str(root)) == 2
    assert "single test split" in capsys.readouterr().err
