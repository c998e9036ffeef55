"""langseg: LSeg (Language-driven Semantic Segmentation) as a library, a CLI and a web demo.

>>> import langseg
>>> model = langseg.load_model("lseg-demo-vitl16")          # or a path to a .ckpt / our folder
>>> predictor = langseg.LSegPredictor(model)
>>> result = predictor.predict("photo.jpg", ["cat", "grass", "other"])
>>> result.labels.shape                                      # (H, W) label indices
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

TOY_WEIGHTS = "lseg-toy"  # the bundled offline default: a tiny model trained on the toy dataset
ASSETS = Path(__file__).resolve().parent / "assets"

# Public names, imported on first use so that `import langseg` (and `langseg --help`) stays fast.
_LAZY = {
    "LangsegError": "errors",
    "REGISTRY": "hub",
    "DownloadError": "hub",
    "cache_dir": "hub",
    "fetch": "hub",
    "MultiScaleConfig": "inference",
    "ImageError": "io",
    "load_image": "io",
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
}

if TYPE_CHECKING:
    import torch

    from .models import LSeg


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'langseg' has no attribute {name!r}")


def bundled_weights() -> dict[str, Path]:
    """Weights shipped inside the package (name -> folder)."""
    folder = ASSETS / "weights"
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if (p / "config.json").is_file()}


def resolve_weights(path_or_name: str | Path, *, progress: bool = True) -> Path:
    """A path, a bundled name, a registry name or ``hf-hub:ORG/NAME[@REV]`` -> a local path (downloading
    if needed)."""
    from .hub import REGISTRY, fetch
    from .models import CheckpointError

    if isinstance(path_or_name, str) and path_or_name.startswith("hf-hub:"):
        from .hf_hub import download

        return download(path_or_name, progress=progress)
    p = Path(path_or_name).expanduser()
    if p.exists():
        return p
    name = str(path_or_name)
    bundled = bundled_weights()
    if name in bundled:
        return bundled[name]
    if name in REGISTRY:
        return fetch(name, progress=progress)
    known = sorted(bundled) + sorted(REGISTRY)
    raise CheckpointError(
        f"{name}: no such file, and not a known weights name (known: {', '.join(known)}; "
        "or hf-hub:ORG/NAME for a Hugging Face Hub model)"
    )


def load_model(
    path_or_name: str | Path = TOY_WEIGHTS,
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = True,
    **overrides: Any,
) -> LSeg:
    """Load an LSeg network in eval mode.

    ``path_or_name``: an official lang-seg ``.ckpt``, a folder (or ``model.safetensors``) of ours, the
    name of a bundled model (``lseg-toy``) or of an official checkpoint (``lseg-demo-vitl16``, see
    ``langseg.REGISTRY``), which is downloaded once into :func:`langseg.cache_dir`, or a Hugging Face Hub
    model ``hf-hub:ORG/NAME[@REVISION]`` (downloaded through ``huggingface_hub`` into its cache).
    ``overrides`` set config fields the weights cannot tell (e.g. ``arch_option``) for official files.
    """
    from .models import load_checkpoint
    from .predictor import resolve_device

    path = resolve_weights(path_or_name, progress=progress)
    model = load_checkpoint(path, **overrides)
    model.source = str(path_or_name)
    dev = resolve_device(device)
    return model.to(device=dev, dtype=dtype) if dtype is not None else model.to(dev)


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
