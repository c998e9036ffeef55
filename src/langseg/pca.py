"""One principal-component basis for a whole feature export (``langseg features --pca-dim K``).

The basis is fitted on pixel vectors of a sample of the inputs: their mean and covariance are
accumulated in float64 one map at a time (memory ``D x D``, whatever the sample size), at most
``max_vectors`` pixels in all, drawn with a fixed seed. It is saved once (``pca.safetensors``: mean,
components, explained variance and its ratio) and applied to every frame, so reduced features and
the preview colours of different frames are comparable. Components are signed so that each one's
largest loading is positive (the same data gives the same basis).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import LangsegError

PCA_NAME = "pca.safetensors"
PREVIEW_SIGMAS = 2.5  # preview colours span +-2.5 standard deviations of each component


@dataclass(frozen=True)
class PCABasis:
    mean: np.ndarray  # (D,) float32
    components: np.ndarray  # (K, D) float32, rows orthonormal, strongest first
    explained_variance: np.ndarray  # (K,) float64, variance along each component
    explained_variance_ratio: np.ndarray  # (K,) share of the total variance
    vectors: int  # pixel vectors the basis was fitted on
    info: dict[str, Any]  # what it was fitted on (weights, protocol, sample), to refuse a mismatch

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def project(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(D, h, w)`` features -> ``(K, h, w)`` float32 coordinates in the basis."""
        x = _as_numpy(features)
        D, h, w = x.shape
        if D != self.mean.shape[0]:
            raise LangsegError(f"features have {D} channels, the PCA basis {self.mean.shape[0]}")
        flat = x.reshape(D, h * w) - self.mean[:, None]
        return (self.components @ flat).reshape(self.dim, h, w).astype(np.float32)

    def preview(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(D, h, w)`` -> ``(h, w, 3)`` uint8: the first three components as RGB, on one fixed scale
        (``PREVIEW_SIGMAS`` standard deviations of the fitted sample) for every frame."""
        proj = self.project(features)[:3]
        rgb = np.full((proj.shape[1], proj.shape[2], 3), 0.5)
        for c in range(min(3, self.dim)):
            sigma = math.sqrt(max(float(self.explained_variance[c]), 0.0))
            if sigma > 1e-12:
                rgb[..., c] = np.clip(0.5 + proj[c] / (2 * PREVIEW_SIGMAS * sigma), 0.0, 1.0)
        return (rgb * 255 + 0.5).astype(np.uint8)

    def record(self) -> dict[str, Any]:
        """For the features index: dimension, explained variance, sample size and file."""
        return {
            "file": PCA_NAME,
            "dim": self.dim,
            "explained_variance_ratio": [round(float(v), 6) for v in self.explained_variance_ratio],
            "explained_variance_total": round(float(self.explained_variance_ratio.sum()), 6),
            "fitted_on_vectors": self.vectors,
            "fitted_on": self.info,
        }

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        tensors = {
            "mean": np.ascontiguousarray(self.mean, dtype=np.float32),
            "components": np.ascontiguousarray(self.components, dtype=np.float32),
            "explained_variance": np.asarray(self.explained_variance, dtype=np.float64),
            "explained_variance_ratio": np.asarray(self.explained_variance_ratio, dtype=np.float64),
        }
        meta = {"vectors": str(self.vectors), "info": json.dumps(self.info, sort_keys=True)}
        return save(tensors, metadata=meta)


def _as_numpy(features: torch.Tensor | np.ndarray) -> np.ndarray:
    if torch.is_tensor(features):
        return features.detach().float().cpu().numpy()
    return np.asarray(features, dtype=np.float32)


def fit_basis(
    maps: Iterable[torch.Tensor | np.ndarray],
    dim: int,
    *,
    per_map: int,
    seed: int = 0,
    info: dict[str, Any] | None = None,
) -> PCABasis:
    """Fit a ``dim``-component basis on at most ``per_map`` pixels of each ``(D, h, w)`` map (drawn
    with ``seed``), accumulating mean and covariance in float64 so memory stays ``D x D``."""
    rng = np.random.default_rng(seed)
    total = None
    outer = None
    n = 0
    for m in maps:
        x = _as_numpy(m)
        D = x.shape[0]
        flat = x.reshape(D, -1)
        if flat.shape[1] > per_map:
            flat = flat[:, np.sort(rng.choice(flat.shape[1], per_map, replace=False))]
        flat = flat.astype(np.float64)
        if total is None:
            total, outer = np.zeros(D), np.zeros((D, D))
        total += flat.sum(axis=1)
        outer += flat @ flat.T
        n += flat.shape[1]
    if total is None or n < 2:
        raise LangsegError("cannot fit a PCA basis: no pixels in the sample (no input image could be read)")
    D = total.shape[0]
    if not 1 <= dim <= D:
        raise LangsegError(f"--pca-dim must be between 1 and the feature dimension {D}, got {dim}")
    mean = total / n
    cov = (outer - n * np.outer(mean, mean)) / (n - 1)
    values, vectors = np.linalg.eigh(cov)  # ascending
    values, vectors = values[::-1], vectors[:, ::-1]
    top = vectors[:, :dim].T.copy()  # (K, D)
    top *= np.sign(top[np.arange(dim), np.abs(top).argmax(axis=1)])[:, None]
    values = np.clip(values, 0.0, None)
    ratio = values[:dim] / max(float(values.sum()), 1e-30)
    return PCABasis(mean.astype(np.float32), top.astype(np.float32), values[:dim], ratio, n, dict(info or {}))


def load_basis(path: str | Path) -> PCABasis:
    """Read a basis written by :meth:`PCABasis.to_bytes`; a damaged file is named in the error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in ("mean", "components", "explained_variance")}
            ratio = f.get_tensor("explained_variance_ratio")
        return PCABasis(
            t["mean"],
            t["components"],
            t["explained_variance"],
            ratio,
            int(meta["vectors"]),
            json.loads(meta["info"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LangsegError(
            f"{path}: not a PCA basis this version can read ({e}); remove it to fit again"
        ) from None
