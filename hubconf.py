"""torch.hub entry points: ``torch.hub.load("<owner>/langseg", "lseg_demo_vitl16")`` or, from a checkout,
``torch.hub.load("path/to/langseg", "lseg_toy", source="local")``.

Every entry point takes ``pretrained`` (True: the weights, downloaded once into the langseg cache as
``langseg.load_model`` does; False: the same architecture with random weights), ``device`` and ``dtype``,
and returns an ``LSeg`` network in eval mode. The package is imported from the installed ``langseg`` or,
if that is missing, from this checkout's ``src/`` (its dependencies must be installed).
"""

from __future__ import annotations

import os
import sys

# public callables are entry points (torch.hub lists them): import nothing else callable at top level
dependencies = ["torch", "torchvision", "timm", "open_clip", "safetensors", "huggingface_hub"]

try:
    import langseg
except ImportError:  # a torch.hub download of the repository: the package lives in src/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    import langseg


def _load(name: str, pretrained: bool, device, dtype):
    """``name`` is a langseg weights name (``lseg-toy``, ``lseg-demo-vitl16``, ...)."""
    from langseg.hub import REGISTRY
    from langseg.models import LSegConfig, build_lseg, create_model
    from langseg.models.checkpoint import CONFIG_NAME, read_config
    from langseg.predictor import resolve_device
    from langseg.weights import bundled_weights

    if pretrained:
        return langseg.load_model(name, device=device, dtype=dtype)
    if name in REGISTRY:
        overrides = dict(REGISTRY[name].overrides)
        model = create_model(overrides.pop("name", "lseg_vitl16_384"), **overrides)
    else:  # a bundled model: its config is in the package
        model = build_lseg(LSegConfig.from_dict(read_config(bundled_weights()[name] / CONFIG_NAME)["model"]))
    model = model.eval().to(resolve_device(device))
    return model.to(dtype) if dtype is not None else model


def _entry(name: str, what: str):
    def entry(pretrained: bool = True, device="cpu", dtype=None):
        return _load(name, pretrained, device, dtype)

    entry.__name__ = name.replace("-", "_")
    entry.__doc__ = (
        f"{what} (langseg weights {name!r}).\n\n"
        "pretrained: load the weights (True) or random ones (False); device, dtype: where and in which\n"
        "dtype the network lives (e.g. 'cuda', torch.float16)."
    )
    return entry


lseg_toy = _entry("lseg-toy", "Tiny LSeg trained on the toy dataset (bundled, offline)")
lseg_demo_vitl16 = _entry(
    "lseg-demo-vitl16", "Official demo model: ViT-L/16 image encoder, CLIP ViT-B/32 text encoder, any labels"
)
lseg_fss_vitl16 = _entry("lseg-fss-vitl16", "Official zero-shot FSS-1000 model, ViT-L/16")
lseg_fss_rn101 = _entry("lseg-fss-rn101", "Official zero-shot FSS-1000 model, ResNet-101")
lseg_pascal_fold0_rn101 = _entry("lseg-pascal-fold0-rn101", "Official zero-shot PASCAL-5i fold 0, ResNet-101")
lseg_pascal_fold1_rn101 = _entry("lseg-pascal-fold1-rn101", "Official zero-shot PASCAL-5i fold 1, ResNet-101")
lseg_pascal_fold2_rn101 = _entry("lseg-pascal-fold2-rn101", "Official zero-shot PASCAL-5i fold 2, ResNet-101")
lseg_pascal_fold3_rn101 = _entry("lseg-pascal-fold3-rn101", "Official zero-shot PASCAL-5i fold 3, ResNet-101")
lseg_coco_fold0_rn101 = _entry("lseg-coco-fold0-rn101", "Official zero-shot COCO-20i fold 0, ResNet-101")
lseg_coco_fold1_rn101 = _entry("lseg-coco-fold1-rn101", "Official zero-shot COCO-20i fold 1, ResNet-101")
lseg_coco_fold2_rn101 = _entry("lseg-coco-fold2-rn101", "Official zero-shot COCO-20i fold 2, ResNet-101")
lseg_coco_fold3_rn101 = _entry("lseg-coco-fold3-rn101", "Official zero-shot COCO-20i fold 3, ResNet-101")
