"""The one door for weights: our saved folder format, official lang-seg files, and conversion.

Everything is read on the CPU without executing pickled code (``torch.load(weights_only=True)`` or
safetensors). Loading is strict: missing, unexpected or mis-shaped keys raise :class:`CheckpointError`
with the key lists. Reading files and strict loading live in :mod:`.state_dict`, the official key
names and architecture inference in :mod:`.official`, pretrained components in :mod:`.components`;
their public names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..files import OutputExistsError, write_folder
from ..model_format import CARD_NAME, CONFIG_NAME, FORMAT, WEIGHTS_NAME
from .build import build_lseg, check_variant
from .components import load_clip_text_weights, load_timm_vit_weights
from .config import LSegConfig
from .lseg import LSeg
from .official import (
    infer_config,
    is_official,
    langseg_to_official,
    load_official_checkpoint,
    official_to_langseg,
    read_official,
)
from .state_dict import (
    CheckpointError,
    load_weights,
    read_safetensors,
    read_torch_file,
    strip_prefix,
    unwrap_state_dict,
)

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "FORMAT",
    "WEIGHTS_NAME",
    "CheckpointError",
    "convert_official",
    "drop_unused_parts",
    "infer_config",
    "is_official",
    "langseg_to_official",
    "load_checkpoint",
    "load_clip_text_weights",
    "load_official_checkpoint",
    "load_pretrained",
    "load_timm_vit_weights",
    "load_weights",
    "official_to_langseg",
    "read_config",
    "read_torch_file",
    "save_pretrained",
    "strip_prefix",
    "unwrap_state_dict",
]


def save_pretrained(
    model: LSeg,
    out_dir: str | Path,
    *,
    dtype: torch.dtype | Mapping[str, torch.dtype] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + the model card ``README.md`` as the folder
    ``out_dir``, whole or not at all; ``extra`` entries (``source``, ``train``, ...) go into ``config.json``.

    The folder is filled beside ``out_dir`` and renamed into place (see
    :func:`langseg.files.write_folder`). An existing non-empty ``out_dir`` raises unless
    ``overwrite``, and even then only a folder holding nothing but a saved model is replaced.
    ``dtype``: one dtype for every floating-point tensor, or a dtype per key (keys not in the mapping
    keep the model's dtype), or None for the model's dtypes.
    """
    from ..model_card import model_card

    out_dir = Path(out_dir)
    if overwrite and out_dir.is_dir():
        others = sorted(
            p.name
            for p in out_dir.iterdir()
            if p.name not in (WEIGHTS_NAME, CONFIG_NAME) and not _is_our_card(p)
        )
        if others:
            raise OutputExistsError(
                f"{out_dir} holds other files than a saved model ({', '.join(others[:3])}); "
                "give a new or empty folder"
            )
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        want = dtype.get(k) if isinstance(dtype, Mapping) else dtype
        if want is not None and v.is_floating_point():
            v = v.to(want)
        sd[k] = v.contiguous()
    meta = {"format": FORMAT, "model": model.config.to_dict()}
    if extra:
        meta.update(extra)

    def fill(folder: Path) -> None:
        save_file(sd, str(folder / WEIGHTS_NAME), metadata={"format": FORMAT})
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (folder / CARD_NAME).write_text(model_card(meta), encoding="utf-8")

    return write_folder(out_dir, fill, overwrite=overwrite)


def _is_our_card(path: Path) -> bool:
    """A ``README.md`` that :func:`save_pretrained` wrote (a user's own README is never replaced)."""
    return (
        path.name == CARD_NAME
        and path.is_file()
        and "\nlibrary_name: langseg\n" in path.read_text(errors="replace")[:400]
    )


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise CheckpointError(f"{path}: not a readable config.json: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(
            f"{path}: not a langseg config (expected format {FORMAT!r} and a 'model' entry)"
        )
    return meta


def load_pretrained(path: str | Path) -> LSeg:
    """Load our format: a directory with ``model.safetensors`` and ``config.json`` (or either file)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    if path.is_file() and path.suffix == ".safetensors":
        weights = path
    for f, what in ((weights, "weights"), (config, "config")):
        if not f.is_file():
            raise CheckpointError(f"{folder}: {what} file {f.name} is missing")
    meta = read_config(config)
    try:
        cfg = LSegConfig.from_dict(meta["model"])
        check_variant(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config}: invalid model config: {e}") from None
    sd = read_safetensors(weights)
    model = build_lseg(cfg)
    load_weights(model, sd, str(weights))
    model.meta = meta  # where the weights came from, for records
    return model.eval()


def load_checkpoint(path: str | Path, **overrides: Any) -> LSeg:
    """Load any weights file we understand: our format (dir/safetensors) or an official ``.ckpt``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir() or path.suffix in (".safetensors", ".json"):
        if overrides:
            raise CheckpointError(f"{path}: overrides {sorted(overrides)} only apply to official checkpoints")
        return load_pretrained(path)
    return load_official_checkpoint(path, **overrides)


def convert_official(
    src: str | Path,
    out_dir: str | Path,
    *,
    drop_unused: bool = False,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> Path:
    """Convert an official checkpoint to our format; optionally drop the never-run CLIP image tower
    and ViT classifier head (recorded in the config, so the result loads strictly).

    ``dtype=None`` keeps each tensor's dtype as in the file (the official files hold their CLIP
    tensors in float16), so the result loads to the same network as the file itself.
    """
    from ..provenance import sha256_file

    model, file_dtypes = read_official(src, **overrides)
    dropped: list[str] = []
    if drop_unused:
        model = drop_unused_parts(model)
        dropped = ["text_encoder.visual", "image_encoder.vit.head"]
    return save_pretrained(
        model,
        out_dir,
        dtype=file_dtypes if dtype is None else dtype,
        extra={"source": str(Path(src).name), "source_sha256": sha256_file(src), "dropped": dropped},
        overwrite=overwrite,
    )


def drop_unused_parts(model: LSeg) -> LSeg:
    """A copy of ``model`` without the CLIP image tower and the ViT classifier head (outputs unchanged)."""
    cfg = model.config
    vit = dataclasses.replace(cfg.vit, num_classes=0) if cfg.vit is not None else None
    slim = build_lseg(dataclasses.replace(cfg, clip_visual=None, vit=vit))
    sd = {k: v for k, v in model.state_dict().items() if k in slim.state_dict()}
    load_weights(slim, sd)
    return slim.eval()
