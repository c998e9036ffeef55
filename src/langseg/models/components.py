"""Pretrained components loaded into a network's parts: an OpenAI CLIP text tower, a timm ViT trunk."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from .lseg import LSeg
from .state_dict import CheckpointError, read_safetensors, read_torch_file, strip_prefix, unwrap_state_dict


def load_clip_text_weights(model: LSeg, path: str | Path) -> None:
    """Load an OpenAI CLIP file (TorchScript archive or state dict) into the text tower.

    Only the text part is required; the image tower is loaded too if the model keeps one.
    """
    path = Path(path)
    sd = strip_prefix(_read_clip_file(path), "module.")
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
    sd = (
        read_safetensors(path)
        if path.suffix == ".safetensors"
        else unwrap_state_dict(read_torch_file(path), path)
    )
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
