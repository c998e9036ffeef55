"""LSeg: a dense image encoder whose pixel embeddings are compared with CLIP text embeddings."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LSegConfig
from .dpt import DPTNeck, SpatialBlock
from .text import CLIPTextEncoder, expand_prompts

Labels = Sequence[str | Sequence[str]]

_TEXT_CACHE_SIZE = 32  # label lists whose embeddings each model keeps


class LSeg(nn.Module):
    """Language-driven semantic segmentation network.

    ``image_encoder``: ``(B, 3, H, W) -> 4 maps at strides 4..32`` (ViT or ResNet trunk);
    ``neck``: DPT fusion to ``(B, F, H/2, W/2)``; ``pixel_embed``: 1x1 conv to the CLIP space;
    ``text_encoder``: frozen CLIP text tower. Logits are scaled cosine similarities.
    """

    def __init__(
        self,
        config: LSegConfig,
        image_encoder: nn.Module,
        neck: DPTNeck,
        text_encoder: CLIPTextEncoder,
        spatial_block: SpatialBlock | None = None,
    ) -> None:
        super().__init__()
        if neck.in_channels != tuple(config.reassemble_channels):
            raise ValueError(
                f"neck expects channels {neck.in_channels}, config says {tuple(config.reassemble_channels)}"
            )
        if text_encoder.cfg.embed_dim != config.embed_dim:
            raise ValueError(f"text embed dim {text_encoder.cfg.embed_dim} != config {config.embed_dim}")
        self.config = config
        self.image_encoder = image_encoder
        self.neck = neck
        self.pixel_embed = nn.Conv2d(config.features, config.embed_dim, kernel_size=1)
        self.spatial_block = spatial_block
        self.text_encoder = text_encoder
        self.text_encoder.requires_grad_(False)  # frozen: never trained, never receives gradients
        self.logit_scale = config.scale  # a constant, not a parameter (official: float32 1/0.07)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self._text_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    # ------------------------------------------------------------------ text
    @property
    def stride(self) -> int:
        """Input sides must be multiples of this."""
        return 32

    def encode_text(self, labels: Labels, templates: Sequence[str] | None = None) -> torch.Tensor:
        """``K labels -> (K, D)`` unit-norm float32 text embeddings, cached per label list.

        A label is a name or a sequence of synonyms; with several synonyms or ``templates`` (format
        strings with ``{}``) the normalized prompt embeddings of a label are averaged and re-normalized.
        """
        prompts, owner = expand_prompts(labels, templates)
        device = self.pixel_embed.weight.device
        key = (tuple(prompts), tuple(owner), device, self.text_encoder.token_embedding.weight.dtype)
        hit = self._text_cache.get(key)
        if hit is not None:
            self._text_cache.move_to_end(key)
            return hit
        tokens = self.text_encoder.tokenize(prompts).to(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            emb = F.normalize(self.text_encoder(tokens).float(), dim=-1)  # (P, D)
        if len(prompts) != len(labels):  # ensemble synonyms/templates per label
            index = torch.tensor(owner, device=device)
            summed = torch.zeros(len(labels), emb.shape[1], device=device).index_add_(0, index, emb)
            emb = F.normalize(summed, dim=-1)
        self._text_cache[key] = emb
        if len(self._text_cache) > _TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return emb

    def clear_text_cache(self) -> None:
        self._text_cache.clear()

    def _apply(self, fn, recurse=True):  # .to(), .half(), .cuda() invalidate cached embeddings
        self.clear_text_cache()
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.clear_text_cache()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ----------------------------------------------------------------- image
    def check_input(self, images: torch.Tensor) -> None:
        if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"expected normalized images of shape (B, 3, H, W), got {shape}")
        H, W = images.shape[-2:]
        if H % self.stride or W % self.stride or H == 0 or W == 0:
            raise ValueError(
                f"image size {H}x{W} is not a multiple of {self.stride}; pad it (LSegPredictor does) "
                f"or resize to e.g. {max(32, round(H / 32) * 32)}x{max(32, round(W / 32) * 32)}"
            )

    def forward_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, D, H/2, W/2)`` pixel embeddings, not normalized."""
        self.check_input(images)
        feats = self.image_encoder(images)
        return self.pixel_embed(self.neck(feats))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, D, H/2, W/2)`` unit-norm per-pixel embeddings (normalized images in)."""
        return F.normalize(self.forward_embeddings(images).float(), dim=1)

    # ---------------------------------------------------------------- logits
    def text_features(self, labels: Labels | torch.Tensor) -> torch.Tensor:
        """Label names -> ``(K, D)``; a ``(K, D)`` or ``(B, K, D)`` tensor passes through."""
        if torch.is_tensor(labels):
            if labels.ndim not in (2, 3) or labels.shape[-1] != self.config.embed_dim:
                raise ValueError(
                    f"text features must be (K, {self.config.embed_dim}) or (B, K, {self.config.embed_dim}), "
                    f"got {tuple(labels.shape)}"
                )
            return labels
        return self.encode_text(labels)

    def logits_lowres(self, pixel_embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` unit-norm pixels, ``(K, D)`` or ``(B, K, D)`` unit-norm text -> ``(B, K, h, w)``."""
        text = text.to(pixel_embeddings.dtype)
        if text.ndim == 2:
            logits = torch.einsum("bdhw,kd->bkhw", pixel_embeddings * self.logit_scale, text)
        else:
            logits = torch.einsum("bdhw,bkd->bkhw", pixel_embeddings * self.logit_scale, text)
        logits = logits.float()
        if self.spatial_block is not None:
            logits = self.spatial_block(logits)
        return logits

    def forward(self, images: torch.Tensor, labels: Labels | torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalized images and K labels -> ``(B, K, H, W)`` float32 logits.

        ``labels`` is a list of names (or synonym groups), or precomputed unit-norm text features
        ``(K, D)`` shared by the batch or ``(B, K, D)`` per image (the zero-shot protocol).
        """
        text = self.text_features(labels)
        if text.ndim == 3 and text.shape[0] != images.shape[0]:
            raise ValueError(f"{text.shape[0]} per-image label sets for {images.shape[0]} images")
        pixels = F.normalize(self.forward_embeddings(images).float(), dim=1)  # (B, D, H/2, W/2)
        logits = self.logits_lowres(pixels, text.float())
        return F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)
