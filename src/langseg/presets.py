"""Extraction recipes by name: the settings other projects used to get LSeg outputs and features.

Each preset fills the options a user did not give on the command line (explicit options win). The
values follow the upstream files named in ``source``; docs/cli.md explains each one. Imports no
torch, so the command line can list the names cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One recipe: ``settings`` are command-line option names (``dest``) and their values."""

    name: str
    source: str  # the upstream file whose values this follows
    summary: str
    settings: MappingProxyType[str, Any]


def _preset(name: str, source: str, summary: str, **settings: Any) -> Preset:
    return Preset(name, source, summary, MappingProxyType(settings))


PRESETS: MappingProxyType[str, Preset] = MappingProxyType(
    {
        p.name: p
        for p in [
            _preset(
                "official",
                "isl-org/lang-seg test_lseg.py + additional_utils/models.py (LSeg_MultiEvalModule)",
                "the official evaluator: long side 520 x scales 0.5-1.75, 480 windows (stride 320), flip",
                multi_scale=True,
                scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75),  # inference.OFFICIAL_SCALES (no torch import here)
                flip=True,
                base_size=520,
                crop_size=480,
                max_side=0,
            ),
            _preset(
                "openscene",
                "pengsongyou/lseg_feature_extraction fusion_scannet.py (base_size = crop_size = 640 for "
                "320x240 frames, scales [1], flip=True) + additional_utils/models.py",
                "image upscaled 2x (long side twice its own) in one padded window, so the half-resolution "
                "head gives one feature per input pixel; single scale with flip",
                multi_scale=True,
                scales=(2.0,),
                flip=True,
                base_size=0,  # the image's own long side: scale 2 doubles it
                crop_size=640,
                max_side=0,
                resolution="full",
            ),
            _preset(
                "vlmaps",
                "vlmaps/vlmaps vlmaps/utils/lseg_utils.py get_lseg_feat (crop_size=480, base_size=520)",
                "long side resized to 520, 480 windows (stride 320), one scale, no flip",
                multi_scale=True,
                scales=(1.0,),
                flip=False,
                base_size=520,
                crop_size=480,
                max_side=0,
                resolution="full",
            ),
            _preset(
                "feature-3dgs",
                "ShijieZhou-UCLA/feature-3dgs encoders/lseg_encoder/encode_images.py (scales [0.75, 1.0, "
                "1.25, 1.75], flip=True, --base-size 520, --crop-size 480; frames wider than 480 resized "
                "to 480x360 first)",
                "Feature-3DGS / distilled feature fields: scales 0.75, 1, 1.25, 1.75 of a 520 base, 480 "
                "windows, flip; frames shrunk to a 480 long side first",
                multi_scale=True,
                scales=(0.75, 1.0, 1.25, 1.75),
                flip=True,
                base_size=520,
                crop_size=480,
                max_side=480,
            ),
        ]
    }
)


_MULTI_SCALE_ONLY = frozenset({"multi_scale", "scales", "base_size", "crop_size"})


def apply_preset(name: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The options of preset ``name`` that ``given`` leaves unset (``None``), merged into a copy of
    ``given``; ``given`` values always win. ``--sliding-window`` given explicitly replaces a preset's
    multi-scale protocol. Unknown names raise ``KeyError``."""
    out = dict(given)
    if name is None:
        return out
    windows_given = bool(out.get("sliding_window"))
    for key, value in PRESETS[name].settings.items():
        if windows_given and key in _MULTI_SCALE_ONLY:
            continue
        if key == "multi_scale":
            out[key] = out.get(key) or value
            continue
        if key not in out:  # an option this command does not have (segment has no --resolution)
            continue
        if out[key] is None:
            out[key] = value
    return out
