"""Dataset readers, the official joint transforms, label mappings and the grouped, resumable sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from langseg.data import ADE20K, IGNORE_INDEX, DatasetError, GenericSegmentation, ade20k_labels
from langseg.data.multi import (
    GroupedBatchSampler,
    ResumableLoader,
    TrainingSet,
    make_source,
    read_label_map,
    relabel,
    unify,
)
from langseg.data.transforms import AugmentConfig, RandomLongSideResize, train_transform, val_transform

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


# --------------------------------------------------------------------------------------- readers
@pytest.fixture()
def ade_root(tmp_path):
    """Three-image ADEChallengeData2016 fixture (raw 0 = unlabeled, 1..150 classes)."""
    root = tmp_path / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    for split, n in (("training", 2), ("validation", 1)):
        for i in range(n):
            _png(root / "images" / split / f"ADE_{i}.jpg", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
            mask = np.zeros((20, 30), np.uint8)
            mask[:, 10:] = 1
            mask[:, 20:] = 150
            _png(root / "annotations" / split / f"ADE_{i}.png", mask, "L")
    return tmp_path


def test_ade20k_reader_shifts_classes_and_ignores_unlabeled(ade_root):
    train = ADE20K(ade_root, "train")
    assert len(train) == 2 and len(ADE20K(ade_root / "ADEChallengeData2016", "val")) == 1
    s = train[0]
    assert s.mask[0, 0] == IGNORE_INDEX and s.mask[0, 15] == 0 and s.mask[0, 25] == 149
    assert len(train.labels) == 150 and train.labels[0] == "wall"
    assert "coffee" in ade20k_labels() and "coffee table" in ade20k_labels(full_names=True)


def test_ade20k_reader_errors_name_the_path(ade_root, tmp_path):
    with pytest.raises(DatasetError, match="not an ADE20K folder"):
        ADE20K(tmp_path / "nowhere", "train")
    (ade_root / "ADEChallengeData2016" / "annotations" / "training" / "ADE_1.png").unlink()
    with pytest.raises(DatasetError, match="ADE_1.png: mask missing"):
        ADE20K(ade_root, "train")
    bad = np.full((20, 30), 151, np.uint8)
    _png(ade_root / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_0.png", bad, "L")
    with pytest.raises(DatasetError, match="above 150"):
        ADE20K(ade_root, "val")[0]


def test_generic_reader_and_its_errors(tmp_path):
    (tmp_path / "labels.txt").write_text("sky\ntree;bush\n")
    _png(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    _png(tmp_path / "masks" / "a.png", np.array([[0, 1, 255, 1]] * 8, np.uint8).repeat(2, 1), "L")
    data = GenericSegmentation(tmp_path, split=None)
    assert data.labels == ["sky", "tree"] and data.label_synonyms[1] == ("tree", "bush")
    assert data[0].mask[0, :4].tolist() == [0, 0, 1, 1]
    _png(tmp_path / "masks" / "a.png", np.full((8, 8), 7, np.uint8), "L")
    with pytest.raises(DatasetError, match="a.png: value 7 is not a label index"):
        data[0]
    with pytest.raises(DatasetError, match="labels.txt"):
        GenericSegmentation(tmp_path / "missing")


# ------------------------------------------------------------------------------------ transforms
def _halves(h, w):
    """Left half black / class 0, right half white / class 1."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2 :] = 255
    mask = np.zeros((h, w), np.int64)
    mask[:, w // 2 :] = 1
    return Image.fromarray(img), mask


def test_long_side_resize_follows_the_official_rounding():
    from torchvision import tv_tensors

    t = RandomLongSideResize(30, 90)
    img = Image.new("RGB", (70, 45))
    raw = np.random.default_rng(0).integers(0, 150, (45, 70)).astype(np.uint8)
    torch.manual_seed(0)
    longs = set()
    for _ in range(40):
        out, m = t(img, tv_tensors.Mask(torch.from_numpy(raw)))
        w, h = out.size
        longs.add(w)
        assert 30 <= w <= 90
        assert h == int(45 * w / 70 + 0.5)  # short side: round half up, long side drawn uniformly
        pil = np.asarray(Image.fromarray(raw).resize((w, h), Image.NEAREST))  # the official mask resize
        assert np.array_equal(m.numpy(), pil)
    assert len(longs) > 20


def test_train_transform_keeps_image_and_mask_aligned():
    cfg = AugmentConfig(base_size=64, crop_size=64, scale_range=(0.5, 2.0))
    tf = train_transform(cfg, MEAN, STD)
    img, mask = _halves(48, 80)
    torch.manual_seed(1)
    for _ in range(10):
        x, y = tf(img, mask)
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert y.shape == (64, 64) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= {0, 1, IGNORE_INDEX}
        pix = x[0]  # normalized: black -1, white +1
        inner = torch.zeros_like(y, dtype=torch.bool)  # away from the blended class boundary
        inner[:, 2:-2] = (y[:, :-4] == y[:, 4:]) & (y[:, 1:-3] == y[:, 3:-1])
        assert (pix[(y == 0) & inner] < 0).all()  # flips and resizes moved image and mask together
        assert (pix[(y == 1) & inner] > 0).all()
        assert torch.all(pix[y == IGNORE_INDEX] == -1.0)  # padding: image 0 (normalized -1), mask ignored


def test_small_images_are_padded_right_and_bottom():
    cfg = AugmentConfig(base_size=32, crop_size=64, scale_range=(1.0, 1.0), flip=False)
    img, mask = _halves(16, 32)  # long side 32 stays 32 < crop 64
    x, y = train_transform(cfg, MEAN, STD)(img, mask)
    assert (y[16:] == IGNORE_INDEX).all() and (y[:, 32:] == IGNORE_INDEX).all()
    assert (y[:16, :32] != IGNORE_INDEX).all()  # the original sits at the top-left, uncropped
    assert y[:16, :16].eq(0).all() and y[:16, 16:32].eq(1).all()


def test_train_transform_is_reproducible_under_a_seed():
    tf = train_transform(AugmentConfig(base_size=64, crop_size=32), MEAN, STD)
    img, mask = _halves(40, 50)
    torch.manual_seed(5)
    a = tf(img, mask)
    torch.manual_seed(5)
    b = tf(img, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_val_transform_resizes_short_side_and_centre_crops():
    cfg = AugmentConfig(base_size=64, crop_size=32)
    cols = np.tile(np.arange(100), (50, 1))  # mask value = column index (image 100 x 50)
    img = Image.fromarray(np.zeros((50, 100, 3), np.uint8))
    x, y = val_transform(cfg, MEAN, STD)(img, cols)
    assert x.shape == (3, 32, 32) and y.shape == (32, 32)
    # short side 50 -> 32, long side int(100 * 32 / 50) = 64, centre offset round((64 - 32) / 2) = 16
    resized = np.asarray(Image.fromarray(cols.astype(np.uint8)).resize((64, 32), Image.NEAREST))
    assert np.array_equal(y.numpy(), resized[:, 16:48])


def test_transform_rejects_bad_masks():
    tf = val_transform(AugmentConfig(base_size=32, crop_size=32), MEAN, STD)
    with pytest.raises(DatasetError, match="differ in size"):
        tf(Image.new("RGB", (10, 10)), np.zeros((5, 10), np.int64))
    with pytest.raises(DatasetError, match="0..255"):
        tf(Image.new("RGB", (10, 10)), np.full((10, 10), 300))
    with pytest.raises(ValueError, match="multiple of 32"):
        AugmentConfig(crop_size=100)


# -------------------------------------------------------------------------------- label mapping
def test_label_map_file(tmp_path):
    f = tmp_path / "coco_to_shared.txt"
    f.write_text("# comment\nrider -> person\nbanner -> -   # dropped\n")
    m = read_label_map(f, ["person", "rider", "banner", "sky"])
    assert m == {"person": "person", "rider": "person", "banner": "-", "sky": "sky"}
    labels, lut = relabel(["person", "rider", "banner", "sky"], m)
    assert labels == ["person", "sky"]
    assert lut[:4].tolist() == [0, 0, IGNORE_INDEX, 1] and lut[IGNORE_INDEX] == IGNORE_INDEX
    f.write_text("* -> -\nsky -> sky\n")
    assert relabel(["person", "sky"], read_label_map(f, ["person", "sky"]))[0] == ["sky"]


def test_label_map_errors_name_file_and_line(tmp_path):
    f = tmp_path / "map.txt"
    f.write_text("person -> human\nzebra -> horse\n")
    with pytest.raises(DatasetError, match=r"map.txt:2: 'zebra' is not a label"):
        read_label_map(f, ["person"])
    f.write_text("person = human\n")
    with pytest.raises(DatasetError, match=r"map.txt:1: expected 'source label -> shared label'"):
        read_label_map(f, ["person"])
    with pytest.raises(DatasetError, match="cannot read"):
        read_label_map(tmp_path / "none.txt", ["person"])


class _Tiny:
    """A raw dataset of constant samples: mask value = sample index % 2."""

    def __init__(self, n, labels, size=(8, 8)):
        self.n, self.labels, self.size = n, labels, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        from langseg.data import SegmentationSample

        return SegmentationSample(
            Image.new("RGB", self.size, (i, 0, 0)), np.full(self.size[::-1], i % 2), f"s{i}"
        )


def test_union_label_space():
    a = make_source("a", _Tiny(3, ["cat", "dog"]))
    b = make_source("b", _Tiny(3, ["sky", "cat"]))
    ua, ub = unify([a, b])
    assert ua.labels == ub.labels == ["cat", "dog", "sky"]
    assert ub.lut[:2].tolist() == [2, 0] and ub.lut[IGNORE_INDEX] == IGNORE_INDEX


# ------------------------------------------------------------------------------------- sampling
def test_batches_stay_within_one_dataset_and_cover_each_sample_once():
    s = GroupedBatchSampler([5, 7], batch_size=3, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 2 + 3
    for b in batches:
        assert len({src for src, _, _ in b}) == 1
    seen = sorted((src, i) for b in batches for src, i, _ in b)
    assert seen == [(0, i) for i in range(5)] + [(1, i) for i in range(7)]


def test_sampler_order_depends_on_seed_and_epoch_only():
    a, b = GroupedBatchSampler([20], 4, seed=3), GroupedBatchSampler([20], 4, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(GroupedBatchSampler([20], 4, seed=4)) != list(a)


def test_sampler_shards_ranks_evenly():
    ranks = [GroupedBatchSampler([9, 4], 2, seed=0, rank=r, world_size=2) for r in range(2)]
    plans = [list(r) for r in ranks]
    assert len(plans[0]) == len(plans[1]) == len(ranks[0]) == 4  # 7 batches padded to 8
    keys = [(s, i) for p in plans for b in p for s, i, _ in b]
    assert set(keys) == {(0, i) for i in range(9)} | {(1, i) for i in range(4)}
    val = [
        GroupedBatchSampler([5, 1], 4, shuffle=False, rank=r, world_size=2, shard_samples=True)
        for r in range(2)
    ]
    plans = [list(v) for v in val]
    assert (
        [len(v) for v in val] == [len(p) for p in plans] == [2, 1]
    )  # one batch of 4 would leave rank 1 idle
    keys = sorted((s, i) for p in plans for b in p for s, i, _ in b)
    assert keys == [(0, i) for i in range(5)] + [(1, 0)]  # every sample exactly once, no padding


def test_loader_resumes_mid_epoch():
    data = TrainingSet(
        [make_source("t", _Tiny(10, ["a", "b"]))],
        lambda img, m: (torch.tensor(np.asarray(img)[0, 0, 0]), torch.from_numpy(m)),
    )
    loader = ResumableLoader(data, GroupedBatchSampler([10], 2, seed=0))
    loader.batch_sampler.set_epoch(2)
    it = iter(loader)
    first = [next(it)["image"].tolist() for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    rest = [b["image"].tolist() for b in it]
    fresh = ResumableLoader(data, GroupedBatchSampler([10], 2, seed=0))
    fresh.load_state_dict(state)
    fresh.batch_sampler.set_epoch(2)
    assert [b["image"].tolist() for b in fresh] == rest
    assert [b["image"].tolist() for b in fresh] == first + rest  # the next pass is a whole epoch again


def test_training_set_applies_the_lut_and_seeds_per_sample():
    src = make_source("t", _Tiny(4, ["a", "b"]), {"a": "-", "b": "b"})
    calls = []

    def tf(img, mask):
        calls.append(torch.rand(()).item())
        return torch.zeros(1), torch.from_numpy(mask)

    data = TrainingSet([src], tf)
    assert data[(0, 1, 7)]["mask"].unique().tolist() == [0]  # class "b" is now index 0
    assert data[(0, 0, 7)]["mask"].unique().tolist() == [IGNORE_INDEX]  # "a" dropped
    state = torch.random.get_rng_state()
    data[(0, 2, 11)]
    data[(0, 2, 11)]
    assert calls[-1] == calls[-2] and calls[0] == calls[1]  # the key's seed decides the augmentation
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is left alone
