"""The official lang-seg checkpoints by name: file, download location, and the config fields the weights
cannot tell. Imports nothing heavy (the command line lists the names at start-up); downloading and
caching are in :mod:`langseg.hub`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_DRIVE = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
_DRIVE_PAGE = "https://drive.google.com/file/d/{id}/view"


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable official checkpoint."""

    name: str  # our name, used with load_model(name)
    filename: str  # the official file name
    url: str  # direct download location
    page: str  # where a person downloads it by hand
    description: str
    sha256: str | None = None  # a published SHA-256, checked after download (none is published today)
    overrides: dict[str, Any] = field(default_factory=dict)  # config fields the weights cannot tell
    note: str = ""
    unavailable: str = ""  # why this name hands out nothing (and what to do instead); empty: available


def _drive(name: str, filename: str, file_id: str, description: str, **kw: Any) -> WeightsEntry:
    return WeightsEntry(
        name, filename, _DRIVE.format(id=file_id), _DRIVE_PAGE.format(id=file_id), description, **kw
    )


_ZS_VIT = {"name": "lseg_zs_vitl16_384", "activation": "relu", "labels": ("others",)}
_ZS_RN = {"name": "lseg_zs_rn101", "labels": ("others",)}

_ENTRIES = (
    _drive(
        "lseg-demo-vitl16",
        "demo_e200.ckpt",
        "1ayk6NXURI_vIPlym16f_RG3ffxBWHxvb",
        "demo model: ViT-L/16 image encoder, CLIP ViT-B/32 text encoder (any labels)",
        overrides={"labels": ("dog", "grass", "other")},
    ),
    _drive(
        "lseg-fss-vitl16",
        "fss_l16.ckpt",
        "1-wRkHVQ4UxVYiVPNVXFU4Qwo8qliN-xg",
        "zero-shot FSS-1000, ViT-L/16 (87.8 mIoU)",
        overrides=_ZS_VIT,
    ),
    _drive(
        "lseg-fss-rn101",
        "fss_rn101.ckpt",
        "1tIv239sRibgTF73m09Z3fmDYkTngQhwp",
        "zero-shot FSS-1000, ResNet-101 (84.7 mIoU)",
        overrides=_ZS_RN,
    ),
    _drive(
        "lseg-pascal-fold0-rn101",
        "pascal_fold0.ckpt",
        "1gKXh_VORfFBhGVfwaDD-FzLn3hqiIAoR",
        "zero-shot PASCAL-5i fold 0, ResNet-101 (52.8 mIoU)",
        overrides=_ZS_RN,
    ),
    _drive(
        "lseg-pascal-fold1-rn101",
        "pascal_fold1.ckpt",
        "16GrCGJi5hfjMZ0lzd-SHtLvbRpbxa8Sh",
        "zero-shot PASCAL-5i fold 1, ResNet-101 (53.8 mIoU)",
        overrides=_ZS_RN,
    ),
    _drive(
        "lseg-pascal-fold2-rn101",
        "pascal_fold2.ckpt",
        "1hJXCus0QzhphZ3R96fe8WHVYiYfpkF-G",
        "zero-shot PASCAL-5i fold 2, ResNet-101 (44.4 mIoU)",
        overrides=_ZS_RN,
    ),
    _drive(
        "lseg-pascal-fold3-rn101",
        "pascal_fold3.ckpt",
        "1lGzhGxx9FECPg52LAVW_4GZQIMx25ele",
        "zero-shot PASCAL-5i fold 3, ResNet-101 (38.5 mIoU)",
        overrides=_ZS_RN,
    ),
    _drive(
        "lseg-coco-fold0-rn101",
        "coco_fold0.ckpt",
        "1Q261gloDZQeqVA6pDqWVVzW8I6k0TTHu",
        "zero-shot COCO-20i fold 0, ResNet-101 (22.1 mIoU)",
        overrides=_ZS_RN,
    ),
    _drive(
        "lseg-coco-fold1-rn101",
        "coco_fold1.ckpt",
        "1q7iqEUmPePqqUq0QDUlhHkajTAydvVYn",
        "zero-shot COCO-20i fold 1, ResNet-101 (25.1 mIoU)",
        overrides=_ZS_RN,
        note="unavailable: the official link serves the fold-2 file",
        unavailable=(
            "the official download link for coco_fold1.ckpt serves the same file as coco_fold2.ckpt "
            "(lang-seg issue #42, github.com/isl-org/lang-seg/issues/42), so this name would hand "
            "out the fold-2 model. If you have the real fold-1 checkpoint, pass its path instead "
            "of the name, e.g. --weights path/to/coco_fold1.ckpt (or langseg.load_model(path))."
        ),
    ),
    _drive(
        "lseg-coco-fold2-rn101",
        "coco_fold2.ckpt",
        "1q7iqEUmPePqqUq0QDUlhHkajTAydvVYn",
        "zero-shot COCO-20i fold 2, ResNet-101 (24.9 mIoU)",
        overrides=_ZS_RN,
    ),
    _drive(
        "lseg-coco-fold3-rn101",
        "coco_fold3.ckpt",
        "1H6d6udhJ92eEMeRDF0E5NFJD2LDI1DBX",
        "zero-shot COCO-20i fold 3, ResNet-101 (21.5 mIoU)",
        overrides=_ZS_RN,
    ),
)
REGISTRY: MappingProxyType[str, WeightsEntry] = MappingProxyType({e.name: e for e in _ENTRIES})
