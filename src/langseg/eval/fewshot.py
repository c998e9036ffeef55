"""Zero-shot benchmarks in the HSNet data layout: PASCAL-5i, COCO-20i and FSS-1000 (spec 7.2-7.3).

::

    DATA_ROOT/VOC2012/JPEGImages/<image>.jpg
    DATA_ROOT/VOC2012/SegmentationClassAug/<image>.png     (class index + 1, 255 = boundary)
    DATA_ROOT/COCO2014/{train2014,val2014}/<image>.jpg
    DATA_ROOT/COCO2014/annotations/{train2014,val2014}/<image>.png   (class index + 1)
    DATA_ROOT/FSS-1000/<class>/{1..10}.jpg and .png       (mask: gray >= 128 is the object)
    SPLITS_DIR/pascal/val/fold{f}.txt   lines "<image>__<class 1-based>"
    SPLITS_DIR/coco/val/fold{f}.pkl     dict class index -> list of "val2014/<image>.jpg"
    SPLITS_DIR/fss/test.txt             the 240 test class folder names

``SPLITS_DIR`` defaults to ``DATA_ROOT/splits``; the files come from HSNet's ``data/splits`` folder.

Episodes are fixed: PASCAL-5i takes entry ``k mod N`` of the fold file for ``k < 1000``; COCO-20i
draws a class, then a query image of it, 1000 times with numpy's legacy generator seeded 0 (the
official ``np.random.seed(0)`` + ``np.random.choice`` sequence, here from a local ``RandomState``);
FSS-1000 takes every ``.jpg`` of each test class (2400 episodes). Each image is resized to 480x480
(PIL bilinear) and its mask with nearest, as the official code does.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.base import DatasetError
from ..inference import normalize

Benchmark = Literal["pascal", "coco", "fss"]
BENCHMARKS: tuple[str, ...] = ("pascal", "coco", "fss")
MaskKind = Literal["voc", "index", "binary"]

_HERE = Path(__file__).resolve().parent
SPLITS_HINT = (
    "the split files come from the HSNet repository (github.com/juhongm999/hsnet, folder data/splits; "
    "lang-seg ships the same files in fewshot_data/data/splits): copy that folder to DATA_ROOT/splits "
    "or pass --splits-dir"
)
FSS_TEST_OFFSET = 760  # FSS-1000 class ids: 520 train, 240 val, then the 240 test classes
PASCAL_CLASSES, COCO_CLASSES = 20, 80
NUM_FOLDS = 4


@dataclass(frozen=True)
class Episode:
    """One zero-shot query: an image, its mask, and the class asked for."""

    image: Path
    mask: Path
    class_id: int  # 0-based class index of the benchmark


@dataclass
class FewShotBenchmark:
    """A fold of a benchmark: its test classes, their prompts and the fixed episode list."""

    name: str  # "pascal", "coco" or "fss"
    fold: int  # 0..3 (always 0 for FSS-1000)
    num_classes: int  # size of the class-id space (20, 80, 1000)
    class_ids: list[int]  # the fold's test classes
    class_names: dict[int, str]  # prompt of each test class, used as ["others", name]
    episodes: list[Episode]
    mask_kind: MaskKind  # "voc": index+1 with 255 boundary; "index": index+1; "binary": gray >= 128


def label_names(name: Benchmark) -> list[str]:
    """The official prompt list of PASCAL (20) or COCO (80), index = class id."""
    files = {"pascal": "fewshot_pascal.txt", "coco": "fewshot_coco.txt"}
    if name not in files:
        raise ValueError(f"no packaged label list for {name!r}; expected one of {sorted(files)}")
    return [ln.strip() for ln in (_HERE / files[name]).read_text(encoding="utf-8").splitlines() if ln.strip()]


def fold_classes(name: Benchmark, fold: int = 0) -> list[int]:
    """Test classes: PASCAL ``5f..5f+4``, COCO ``f, f+4, ..., f+76``, FSS-1000 ``760..999``."""
    if name == "fss":
        return list(range(FSS_TEST_OFFSET, FSS_TEST_OFFSET + 240))
    if fold not in range(NUM_FOLDS):
        raise ValueError(f"fold must be 0..3, got {fold!r}")
    if name == "pascal":
        n = PASCAL_CLASSES // NUM_FOLDS
        return [fold * n + i for i in range(n)]
    if name == "coco":
        return [fold + NUM_FOLDS * i for i in range(COCO_CLASSES // NUM_FOLDS)]
    raise ValueError(f"unknown benchmark {name!r}; expected one of {BENCHMARKS}")


def _folder(root: Path, name: str, marker: str) -> Path:
    """``root/name``, or ``root`` itself when it is that folder (recognized by ``marker``)."""
    if (root / name).is_dir():
        return root / name
    if (root / marker).exists():
        return root
    raise DatasetError(f"{root / name}: folder not found (HSNet layout: DATA_ROOT/{name}/...)")


def _split_file(splits_dir: Path, rel: str) -> Path:
    path = splits_dir / rel
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found; {SPLITS_HINT}")
    return path


def _check_files(episodes: list[Episode]) -> None:
    """Every query image and mask exists; else name the first missing file."""
    missing = [p for ep in episodes for p in (ep.image, ep.mask) if not p.is_file()]
    if missing:
        more = f" (and {len(set(missing)) - 1} more)" if len(set(missing)) > 1 else ""
        raise DatasetError(f"{missing[0]}: file of an episode not found{more}")


def pascal5i(
    data_root: str | Path, fold: int, *, splits_dir: str | Path | None = None, episodes: int = 1000
) -> FewShotBenchmark:
    """PASCAL-5i fold ``fold``: episode ``k`` is entry ``k mod N`` of ``pascal/val/fold{f}.txt``."""
    root = Path(data_root)
    voc = _folder(root, "VOC2012", "JPEGImages")
    split = _split_file(Path(splits_dir) if splits_dir else root / "splits", f"pascal/val/fold{fold}.txt")
    entries: list[tuple[str, int]] = []
    for n, line in enumerate(split.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        image, sep, cls = line.strip().rpartition("__")
        if not sep or not cls.isdigit() or not 1 <= int(cls) <= PASCAL_CLASSES:
            raise DatasetError(f"{split}:{n}: expected '<image>__<class 1..20>', got {line.strip()!r}")
        entries.append((image, int(cls) - 1))
    if not entries:
        raise DatasetError(f"{split}: no entries")
    names = label_names("pascal")
    classes = fold_classes("pascal", fold)
    eps = [
        Episode(voc / "JPEGImages" / f"{image}.jpg", voc / "SegmentationClassAug" / f"{image}.png", c)
        for image, c in (entries[k % len(entries)] for k in range(episodes))
    ]
    _check_files(eps)
    return FewShotBenchmark(
        "pascal", fold, PASCAL_CLASSES, classes, {c: names[c] for c in classes}, eps, "voc"
    )


class _ListsOnly(pickle.Unpickler):
    """Unpickles plain containers (and numpy scalars) only: a split file runs no code."""

    _ALLOWED = {("builtins", n) for n in ("dict", "list", "tuple", "set", "str", "int")} | {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_coco_split(path: Path) -> dict[int, list[str]]:
    """``coco/val/fold{f}.pkl`` -> ``{class index: [relative image paths]}``, read without running code."""
    try:
        data = _ListsOnly(io.BytesIO(path.read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable COCO-20i split file: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict of class -> image list, got {type(data).__name__}")
    return {int(k): [str(v) for v in vals] for k, vals in data.items()}


def coco_episode_draws(
    classwise: dict[int, list[str]], class_ids: list[int], episodes: int = 1000, seed: int = 0
) -> list[tuple[int, str]]:
    """``(class, image)`` per episode: numpy's legacy ``choice(.., 1, replace=False)`` twice, seeded."""
    rng = np.random.RandomState(seed)  # same stream as the official np.random.seed(seed)
    draws = []
    for _ in range(episodes):
        c = int(rng.choice(class_ids, 1, replace=False)[0])
        images = classwise.get(c)
        if not images:
            raise DatasetError(f"the COCO-20i split has no images for class {c}")
        draws.append((c, str(rng.choice(images, 1, replace=False)[0])))
    return draws


def _coco_mask_path(coco: Path, image: str) -> Path:
    stem = image[: image.index(".jpg")] if ".jpg" in image else str(Path(image).with_suffix(""))
    return coco / "annotations" / f"{stem}.png"


def coco20i(
    data_root: str | Path,
    fold: int,
    *,
    splits_dir: str | Path | None = None,
    episodes: int = 1000,
    seed: int = 0,
) -> FewShotBenchmark:
    """COCO-20i fold ``fold``: 1000 seeded (class, image) draws from ``coco/val/fold{f}.pkl``."""
    root = Path(data_root)
    coco = _folder(root, "COCO2014", "annotations")
    split = _split_file(Path(splits_dir) if splits_dir else root / "splits", f"coco/val/fold{fold}.pkl")
    classes = fold_classes("coco", fold)
    draws = coco_episode_draws(read_coco_split(split), classes, episodes, seed)
    eps = [Episode(coco / image, _coco_mask_path(coco, image), c) for c, image in draws]
    _check_files(eps)
    names = label_names("coco")
    return FewShotBenchmark("coco", fold, COCO_CLASSES, classes, {c: names[c] for c in classes}, eps, "index")


def fss1000(data_root: str | Path, *, splits_dir: str | Path | None = None) -> FewShotBenchmark:
    """FSS-1000 test split: every ``.jpg`` of each class in ``fss/test.txt`` (sorted), ids from 760."""
    root = Path(data_root)
    fss = root / "FSS-1000" if (root / "FSS-1000").is_dir() else root  # or the FSS-1000 folder itself
    split = _split_file(Path(splits_dir) if splits_dir else root / "splits", "fss/test.txt")
    categories = sorted(ln.strip() for ln in split.read_text(encoding="utf-8").splitlines() if ln.strip())
    if not categories:
        raise DatasetError(f"{split}: no classes")
    eps: list[Episode] = []
    for i, cat in enumerate(categories):
        folder = fss / cat
        if not folder.is_dir():
            raise DatasetError(f"{folder}: class folder of FSS-1000 not found")
        for img in sorted(str(p) for p in folder.iterdir()):  # the official sorted glob order
            p = Path(img)
            if p.name.split(".")[1:2] == ["jpg"]:
                eps.append(Episode(p, folder / (p.name.split(".")[0] + ".png"), FSS_TEST_OFFSET + i))
    if not eps:
        raise DatasetError(f"{fss}: no .jpg query images in the test classes")
    _check_files(eps)
    ids = [FSS_TEST_OFFSET + i for i in range(len(categories))]
    return FewShotBenchmark(
        "fss", 0, FSS_TEST_OFFSET + len(categories), ids, dict(zip(ids, categories)), eps, "binary"
    )


def load_benchmark(
    name: str,
    data_root: str | Path,
    fold: int = 0,
    *,
    splits_dir: str | Path | None = None,
    episodes: int = 1000,
    seed: int = 0,
) -> FewShotBenchmark:
    """Dispatch on ``name`` (``pascal``, ``coco`` or ``fss``)."""
    if not Path(data_root).is_dir():
        raise DatasetError(f"{data_root}: data root not found")
    if name == "pascal":
        return pascal5i(data_root, fold, splits_dir=splits_dir, episodes=episodes)
    if name == "coco":
        return coco20i(data_root, fold, splits_dir=splits_dir, episodes=episodes, seed=seed)
    if name == "fss":
        return fss1000(data_root, splits_dir=splits_dir)
    raise DatasetError(f"unknown zero-shot benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")


# ---------------------------------------------------------------------------------------- loading
def read_rgb(path: Path) -> Image.Image:
    """Decode as the official readers do: ``Image.open(..).convert('RGB')``, no EXIF rotation."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as e:  # PIL raises many types for bad files
        raise DatasetError(f"{path}: unreadable image: {e}") from None


def read_episode_mask(path: Path, kind: MaskKind, class_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask file -> ``(H, W)`` uint8 foreground {0, 1} and ``(H, W)`` bool ignore (VOC boundary)."""
    try:
        with Image.open(path) as m:
            raw = np.asarray(m.convert("L") if kind == "binary" else m).astype(np.int64)
    except Exception as e:
        raise DatasetError(f"{path}: unreadable mask: {e}") from None
    if raw.ndim != 2:
        raise DatasetError(f"{path}: mask must be single-channel, got shape {raw.shape}")
    if kind == "binary":
        return (raw >= 128).astype(np.uint8), np.zeros(raw.shape, dtype=bool)
    fg = (raw == class_id + 1).astype(np.uint8)
    ignore = raw == 255 if kind == "voc" else np.zeros(raw.shape, dtype=bool)
    return fg, ignore


def resize_nearest(mask: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W)`` -> ``(size, size)`` with ``F.interpolate(mode='nearest')``, the official GT resize."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]  # (1, 1, H, W)
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0]


class EpisodeDataset(torch.utils.data.Dataset):
    """Episodes as tensors: normalized ``(3, S, S)`` image, ``(S, S)`` int64 target, bool ignore, class."""

    def __init__(
        self, bench: FewShotBenchmark, mean: tuple[float, ...], std: tuple[float, ...], size: int = 480
    ) -> None:
        self.bench, self.size = bench, size
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.bench.episodes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        ep = self.bench.episodes[i]
        img = read_rgb(ep.image)
        fg, ignore = read_episode_mask(ep.mask, self.bench.mask_kind, ep.class_id)
        if fg.shape != (img.height, img.width):
            raise DatasetError(
                f"{ep.mask}: mask is {fg.shape[1]}x{fg.shape[0]} but the image is {img.width}x{img.height}"
            )
        img = img.resize((self.size, self.size), Image.BILINEAR)  # torchvision Resize((S, S)) on PIL
        x = (
            torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
        )  # (3, S, S)
        x = normalize(x, self.mean, self.std)
        target = resize_nearest(fg, self.size).long()  # (S, S) {0, 1}
        ignore_t = resize_nearest(ignore.astype(np.uint8), self.size).bool()
        return x, target, ignore_t, ep.class_id
