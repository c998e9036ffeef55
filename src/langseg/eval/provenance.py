"""What produced an evaluation: weights and their hash, code version, device, and safe JSON writing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import LangsegError
from ..models.checkpoint import WEIGHTS_NAME
from ..provenance import sha256_file


def weights_file(path: str | Path) -> Path | None:
    """The file whose hash identifies a weights location: ``model.safetensors`` of a folder, or the file."""
    p = Path(path)
    if p.is_dir():
        return p / WEIGHTS_NAME if (p / WEIGHTS_NAME).is_file() else None
    return p if p.is_file() else None


def weights_record(name: str | Path | None, resolved: str | Path | None) -> dict[str, Any]:
    """``{"weights": name as given, "weights_path": local path, "weights_sha256": hash or None}``."""
    file = weights_file(resolved) if resolved is not None else None
    return {
        "weights": None if name is None else str(name),
        "weights_path": None if resolved is None else str(resolved),
        "weights_sha256": sha256_file(file) if file is not None else None,
    }


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
    from .. import __version__

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


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically (a temporary file renamed over the target)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise LangsegError(f"{path}: cannot write the results file: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a results file written by :func:`write_json`; a clear error names a bad file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LangsegError(f"{path}: not a readable results file: {e}") from None
    if not isinstance(data, dict):
        raise LangsegError(f"{path}: not a langseg results file (expected a JSON object)")
    return data
