"""langseg: LSeg (Language-driven Semantic Segmentation) as a library, a CLI and a web demo.

>>> import langseg
>>> model = langseg.load_model("lseg-demo-vitl16")          # or a path to a .ckpt / our folder
>>> predictor = langseg.LSegPredictor(model)
>>> result = predictor.predict("photo.jpg", ["cat", "grass", "other"])
>>> result.labels.shape                                      # (H, W) label indices
"""

from __future__ import annotations

from pathlib import Path

from .lazy import lazy_attributes

__version__ = "0.1.0"

ASSETS = Path(__file__).resolve().parent / "assets"  # bundled weights and examples

# Public names, imported on first use so that `import langseg` (and `langseg --help`) stays fast.
_LAZY = {
    "LangsegError": "errors",
    "REGISTRY": "hub",
    "DownloadError": "hub",
    "cache_dir": "hub",
    "fetch": "hub",
    "MultiScaleConfig": "inference",
    "ImageError": "images",
    "load_image": "images",
    "parse_labels": "labels",
    "CheckpointError": "models",
    "LabelError": "models",
    "LSeg": "models",
    "LSegConfig": "models",
    "build_lseg": "models",
    "create_model": "models",
    "list_models": "models",
    "load_checkpoint": "models",
    "save_pretrained": "models",
    "LSegPredictor": "predictor",
    "Prediction": "predictor",
    "resolve_device": "predictor",
    "TOY_WEIGHTS": "weights",
    "bundled_weights": "weights",
    "load_model": "weights",
    "resolve_weights": "weights",
}


__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "bundled_weights",
    "resolve_weights",
    "REGISTRY",
    "TOY_WEIGHTS",
    "CheckpointError",
    "DownloadError",
    "ImageError",
    "LSeg",
    "LSegConfig",
    "LSegPredictor",
    "LabelError",
    "LangsegError",
    "MultiScaleConfig",
    "Prediction",
    "build_lseg",
    "cache_dir",
    "create_model",
    "fetch",
    "list_models",
    "load_checkpoint",
    "load_image",
    "load_model",
    "parse_labels",
    "save_pretrained",
]
