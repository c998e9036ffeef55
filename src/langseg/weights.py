"""The weights door: a path, a bundled name, a registry name or a Hub name -> a loaded LSeg network.

:mod:`langseg.hub` stays the registry of official checkpoints and their download; this module
decides where a name points (a file or folder, the weights bundled with the package, or the
registry, or ``hf-hub:`` names through :mod:`langseg.hf_hub`) and loads it with :func:`langseg.models.load_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model_format import CONFIG_NAME

if TYPE_CHECKING:
    import torch

    from .models import LSeg

TOY_WEIGHTS = "lseg-toy"  # the bundled offline default: a tiny model trained on the toy dataset
BUNDLED = Path(__file__).resolve().parent / "assets" / "weights"


def bundled_weights() -> dict[str, Path]:
    """Weights shipped inside the package (name -> folder)."""
    if not BUNDLED.is_dir():
        return {}
    return {p.name: p for p in sorted(BUNDLED.iterdir()) if (p / CONFIG_NAME).is_file()}


def resolve_weights(path_or_name: str | Path, *, progress: bool = True, verify: bool = False) -> Path:
    """A path, a bundled name, a registry name or ``hf-hub:ORG/NAME[@REV]`` -> a local path (downloading
    if needed). ``verify``: hash a cached registry entry again even if its files look unchanged
    (see :func:`langseg.hub.fetch`)."""
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
        return fetch(name, progress=progress, verify=verify)
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
    verify: bool = False,
    **overrides: Any,
) -> LSeg:
    """Load an LSeg network in eval mode.

    ``path_or_name``: an official lang-seg ``.ckpt``, a folder (or ``model.safetensors``) of ours, the
    name of a bundled model (``lseg-toy``) or of an official checkpoint (``lseg-demo-vitl16``, see
    ``langseg.REGISTRY``), which is downloaded once into :func:`langseg.cache_dir`, or a Hugging Face Hub
    model ``hf-hub:ORG/NAME[@REVISION]`` (downloaded through ``huggingface_hub`` into its cache).
    ``overrides`` set config fields the weights cannot tell (e.g. ``arch_option``) for official files.
    ``verify``: hash a cached official checkpoint against its trust-on-first-use record even when its
    size and modification time are unchanged (by default they decide whether it is hashed again).
    """
    from .models import load_checkpoint
    from .predictor import resolve_device

    path = resolve_weights(path_or_name, progress=progress, verify=verify)
    model = load_checkpoint(path, **overrides)
    model.source = str(path_or_name)
    dev = resolve_device(device)
    return model.to(device=dev, dtype=dtype) if dtype is not None else model.to(dev)
