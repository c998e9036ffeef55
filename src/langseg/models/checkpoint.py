"""The one door for weights: official lang-seg files, our own format, and pretrained components.

Everything is read on the CPU without executing pickled code (``torch.load(weights_only=True)`` or
safetensors). Loading is strict: missing, unexpected or mis-shaped keys raise :class:`CheckpointError`
with the key lists.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import LangsegError
from ..files import OutputExistsError, write_folder
from .build import CLIP_RN50X16_VISUAL, CLIP_VIT_B32_VISUAL, build_lseg, model_config
from .config import ClipVisualConfig, LSegConfig, ResNetConfig, TextConfig, ViTConfig
from .lseg import LSeg

log = logging.getLogger(__name__)

FORMAT = "langseg-v1"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"


class CheckpointError(LangsegError, RuntimeError):
    """A weights file that cannot be read or does not fit the network."""


# ----------------------------------------------------------------------------------------- reading
class _LightningCallbackKey:
    """Stands in for ``pytorch_lightning...ModelCheckpoint``, which Lightning < 1.5 used as a dict key.

    It is the only foreign global the official files need; it is mapped to this inert class.
    """


_ALLOWED_GLOBALS = [
    (_LightningCallbackKey, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
]


def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``; the Lightning 1.x callback class is the one extra allowed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to unpickle: {str(e).splitlines()[0]}. Only tensors and plain containers are "
            "read (weights_only=True); the file holds other objects."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch file (truncated or corrupt?): {e}") from None


def unwrap_state_dict(obj: Any, path: str | Path = "<weights>") -> dict[str, torch.Tensor]:
    """Take ``state_dict`` / ``model`` / ``module`` nesting off a loaded file."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found")
    return dict(obj)


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (a true prefix removal)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in sd.items()}


# ------------------------------------------------------------------------------ official key names
# One table read in both directions: (official prefix, our prefix, official index - our index).
# "{}" stands for a stage number; the first matching prefix wins, so specific entries come first.
_KEY_PREFIXES = [
    ("clip_pretrained.", "text_encoder.", 0),
    ("pretrained.model.", "image_encoder.vit.", 0),
    ("pretrained.act_postprocess{}.0.", "image_encoder.reassemble.{}.readout.", 1),
    ("pretrained.act_postprocess{}.3.", "image_encoder.reassemble.{}.proj.", 1),
    ("pretrained.act_postprocess{}.4.", "image_encoder.reassemble.{}.resample.", 1),
    ("pretrained.layer1.0.", "image_encoder.resnet.conv1.", 0),  # official Sequential(conv1, bn1, relu,
    ("pretrained.layer1.1.", "image_encoder.resnet.bn1.", 0),  # maxpool, layer1)
    ("pretrained.layer1.4.", "image_encoder.resnet.layer1.", 0),
    ("pretrained.layer{}.", "image_encoder.resnet.layer{}.", 0),
    ("scratch.layer{}_rn.", "neck.proj.{}.", 1),
    ("scratch.refinenet{}.", "neck.fusion.{}.", 1),
    ("scratch.head1.", "pixel_embed.", 0),
    ("scratch.head_block.depthwise.depthwise.", "spatial_block.conv.", 0),
]
_KEY_INFIXES = [(".resConfUnit{}.", ".rcu{}.", 0)]


def _template_regex(template: str, anchored: bool) -> re.Pattern:
    return re.compile(("^" if anchored else "") + re.escape(template).replace(r"\{\}", r"(\d+)"))


def _rename(key: str, to_official: bool) -> str:
    """Apply the first matching prefix rule and every infix rule in one direction."""
    for table, anchored in ((_KEY_PREFIXES, True), (_KEY_INFIXES, False)):
        for official, ours, offset in table:
            src, dst, shift = (ours, official, offset) if to_official else (official, ours, -offset)
            rx = _template_regex(src, anchored)
            new = rx.sub(
                lambda m, dst=dst, shift=shift: dst.format(*(int(g) + shift for g in m.groups())), key
            )
            if new != key:
                key = new
                if anchored:
                    break
    return key


def official_to_langseg(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Rename official lang-seg keys (with or without ``net.``) to ours."""
    return OrderedDict((_rename(k, to_official=False), v) for k, v in strip_prefix(sd, "net.").items())


def langseg_to_official(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Our key names -> official lang-seg names with the ``net.`` prefix (inverse of official_to_langseg)."""
    return OrderedDict(("net." + _rename(k, to_official=True), v) for k, v in sd.items())


def is_official(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("net.scratch.", "scratch.", "net.pretrained.", "pretrained.")) for k in sd)


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m[1] for k in sd if (m := rx.match(k))})


def infer_config(sd: Mapping[str, torch.Tensor], **overrides: Any) -> LSegConfig:
    """Infer the architecture from our key names and shapes (official files store no hyper-parameters)."""
    try:
        return _infer_config(sd, **overrides)
    except KeyError as e:
        raise CheckpointError(f"cannot tell the LSeg variant: key {e} is missing") from None


def _infer_config(sd: Mapping[str, torch.Tensor], **overrides: Any) -> LSegConfig:
    text_width = sd["text_encoder.token_embedding.weight"].shape[1]
    text = TextConfig(
        width=text_width,
        layers=_count(sd, r"text_encoder\.transformer\.resblocks\.(\d+)\."),
        heads=max(1, text_width // 64),
        context_length=sd["text_encoder.positional_embedding"].shape[0],
        vocab_size=sd["text_encoder.token_embedding.weight"].shape[0],
        embed_dim=sd["text_encoder.text_projection"].shape[1],
    )
    visual: ClipVisualConfig | None = None
    if "text_encoder.visual.conv1.weight" in sd and "text_encoder.visual.attnpool.c_proj.weight" not in sd:
        w = sd["text_encoder.visual.conv1.weight"]
        width, patch = w.shape[0], w.shape[-1]
        grid = int(round((sd["text_encoder.visual.positional_embedding"].shape[0] - 1) ** 0.5))
        layers = _count(sd, r"text_encoder\.visual\.transformer\.resblocks\.(\d+)\.")
        visual = ClipVisualConfig("vit", grid * patch, width, layers, width // 64, patch)
        if visual == CLIP_VIT_B32_VISUAL:
            visual = CLIP_VIT_B32_VISUAL
    elif "text_encoder.visual.attnpool.c_proj.weight" in sd:
        width = sd["text_encoder.visual.conv1.weight"].shape[0] * 2
        layers = tuple(_count(sd, rf"text_encoder\.visual\.layer{i}\.(\d+)\.") for i in range(1, 5))
        spacial = int(round((sd["text_encoder.visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5))
        visual = ClipVisualConfig("resnet", spacial * 32, width, layers, width * 32 // 64)
        if visual == CLIP_RN50X16_VISUAL:
            visual = CLIP_RN50X16_VISUAL

    features = sd["neck.proj.0.weight"].shape[0]
    reassemble = tuple(sd[f"neck.proj.{i}.weight"].shape[1] for i in range(4))
    arch_option = overrides.pop("arch_option", None)
    if "spatial_block.conv.weight" in sd and arch_option is None:
        raise CheckpointError(
            "the checkpoint has a spatial regularization block (scratch.head_block), whose kind cannot be read "
            "from the weights: pass arch_option=1 (bottleneck) or 2 (depthwise) and block_depth"
        )
    arch_option = arch_option or 0

    if "image_encoder.vit.pos_embed" in sd:
        pos = sd["image_encoder.vit.pos_embed"]
        dim = pos.shape[2]
        patch = sd["image_encoder.vit.patch_embed.proj.weight"].shape[-1]
        grid = int(round((pos.shape[1] - 1) ** 0.5))
        depth = _count(sd, r"image_encoder\.vit\.blocks\.(\d+)\.")
        step = depth // 4
        head = sd.get("image_encoder.vit.head.weight")
        vit = ViTConfig(
            patch_size=patch,
            embed_dim=dim,
            depth=depth,
            num_heads=max(1, dim // 64),
            mlp_ratio=sd["image_encoder.vit.blocks.0.mlp.fc1.weight"].shape[0] / dim,
            img_size=grid * patch,
            hooks=tuple(step * (i + 1) - 1 for i in range(4)),
            num_classes=0 if head is None else head.shape[0],
        )
        base = {
            (16, 1024, 512): "lseg_vitl16_384",
            (32, 768, 512): "lseg_vitb32_384",
            (16, 1024, 768): "lseg_rn50x16_vitl16_384",
        }.get((patch, dim, text.embed_dim))
        cfg = model_config(base) if base else model_config("lseg_tiny")
        cfg = _replace(cfg, vit=vit, resnet=None)
    elif "image_encoder.resnet.conv1.weight" in sd:
        layers = tuple(_count(sd, rf"image_encoder\.resnet\.layer{i}\.(\d+)\.") for i in range(1, 5))
        cfg = _replace(model_config("lseg_zs_rn101"), resnet=ResNetConfig(layers=layers))
    else:
        raise CheckpointError("cannot tell the image encoder: neither ViT nor ResNet keys are present")
    cfg = _replace(
        cfg,
        text=text,
        clip_visual=visual,
        features=features,
        reassemble_channels=reassemble,
        arch_option=arch_option,
    )
    return _replace(cfg, **overrides)


def _replace(cfg: LSegConfig, **changes: Any) -> LSegConfig:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


# ------------------------------------------------------------------------------------ strict load
def load_weights(model: LSeg, sd: Mapping[str, torch.Tensor], source: str = "<weights>") -> None:
    """Strictly load our-named weights, with a readable error listing the mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit the {model.config.name} network"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------------------------- public entry
def load_official_checkpoint(path: str | Path, **overrides: Any) -> LSeg:
    """Build and load a network from an official lang-seg Lightning ``.ckpt``."""
    sd = unwrap_state_dict(read_torch_file(path), path)
    if not is_official(sd):
        raise CheckpointError(f"{path}: not an official lang-seg checkpoint (no 'net.scratch.*' keys)")
    sd = official_to_langseg(sd)
    cfg = infer_config(sd, **overrides)
    model = build_lseg(cfg)
    load_weights(model, sd, str(path))
    return model.eval()


def save_pretrained(
    model: LSeg,
    out_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + the model card ``README.md`` as the folder
    ``out_dir``, whole or not at all; ``extra`` entries (``source``, ``train``, ...) go into ``config.json``.

    The folder is filled beside ``out_dir`` and renamed into place (see
    :func:`langseg.files.write_folder`). An existing non-empty ``out_dir`` raises unless
    ``overwrite``, and even then only a folder holding nothing but a saved model is replaced.
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
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
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
    except (OSError, json.JSONDecodeError) as e:
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
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config}: invalid model config: {e}") from None
    try:
        sd = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(
            f"{weights}: not a readable safetensors file (truncated or corrupt?): {e}"
        ) from None
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
    and ViT classifier head (recorded in the config, so the result loads strictly)."""
    from ..provenance import sha256_file

    model = load_official_checkpoint(src, **overrides)
    dropped: list[str] = []
    if drop_unused:
        model = drop_unused_parts(model)
        dropped = ["text_encoder.visual", "image_encoder.vit.head"]
    return save_pretrained(
        model,
        out_dir,
        dtype=dtype,
        extra={"source": str(Path(src).name), "source_sha256": sha256_file(src), "dropped": dropped},
        overwrite=overwrite,
    )


def drop_unused_parts(model: LSeg) -> LSeg:
    """A copy of ``model`` without the CLIP image tower and the ViT classifier head (outputs unchanged)."""
    cfg = model.config
    vit = _replace_vit(cfg.vit, num_classes=0) if cfg.vit is not None else None
    slim = build_lseg(_replace(cfg, clip_visual=None, vit=vit))
    sd = {k: v for k, v in model.state_dict().items() if k in slim.state_dict()}
    load_weights(slim, sd)
    return slim.eval()


def _replace_vit(vit: ViTConfig, **changes: Any) -> ViTConfig:
    import dataclasses

    return dataclasses.replace(vit, **changes)


# ------------------------------------------------------------------------ pretrained components
def load_clip_text_weights(model: LSeg, path: str | Path) -> None:
    """Load an OpenAI CLIP file (TorchScript archive or state dict) into the text tower.

    Only the text part is required; the image tower is loaded too if the model keeps one.
    """
    path = Path(path)
    sd = _read_clip_file(path)
    sd = strip_prefix(sd, "module.")
    own = model.text_encoder.state_dict()
    picked = {k: v for k, v in sd.items() if k in own}
    missing = [k for k in own if k not in picked]
    if missing:
        raise CheckpointError(f"{path}: not a CLIP file for this text tower; missing keys: {missing[:8]}")
    shapes = [k for k in own if picked[k].shape != own[k].shape]
    if shapes:
        raise CheckpointError(f"{path}: CLIP shapes do not fit the text tower: {shapes[:8]}")
    model.text_encoder.load_state_dict(picked, strict=True)
    model.clear_text_cache()


def _read_clip_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            scripted = any(n.endswith("constants.pkl") for n in z.namelist())
        if scripted:  # a TorchScript archive (OpenAI's release format): read its tensors only
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except RuntimeError as e:
                raise CheckpointError(f"{path}: unreadable TorchScript archive: {e}") from None
            return {k: v.detach() for k, v in module.state_dict().items()}
    return unwrap_state_dict(read_torch_file(path), path)


def load_timm_vit_weights(model: LSeg, path: str | Path) -> None:
    """Load a timm ViT checkpoint (``.pth``/``.bin``/``.safetensors``) into the image trunk.

    The position-embedding grid is resized (LSeg's bilinear rule) when the file's differs.
    """
    from .vit import resize_pos_embed

    if model.config.vit is None:
        raise CheckpointError("the model has a ResNet image encoder; a timm ViT file does not apply")
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            sd = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None
    else:
        sd = unwrap_state_dict(read_torch_file(path), path)
    sd = strip_prefix(sd, "module.")
    vit = model.image_encoder.vit
    own = vit.state_dict()
    if "pos_embed" in sd and sd["pos_embed"].shape != own["pos_embed"].shape:
        g = int(round((own["pos_embed"].shape[1] - 1) ** 0.5))
        sd["pos_embed"] = resize_pos_embed(sd["pos_embed"].float(), (g, g))
    if "head.weight" in sd and (
        "head.weight" not in own or sd["head.weight"].shape != own["head.weight"].shape
    ):
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        sd.update({k: v for k, v in own.items() if k.startswith("head.")})
    missing = [k for k in own if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: not a timm ViT file for this trunk; missing keys: {missing[:8]}")
    bad = [k for k in own if sd[k].shape != own[k].shape]
    if bad:
        raise CheckpointError(
            f"{path}: ViT shapes do not fit: "
            + ", ".join(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:8])
        )
    vit.load_state_dict({k: sd[k] for k in own}, strict=True)
