"""Provenance: what produced a result. The weights (name, file, SHA-256) and the code and runtime.

:func:`weights_record` is the one description of weights that every record carries (``segment``'s
per-image JSON, ``features``' index, ``eval`` and ``eval-zeroshot`` results), under the key
``"weights"``.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_file(path: str | Path) -> Path | None:
    """The file whose hash identifies weights: ``model.safetensors`` of a folder, or the file itself."""
    from .models.checkpoint import WEIGHTS_NAME

    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_NAME
    return p if p.is_file() else None


def weights_record(spec: str | Path, path: str | Path, model: str | None = None) -> dict[str, Any]:
    """What a downstream user needs to get the same weights.

    ``{"weights": the name or path given, "path": where it resolved to, "file": the hashed file's
    name, "sha256": its hash (None when there is no file), "model": the config name}``.
    """
    path = Path(path)
    file = weights_file(path)
    return {
        "weights": str(spec),
        "path": str(path.resolve()),
        "file": file.name if file is not None else None,
        "sha256": _sha256(file) if file is not None else None,
        "model": model,
    }


def _sha256(file: Path) -> str:
    """SHA-256 of a weights file; a cached official name's is taken from its checksum record while the
    file is unchanged (hub.fetch checks it at every use), so a run does not read 2 GB twice."""
    from .hub import recorded_sha256

    return recorded_sha256(file) or sha256_file(file)


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the checkout holding this package (``+dirty`` if modified), or None outside git."""
    folder = start or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device | str, precision: str) -> dict[str, Any]:
    """Code and runtime versions, device name and compute precision."""
    import torch

    from . import __version__

    dev = torch.device(device)
    name = (
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    )
    return {
        "langseg_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(dev),
        "device_name": name,
        "precision": precision,
    }
