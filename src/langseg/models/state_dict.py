"""Reading weights files without running pickled code, and loading state dicts strictly.

Everything is read on the CPU (``torch.load(weights_only=True)`` or safetensors). Every failure is a
:class:`CheckpointError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import LangsegError
from .lseg import LSeg

log = logging.getLogger(__name__)


class CheckpointError(LangsegError, RuntimeError):
    """A weights file that cannot be read or does not fit the network."""


class _LightningCallbackKey:
    """Stands in for ``pytorch_lightning...ModelCheckpoint``, which Lightning < 1.5 used as a dict key.

    It is the only foreign global the official files need; it is mapped to this inert class, which
    accepts and ignores whatever arguments or state the file gives it (it never runs anything).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


_ALLOWED_GLOBALS = [
    (_LightningCallbackKey, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
]
_PICKLE_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", re.S)
_FOREIGN_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (``torch.save`` since 1.6) or a pickle stream (the legacy format) at the start."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _check_file(path: Path) -> None:
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise CheckpointError(f"{path}: {what}" + (" (expected a .ckpt/.pt file)" if path.exists() else ""))
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a pickle stream)"
        )


def _unpickling_error(path: Path, e: pickle.UnpicklingError) -> CheckpointError:
    text = str(e)
    foreign = _FOREIGN_GLOBAL.search(text)
    if foreign:
        return CheckpointError(
            f"{path}: holds a Python object of type {foreign[1]}, which is not loaded: only tensors and "
            "plain containers are read from weights files (no pickled code runs)"
        )
    detail = _PICKLE_DETAIL.search(text)
    reason = f": {detail[1].strip().splitlines()[0][:100]}" if detail else ""
    return CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable pickle data{reason})")


def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``; the Lightning 1.x callback class is the one extra allowed.

    Every failure is a :class:`CheckpointError` naming the file and what is wrong with it; torch's
    advice to retry with ``weights_only=False`` is never passed on (these files are untrusted).
    """
    path = Path(path)
    try:
        _check_file(path)
        with (
            torch.serialization.safe_globals(_ALLOWED_GLOBALS),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            obj = torch.load(path, map_location="cpu", weights_only=True)
        for w in caught:  # e.g. torch's note on pickle protocols: about the file, not for the user's terminal
            log.debug("%s: %s", path, w.message)
        return obj
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        raise _unpickling_error(path, e) from None
    except MemoryError:
        raise CheckpointError(f"{path}: not enough memory to read the file") from None
    except Exception as e:  # torch and zipfile raise assorted errors on damaged files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch file (truncated or corrupt?): {first}"
        ) from None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU; a damaged file is a :class:`CheckpointError`."""
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {e}"
        ) from None


def unwrap_state_dict(obj: Any, path: str | Path = "<weights>") -> dict[str, torch.Tensor]:
    """Take ``state_dict`` / ``model`` / ``module`` nesting off a loaded file."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found")
    return dict(obj)


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (a true prefix removal)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in sd.items()}


def load_weights(model: LSeg, sd: Mapping[str, torch.Tensor], source: str = "<weights>") -> None:
    """Strictly load our-named weights, with a readable error listing the mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit the {model.config.name} network"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict(sd, strict=True)
