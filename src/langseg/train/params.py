"""Parameter groups of the official recipe and freezing of parameters that never get a gradient."""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ..models import LSeg
from .config import OptimConfig

log = logging.getLogger(__name__)

ENCODER = ("image_encoder.",)  # official `pretrained`: trained at lr
DECODER = ("neck.", "pixel_embed.", "spatial_block.")  # official `scratch`: trained at decoder_lr_mult x lr


def freeze_unused(model: LSeg, side: int = 64) -> list[str]:
    """Freeze trainable parameters that do not influence the logits; returns their names.

    A probe forward/backward (eval mode, so BatchNorm statistics stay untouched) finds them: timm's
    classifier head and final norm, the never-run first unit of the coarsest fusion block, blocks
    after the last hooked one. The official run never updates them either; freezing lets DDP run
    without searching for unused parameters.
    """
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    device = model.pixel_embed.weight.device
    x = torch.zeros(1, 3, side, side, device=device)
    text = torch.nn.functional.normalize(torch.ones(2, model.config.embed_dim, device=device), dim=-1)
    text[1] = -text[1]
    model(x, text).sum().backward()
    frozen = []
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
            frozen.append(name)
        p.grad = None
    model.train(was_training)
    if frozen:
        log.info("frozen %d parameters that never receive gradients: %s", len(frozen), ", ".join(frozen[:6]))
    return frozen


def effective_lr(cfg: OptimConfig, batch_size: int) -> float:
    """``base_lr / lr_reference_batch * per-GPU batch`` (the official rule; GPUs and accumulation do not enter)."""
    return cfg.base_lr / cfg.lr_reference_batch * batch_size


def param_groups(model: nn.Module, lr: float, decoder_mult: float) -> list[dict]:
    """Image encoder at ``lr``, decoder at ``decoder_mult * lr``; frozen parameters (text tower) left out.

    Every trainable parameter must fall in one group (a new sub-module would otherwise go untrained).
    """
    enc, dec, other = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(ENCODER):
            enc.append(p)
        elif name.startswith(DECODER):
            dec.append(p)
        else:
            other.append(name)
    if other:
        raise ValueError(f"trainable parameters outside the encoder/decoder groups: {other[:8]}")
    groups = [
        {"params": enc, "lr": lr, "name": "encoder"},
        {"params": dec, "lr": lr * decoder_mult, "name": "decoder"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig, batch_size: int) -> torch.optim.Optimizer:
    groups = param_groups(model, effective_lr(cfg, batch_size), cfg.decoder_lr_mult)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=groups[0]["lr"],
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected 'sgd' or 'adamw'")
