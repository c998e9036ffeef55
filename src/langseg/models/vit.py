"""Image trunks: a timm ViT read at four blocks, and a torchvision ResNet read at four stages.

Both return four feature maps at strides 4, 8, 16 and 32 of the input. Intermediate features come
from running the blocks explicitly (no hooks).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch.utils.checkpoint import checkpoint
from torchvision.models.resnet import Bottleneck, ResNet

from .config import ResNetConfig, ViTConfig


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """Resize a square position-embedding grid to ``grid`` as LSeg does.

    ``(1, P + g*g, D) -> (1, P + gh*gw, D)``; bilinear, ``align_corners=False``, no antialiasing.
    Resizing to the native grid is an exact identity.
    """
    prefix, posemb = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    n = int(posemb.shape[1])  # the weights' grid: a constant, also when traced for ONNX export
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"position embedding has {n} grid tokens, not a square grid")
    gh, gw = grid
    if (gh, gw) != (g, g):
        posemb = posemb.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
        posemb = F.interpolate(posemb, size=(gh, gw), mode="bilinear", align_corners=False)
        posemb = posemb.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)  # (1, gh*gw, D), row-major
    return torch.cat([prefix, posemb], dim=1)


class Readout(nn.Module):
    """Merge the class token into the patch tokens: ``(B, 1+N, D) -> (B, N, D)``."""

    def __init__(self, dim: int, mode: str = "project") -> None:
        super().__init__()
        self.mode = mode
        # index 0 of the official Sequential(Linear, GELU) keeps the key `readout.0.*`
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU()) if mode == "project" else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cls, patches = tokens[:, :1], tokens[:, 1:]
        if self.mode == "ignore":
            return patches
        if self.mode == "add":
            return patches + cls
        return self.project(torch.cat([patches, cls.expand_as(patches)], dim=-1))  # (B, N, 2D) -> (B, N, D)


def _resample(channels: int, factor: float) -> nn.Module:
    """Bring a map from the patch stride to its target stride (``factor`` = patch / stride)."""
    if factor > 1:
        k = int(factor)
        return nn.ConvTranspose2d(channels, channels, kernel_size=k, stride=k)
    if factor == 1:
        return nn.Identity()
    if factor == 0.5:
        return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
    raise ValueError(f"cannot resample by {factor}; the patch size must be 16 or 32")


class Reassemble(nn.Module):
    """Tokens of one block to a feature map: readout, 1x1 conv, resample to the stage stride."""

    def __init__(self, dim: int, out_channels: int, factor: float, readout: str) -> None:
        super().__init__()
        self.readout = Readout(dim, readout)
        self.proj = nn.Conv2d(dim, out_channels, kernel_size=1)
        self.resample = _resample(out_channels, factor)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(B, 1+h*w, D) -> (B, C, h*f, w*f)``."""
        x = self.readout(tokens).transpose(1, 2)  # (B, D, h*w)
        x = x.unflatten(2, grid)  # (B, D, h, w), tokens are row-major
        return self.resample(self.proj(x))


class ViTEncoder(nn.Module):
    """timm ViT + reassemble: ``(B, 3, H, W) -> 4 maps at strides 4, 8, 16, 32``."""

    def __init__(self, cfg: ViTConfig, out_channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.vit = VisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            num_classes=cfg.num_classes,
            weight_init="skip",
        )
        # "skip" leaves the token parameters uninitialized; give them timm's initial values
        nn.init.trunc_normal_(self.vit.pos_embed, std=0.02)
        nn.init.normal_(self.vit.cls_token, std=1e-6)
        p = cfg.patch_size
        self.reassemble = nn.ModuleList(
            Reassemble(cfg.embed_dim, c, p / stride, cfg.readout)
            for c, stride in zip(out_channels, (4, 8, 16, 32))
        )
        self.grad_checkpointing = False  # recompute blocks in backward (training, large crops)

    def set_fused_attn(self, enabled: bool) -> None:
        """Use ``scaled_dot_product_attention`` (fast) or explicit softmax attention (reference)."""
        for blk in self.vit.blocks:
            blk.attn.fused_attn = enabled

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations (training)."""
        self.grad_checkpointing = enabled

    # --------------------------------------------------------------- forward
    def _run_block(self, blk: Block, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W) -> 4 x (B, 1+N, D)``: outputs of the hooked blocks (before the final norm)."""
        B, _, H, W = x.shape
        p = self.cfg.patch_size
        grid = (H // p, W // p)
        x = self.vit.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.vit.cls_token.expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1) + resize_pos_embed(self.vit.pos_embed, grid).to(x.dtype)
        x = self.vit.pos_drop(x)
        hooks = self.cfg.hooks
        outs = []
        for i, blk in enumerate(self.vit.blocks[: max(hooks) + 1]):
            x = self._run_block(blk, x)
            if i in hooks:
                outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, _, H, W = x.shape
        p = self.cfg.patch_size
        grid = (H // p, W // p)
        tokens = self.forward_intermediates(x)
        return [stage(t, grid) for stage, t in zip(self.reassemble, tokens)]


class ResNetEncoder(nn.Module):
    """torchvision bottleneck ResNet: ``(B, 3, H, W) -> 4 maps at strides 4, 8, 16, 32``."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.resnet = ResNet(Bottleneck, list(cfg.layers), width_per_group=cfg.width)
        self.resnet.fc = nn.Identity()  # classifier unused (and absent from the official files)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        c1 = r.layer1(x)
        c2 = r.layer2(c1)
        c3 = r.layer3(c2)
        c4 = r.layer4(c3)
        return [c1, c2, c3, c4]
