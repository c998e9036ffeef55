"""LSeg: a dense image encoder whose pixel embeddings are compared with CLIP text embeddings."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LSegConfig
from .dpt import DPTNeck, SpatialBlock
from .text import CLIPTextEncoder, clip_fp16, expand_prompts

Labels = Sequence[str | Sequence[str]]

_TEXT_CACHE_SIZE = 32  # label lists whose embeddings each model keeps
NUMERICS = ("fp32", "official")  # see LSeg.set_numerics


@dataclass
class FastPaths:
    """Inference fast paths of :class:`LSeg`; all on by default, all off in :meth:`reference`.

    Each computes the same function as the official op order, rearranged; outputs differ by float
    rounding only (checked in tests/test_fast_paths.py). Each earned its place in the ablation of
    docs/performance.md (>= 3 % of a CPU forward, or a clear GPU reason).
    """

    fused_attn: bool = True  # scaled_dot_product_attention instead of explicit softmax attention
    fold_bn: bool = True  # eval: decoder BatchNorms folded into the convolutions

    @classmethod
    def reference(cls) -> FastPaths:
        """The official op order (explicit softmax attention, BatchNorm run unfolded)."""
        return cls(**{f.name: False for f in dataclasses.fields(cls)})


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
        self._text_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._text_lock = threading.Lock()  # the cache is shared by the threads of a server
        self.numerics = "fp32"
        self._fp16_text: list[CLIPTextEncoder] = []  # the official-numerics text tower, made on demand
        self.fast_paths = FastPaths()
        self.set_fast_paths(self.fast_paths)

    # ------------------------------------------------------------ fast paths
    def set_fast_paths(self, paths: FastPaths | None = None, **flags: bool) -> FastPaths:
        """Select inference fast paths: a :class:`FastPaths`, and/or single flags to change.

        ``model.set_fast_paths(FastPaths.reference())`` runs the official op order;
        ``model.set_fast_paths(fused_attn=False)`` turns one path off. Returns the paths now in force.
        """
        base = paths if paths is not None else self.fast_paths
        try:
            paths = dataclasses.replace(base, **flags)
        except TypeError:
            names = [f.name for f in dataclasses.fields(FastPaths)]
            raise ValueError(f"unknown fast path in {sorted(flags)}; expected some of {names}") from None
        self.fast_paths = paths
        if hasattr(self.image_encoder, "set_fused_attn"):  # the ViT trunk; ResNet has none
            self.image_encoder.set_fused_attn(paths.fused_attn)
        self.neck.set_fold_bn(paths.fold_bn)
        return paths

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the ViT blocks during backward instead of storing activations (large crops)."""
        if not hasattr(self.image_encoder, "set_grad_checkpointing"):
            raise ValueError(f"gradient checkpointing needs a ViT trunk; {self.config.name} has a ResNet")
        self.image_encoder.set_grad_checkpointing(enabled)

    def set_numerics(self, numerics: str) -> None:
        """``"fp32"`` (default): text embeddings and similarity in float32.

        ``"official"``: the numerics of the official CUDA code, for exact reproduction. The CLIP text
        tower runs in float16 as OpenAI's loader leaves it (its features equal the official ones bit
        for bit), text features are normalized in float16, and the similarity is the official
        ``(scale * e.half()) @ t.T`` in float16. The image network is unchanged (the official code runs
        it in float32). Logits then lie within one float16 step of the official ones instead of
        up to ~4e-3 (logits within +-2) to 1.4e-2 (logits near +-14.3) away; the text features it
        returns are float16.
        """
        if numerics not in NUMERICS:
            raise ValueError(f"unknown numerics {numerics!r}; expected one of {NUMERICS}")
        self.numerics = numerics

    def _official_text_tower(self) -> CLIPTextEncoder:
        if not self._fp16_text:
            self._fp16_text.append(clip_fp16(self.text_encoder))
        return self._fp16_text[0]

    def _clear_derived(self) -> None:
        self.clear_text_cache()
        self._fp16_text.clear()

    # ------------------------------------------------------------------ text
    @property
    def stride(self) -> int:
        """Input sides must be multiples of this."""
        return 32

    def encode_text(self, labels: Labels, templates: Sequence[str] | None = None) -> torch.Tensor:
        """``K labels -> (K, D)`` unit-norm float32 text embeddings, cached per label list.

        A label is a name or a sequence of synonyms; with several synonyms or ``templates`` (format
        strings with ``{}``) the normalized prompt embeddings of a label are averaged and re-normalized.
        With ``set_numerics("official")`` they are float16, computed as the official code does.
        """
        prompts, owner = expand_prompts(labels, templates)
        device = self.pixel_embed.weight.device
        key = (
            tuple(prompts),
            tuple(owner),
            device,
            self.text_encoder.token_embedding.weight.dtype,
            self.numerics,
        )
        with self._text_lock:
            hit = self._text_cache.get(key)
            if hit is not None:
                self._text_cache.move_to_end(key)
                return hit
        tokens = self.text_encoder.tokenize(prompts).to(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            if self.numerics == "official":
                raw = self._official_text_tower()(tokens)  # (P, D) float16
                emb = raw / raw.norm(dim=-1, keepdim=True)  # in float16, no epsilon, as the official code
            else:
                emb = F.normalize(self.text_encoder(tokens).float(), dim=-1)  # (P, D)
        if len(prompts) != len(labels):  # ensemble synonyms/templates per label
            index = torch.tensor(owner, device=device)
            summed = torch.zeros(len(labels), emb.shape[1], device=device).index_add_(0, index, emb.float())
            emb = F.normalize(summed, dim=-1).to(emb.dtype)
        with self._text_lock:  # two threads may both have encoded this list: either result is right
            self._text_cache[key] = emb
            if len(self._text_cache) > _TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return emb

    def clear_text_cache(self) -> None:
        with self._text_lock:
            self._text_cache.clear()

    def __getstate__(self) -> dict:  # pickling/deepcopy (DDP spawn, checkpoints of whole modules)
        state = self.__dict__.copy()
        state.pop("_text_lock")  # locks cannot be pickled
        state["_text_cache"] = OrderedDict()  # derived: recomputed on demand
        state["_fp16_text"] = []
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._text_lock = threading.Lock()

    def _apply(self, fn, recurse=True):  # .to(), .half(), .cuda() invalidate cached embeddings
        self._clear_derived()
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._clear_derived()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload these weights with a model card to the Hugging Face Hub; returns the commit URL.

        Keyword arguments as :func:`langseg.hf_hub.push_to_hub` (``revision``, ``private``, ``token``,
        ``commit_message``, ``eval_record``, ``license``).
        """
        from ..hf_hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

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
        feats = self.image_encoder(images.to(self.pixel_embed.weight.dtype))  # follow the weights' dtype
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
        if self.numerics == "official":
            return self._regularize(self._official_similarity(pixel_embeddings, text))
        logits = _similarity(pixel_embeddings * self.logit_scale, text.to(pixel_embeddings.dtype))
        return self._regularize(logits.float())

    def _official_similarity(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The official op order and dtypes: ``(scale * e.half()) @ t.T`` on ``(B*h*w, D)`` rows, in float16."""
        B, D, h, w = pixels.shape
        with torch.autocast(pixels.device.type, enabled=False):
            scale = torch.tensor(self.logit_scale, dtype=torch.float32, device=pixels.device)  # 0-dim fp32
            rows = pixels.float().permute(0, 2, 3, 1).reshape(B, h * w, D)
            text = text.half()
            if text.ndim == 2:  # one label set: one (B*h*w, D) @ (D, K) product
                out = (scale * rows.reshape(B * h * w, D).half()) @ text.t()
            else:  # per-image label sets (zero-shot), one product per image
                out = torch.stack([(scale * rows[i].half()) @ text[i].t() for i in range(B)])
            return out.float().reshape(B, h, w, -1).permute(0, 3, 1, 2)

    def _regularize(self, logits: torch.Tensor) -> torch.Tensor:
        return self.spatial_block(logits) if self.spatial_block is not None else logits

    def forward(self, images: torch.Tensor, labels: Labels | torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalized images and K labels -> ``(B, K, H, W)`` float32 logits.

        ``labels`` is a list of names (or synonym groups), or precomputed unit-norm text features
        ``(K, D)`` shared by the batch or ``(B, K, D)`` per image (the zero-shot protocol).
        """
        text = self.text_features(labels)
        if text.ndim == 3 and text.shape[0] != images.shape[0]:
            raise ValueError(f"{text.shape[0]} per-image label sets for {images.shape[0]} images")
        return self.logits_from_embeddings(self.forward_embeddings(images), text)

    def logits_from_embeddings(self, embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` un-normalized pixel embeddings, ``(K, D)``/``(B, K, D)`` unit-norm text -> ``(B, K, 2h, 2w)``."""
        emb = embeddings.float()
        if self.numerics == "official":
            logits = self.logits_lowres(emb / emb.norm(dim=1, keepdim=True), text)  # no epsilon, as official
        else:
            logits = self.logits_lowres(F.normalize(emb, dim=1), text.float())
        return F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)


def _similarity(pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` and ``(K, D)`` or ``(B, K, D)`` -> ``(B, K, h, w)`` dot products."""
    if text.ndim == 2:
        return torch.einsum("bdhw,kd->bkhw", pixels, text)
    return torch.einsum("bdhw,bkd->bkhw", pixels, text)
