"""Provenance: what produced a result (the weights and their SHA-256)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_record(spec: str, path: str | Path, config_name: str) -> dict[str, Any]:
    """What a downstream user needs to get the same weights: the name given, the file and its SHA-256."""
    path = Path(path)
    weights_file = path / "model.safetensors" if path.is_dir() else path
    return {
        "weights": spec,
        "path": str(path.resolve()),
        "file": weights_file.name,
        "sha256": sha256_file(weights_file) if weights_file.is_file() else None,
        "model": config_name,
    }
