"""CLIP text tower (OpenAI layout and key names, built from open_clip blocks) and label encoding."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import QuickGELU, Transformer, VisionTransformer

from ..errors import LabelError
from ..labels import parse_templates
from .config import ClipVisualConfig, TextConfig


def build_clip_visual(cfg: ClipVisualConfig, embed_dim: int) -> nn.Module:
    """The CLIP image tower (never run by LSeg; present in the official files)."""
    if cfg.kind == "vit":
        return VisionTransformer(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            width=cfg.width,
            layers=int(cfg.layers),
            heads=cfg.heads,
            mlp_ratio=4.0,
            output_dim=embed_dim,
            act_layer=QuickGELU,
        )
    if cfg.kind == "resnet":
        return ModifiedResNet(
            layers=list(cfg.layers),
            output_dim=embed_dim,
            heads=cfg.heads,
            image_size=cfg.image_size,
            width=cfg.width,
        )
    raise ValueError(f"unknown CLIP visual tower {cfg.kind!r}; expected 'vit' or 'resnet'")


class LayerNormFp32(nn.LayerNorm):
    """OpenAI CLIP's LayerNorm: computed in float32, cast back to the input's dtype.

    The weights are used in float32 too, so a model cast as a whole (``load_model(dtype=...)``) works.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class CLIPTextEncoder(nn.Module):
    """OpenAI CLIP text transformer: ``(K, 77) token ids -> (K, D)`` text embeddings.

    Attribute names follow OpenAI's ``CLIP`` so official weights map one to one. ``logit_scale`` and
    ``visual`` exist only for strict loading of official files; LSeg uses neither. As in OpenAI's
    code, LayerNorms compute in fp32 and the attention runs sequence-first, so a copy made by
    :func:`clip_fp16` computes what the official CUDA text tower computes, bit for bit.
    """

    def __init__(self, cfg: TextConfig, visual: ClipVisualConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * 4.6052)  # CLIP's ln(100); unused by LSeg
        self.visual = build_clip_visual(visual, cfg.embed_dim) if visual is not None else None
        self.transformer = Transformer(
            cfg.width, cfg.layers, cfg.heads, act_layer=QuickGELU, norm_layer=LayerNormFp32, batch_first=False
        )
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.ln_final = LayerNormFp32(cfg.width)
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.tokenizer = SimpleTokenizer(context_length=cfg.context_length)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # CLIP's initialization (used for random-weight models; pretrained weights overwrite it)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.cfg.width**-0.5)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """``K prompts -> (K, context_length)`` int64 token ids; too-long prompts raise LabelError."""
        limit = self.cfg.context_length - 2  # start and end tokens
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise LabelError(f"label {p!r} is empty; every label needs at least one word")
            n = len(self.tokenizer.encode(p))
            if n > limit:
                raise LabelError(f"label {p!r} is {n} tokens long; the text encoder takes at most {limit}")
        return self.tokenizer(list(prompts))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(K, L) int64 -> (K, D)`` un-normalized embeddings at each prompt's end token."""
        dtype = self.transformer.resblocks[0].attn.in_proj_weight.dtype
        x = self.token_embedding(tokens).to(dtype) + self.positional_embedding.to(dtype)  # (K, L, W)
        x = self.transformer(x, attn_mask=self.attn_mask.to(dtype))
        x = self.ln_final(x)
        eot = tokens.argmax(dim=-1)  # the end token has the largest id
        x = x[torch.arange(x.shape[0], device=x.device), eot]  # (K, W)
        return x @ self.text_projection.to(x.dtype)


def clip_fp16(encoder: CLIPTextEncoder) -> CLIPTextEncoder:
    """A copy of the text tower with the dtypes OpenAI's ``clip.load(device="cuda")`` gives it.

    Linear and attention-projection weights and biases and ``text_projection`` become float16
    (OpenAI's ``convert_weights``); LayerNorms and embeddings stay float32 (they compute in fp32 and
    cast back). The forward then casts the embeddings to float16 and returns float16 features: the
    official text features exactly. The unused CLIP image tower is left out of the copy.
    """
    fp16 = copy.deepcopy(encoder, memo={id(encoder.visual): None})
    for module in fp16.modules():
        if isinstance(module, nn.Linear):
            module.half()
        elif isinstance(module, nn.MultiheadAttention):
            for name in (
                "in_proj_weight",
                "in_proj_bias",
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "bias_k",
                "bias_v",
            ):
                param = getattr(module, name, None)
                if param is not None:
                    param.data = param.data.half()
    fp16.text_projection.data = fp16.text_projection.data.half()
    return fp16.requires_grad_(False)


def expand_prompts(
    labels: Sequence[str | Sequence[str]], templates: Sequence[str] | None = None
) -> tuple[list[str], list[int]]:
    """Expand labels (each a name or a group of synonyms) with templates into prompts.

    Returns the flat prompt list and, per prompt, the index of the label it belongs to.
    """
    if isinstance(labels, str):
        raise LabelError("labels must be a list of names, not one string; split it first")
    if len(labels) == 0:
        raise LabelError("the label list is empty; give at least one label")
    templates = parse_templates(templates) or ["{}"]
    prompts, owner = [], []
    for i, label in enumerate(labels):
        names = [label] if isinstance(label, str) else list(label)
        if not names:
            raise LabelError(f"label {i} has no names")
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise LabelError(f"label {i} ({name!r}) is empty; every label needs at least one word")
            for t in templates:
                prompts.append(t.format(name.strip()))
                owner.append(i)
    return prompts, owner
