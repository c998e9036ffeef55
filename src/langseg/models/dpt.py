"""DPT-style decoder: project the four trunk maps to a common width and fuse them top-down.

``[(B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16), (B, C4, H/32, W/32)] -> (B, F, H/2, W/2)``
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution, using the running statistics (eval)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C,)
    weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight, bias.to(conv.weight.dtype)


class ResidualConvUnit(nn.Module):
    """``x + BN(conv(ReLU(BN(conv(ReLU(x))))))``, shape preserving."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(features)
        self.bn2 = nn.BatchNorm2d(features)
        self.fold_bn = True  # eval fast path: BatchNorm folded into the convolutions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_bn and not self.training:
            w1, b1 = fold_batchnorm(self.conv1, self.bn1)
            w2, b2 = fold_batchnorm(self.conv2, self.bn2)
            out = F.relu_(F.conv2d(F.relu(x), w1, b1, padding=1))
            out = F.conv2d(out, w2, b2, padding=1)
            return out.add_(x)  # out is our own buffer
        out = self.bn1(self.conv1(F.relu(x)))
        out = self.bn2(self.conv2(F.relu(out)))
        return out + x


class FusionBlock(nn.Module):
    """Fuse a coarser path with a skip map, upsample x2 (align_corners=True), then a 1x1 conv."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.rcu1 = ResidualConvUnit(features)  # applied to the skip input
        self.rcu2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, F, h, w)[, (B, F, h, w)] -> (B, F, 2h, 2w)``: residual units, upsample x2, 1x1 conv."""
        if skip is not None:
            x = x + self.rcu1(skip)
        return self.out_conv(_upsample2(self.rcu2(x)))


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class DPTNeck(nn.Module):
    """Four 3x3 projections to ``features`` channels and four fusion blocks."""

    def __init__(self, in_channels: tuple[int, int, int, int], features: int) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.proj = nn.ModuleList(
            nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False) for c in in_channels
        )
        # fusion[3] takes the stride-32 map alone, so its rcu1 is never run (kept for the official keys)
        self.fusion = nn.ModuleList(FusionBlock(features) for _ in range(4))

    def set_fold_bn(self, enabled: bool) -> None:
        """Fold the BatchNorms into the convolutions in eval mode (fast) or run them (reference)."""
        for block in self.fusion:
            block.rcu1.fold_bn = block.rcu2.fold_bn = enabled

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Four maps (strides 4..32) -> ``(B, F, H/2, W/2)``."""
        l1, l2, l3, l4 = (proj(f) for proj, f in zip(self.proj, feats))
        path = self.fusion[3](l4)  # stride 32 -> 16
        path = self.fusion[2](path, l3)  # -> 8
        path = self.fusion[1](path, l2)  # -> 4
        return self.fusion[0](path, l1)  # -> 2


class SpatialBlock(nn.Module):
    """LSeg's optional spatial regularization on the logits, shared over labels.

    One 3x3 conv applied to every label channel on its own, ``(B, K, h, w) -> (B, K, h, w)``.
    ``bottleneck`` adds the per-pixel max over labels.
    """

    def __init__(self, kind: str, activation: str, depth: int) -> None:
        super().__init__()
        if kind not in ("bottleneck", "depthwise"):
            raise ValueError(f"unknown spatial block {kind!r}; expected 'bottleneck' or 'depthwise'")
        self.kind = kind
        self.depth = depth
        self.conv = nn.Conv2d(1, 1, kernel_size=3, padding=1)
        acts = {"relu": nn.ReLU, "lrelu": nn.LeakyReLU, "tanh": nn.Tanh}
        if activation not in acts:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(acts)}")
        self.act = acts[activation]()

    def _apply_once(self, x: torch.Tensor, activate: bool) -> torch.Tensor:
        B, K, h, w = x.shape
        y = self.conv(x.reshape(B * K, 1, h, w)).reshape(B, K, h, w)  # each label channel alone
        if self.kind == "bottleneck":
            y = y + x.max(dim=1, keepdim=True).values
        return self.act(y) if activate else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.depth - 1):
            x = self._apply_once(x, activate=True)
        return self._apply_once(x, activate=False)
