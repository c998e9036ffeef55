"""A fused scene on disk: write it, load it, query it with words.

A map folder holds ``features.safetensors`` (per-point ``features`` (N, D) float16 unit-norm,
``counts``, ``weights``, ``xyz``, ``colors``), ``scene.json`` (provenance and settings),
``openscene.pt`` (``{"feat": (N_seen, D) float16, "mask_full": (N,) bool}``, the layout OpenScene's
evaluation reads) and ``features_pca.ply`` (points coloured by the top 3 principal components of
their features: one picture that tells whether the fusion worked).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LangsegError
from .fusion import FusedScene
from .points import write_ply

log = logging.getLogger(__name__)

FORMAT = "langseg-scene-v1"
FEATURES_NAME = "features.safetensors"
RECORD_NAME = "scene.json"
OPENSCENE_NAME = "openscene.pt"
PCA_NAME = "features_pca.ply"
OUTPUT_NAMES = (FEATURES_NAME, RECORD_NAME, OPENSCENE_NAME, PCA_NAME)
UNSEEN_COLOR = (160, 160, 160)  # points no frame saw, in every PLY
QUERY_CHUNK = 262_144  # points scored against the labels at once (bounds the (chunk, K) scores)
AXES = {"x": 0, "y": 1, "z": 2}


def write_map(out: Path, fused: FusedScene, record: dict[str, Any], *, overwrite: bool = False) -> None:
    """Write the four files of a map folder (each atomically; the record last)."""
    from safetensors.numpy import save

    from ..files import atomic_write, write_bytes, write_json
    from ..visualize import pca_rgb

    seen = fused.seen.cpu()
    feats16 = fused.features.to(torch.float16).cpu()
    tensors = {
        "features": feats16.numpy(),
        "counts": fused.counts.cpu().to(torch.int32).numpy(),
        "weights": fused.weights.cpu().numpy(),
        "xyz": np.ascontiguousarray(fused.xyz, dtype=np.float32),
        "colors": np.ascontiguousarray(fused.colors, dtype=np.uint8),
    }
    meta = {"format": FORMAT, "layout": "features (N, D) float16 unit norm; zeros where counts == 0"}
    write_bytes(out / FEATURES_NAME, save(tensors, metadata=meta), overwrite=overwrite)
    openscene = {"feat": feats16[seen].clone(), "mask_full": seen.clone()}
    atomic_write(out / OPENSCENE_NAME, lambda f: torch.save(openscene, f), overwrite=overwrite)
    colors = np.tile(np.array(UNSEEN_COLOR, np.uint8), (len(fused.xyz), 1))
    if bool(seen.any()):
        f = tensors["features"][seen.numpy()].T[:, :, None]  # (D, N_seen, 1) float16 view
        colors[seen.numpy()] = pca_rgb(f)[:, 0]
    write_ply(out / PCA_NAME, fused.xyz, colors, scalars={"count": tensors["counts"]}, overwrite=overwrite)
    write_json(out / RECORD_NAME, record, overwrite=overwrite)


@dataclass
class SceneQuery:
    """Labels given to every point of a map."""

    labels: np.ndarray  # (N,) int64 label index per point; -1 where no frame saw the point
    scores: np.ndarray  # (N, K) float32 cosine similarity of each point to each label
    label_names: list[str]  # display name per index
    classes: list[tuple[str, ...]]  # every class with its synonyms

    def shares(self) -> dict[str, float]:
        """Fraction of the seen points per label (every label listed)."""
        seen = self.labels[self.labels >= 0]
        counts = np.bincount(seen, minlength=len(self.label_names))
        total = max(int(counts.sum()), 1)
        return {name: float(c) / total for name, c in zip(self.label_names, counts)}

    def heat(self, label: str) -> np.ndarray:
        """``(N,)`` cosine similarity of every point to one label (given by any of its names)."""
        for i, names in enumerate(self.classes):
            if label.strip().lower() in (n.lower() for n in names):
                return self.scores[:, i]
        raise LangsegError(f"--heatmap {label!r} is not one of the labels ({', '.join(self.label_names)})")


class Scene:
    """A fused map loaded from its folder: ``Scene.load("toy_map").query("chair,table,floor")``."""

    def __init__(self, root: Path, tensors: dict[str, np.ndarray], record: dict[str, Any]) -> None:
        self.root = root
        self.features = torch.from_numpy(tensors["features"])  # (N, D) float16
        self.counts = tensors["counts"]  # (N,) int32
        self.xyz = tensors["xyz"]  # (N, 3) float32
        self.colors = tensors["colors"]  # (N, 3) uint8
        self.record = record

    @property
    def seen(self) -> np.ndarray:
        return self.counts > 0

    @classmethod
    def load(cls, root: str | Path) -> Scene:
        """Read a map folder written by ``langseg scene fuse``."""
        from safetensors import safe_open

        root = Path(root)
        path, record_path = root / FEATURES_NAME, root / RECORD_NAME
        for p in (path, record_path):
            if not p.is_file():
                raise LangsegError(
                    f"{p}: no such file; is {root} a map folder written by 'langseg scene fuse'?"
                )
        try:
            with safe_open(str(path), framework="np") as f:
                if (f.metadata() or {}).get("format") != FORMAT:
                    raise LangsegError(f"{path}: not a {FORMAT} features file")
                tensors = {k: f.get_tensor(k) for k in ("features", "counts", "xyz", "colors")}
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except LangsegError:
            raise
        except Exception as e:  # torn or foreign files
            raise LangsegError(f"{root}: unreadable map ({type(e).__name__}: {e})") from None
        return cls(root, tensors, record)

    def weights(self) -> str:
        """The weights the features were made with (name or path, as recorded)."""
        w = self.record.get("weights") or {}
        path = w.get("path")
        return str(path) if path and Path(path).exists() else str(w.get("weights") or path)

    def query(
        self,
        labels: str | Sequence[str | Sequence[str]],
        *,
        model: Any = None,
        templates: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> SceneQuery:
        """Score every point against the labels (``"chair;seat,table,other"`` syntax) with the text tower
        of ``model`` (default: the weights recorded in ``scene.json``)."""
        from ..labels import display_names, parse_labels

        classes = (
            parse_labels(labels)
            if isinstance(labels, str)
            else [(lab,) if isinstance(lab, str) else tuple(lab) for lab in labels]
        )
        if model is None:
            from ..weights import load_model, resolve_weights

            model = load_model(resolve_weights(self.weights()), device=device or "cpu")
        dev = next(model.parameters()).device
        with torch.inference_mode():
            text = (
                model.encode_text(classes, list(templates) if templates else None).float().to(dev)
            )  # (K, D)
        if text.shape[1] != self.features.shape[1]:
            raise LangsegError(
                f"the text embeddings have {text.shape[1]} dimensions but {self.root} holds "
                f"{self.features.shape[1]}-dimensional features; use the weights the map was made with"
            )
        scores = np.empty((len(self.xyz), len(classes)), dtype=np.float32)
        for start in range(0, len(self.xyz), QUERY_CHUNK):
            chunk = self.features[start : start + QUERY_CHUNK].to(dev).float()  # (C, D)
            scores[start : start + QUERY_CHUNK] = (chunk @ text.T).cpu().numpy()
        index = scores.argmax(axis=1).astype(np.int64)
        index[~self.seen] = -1
        return SceneQuery(index, scores, display_names(classes), [tuple(c) for c in classes])

    def up_axis(self) -> str:
        """The recorded up direction (``"z"``, ``"-y"``, ...), from the cameras' mean up vector."""
        return str(self.record.get("up", "z"))


# ------------------------------------------------------------------------------------ pictures
def label_colors(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """``(N,)`` label indices (-1 unseen) -> ``(N, 3)`` uint8 palette colours (grey for unseen)."""
    from ..visualize import palette

    colors = np.tile(np.array(UNSEEN_COLOR, np.uint8), (len(labels), 1))
    known = labels >= 0
    colors[known] = palette(n_labels)[labels[known]]
    return colors


def heat_colors(values: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """``(N,)`` scores -> blue (lowest seen) to red (highest seen) ``(N, 3)`` uint8; grey unseen."""
    colors = np.tile(np.array(UNSEEN_COLOR, np.uint8), (len(values), 1))
    if seen.any():
        v = values[seen]
        lo, hi = np.percentile(v, [1, 99])
        t = np.clip((v - lo) / max(hi - lo, 1e-12), 0.0, 1.0)[:, None]
        blue, red = np.array([40, 60, 230], np.float32), np.array([230, 40, 30], np.float32)
        colors[seen] = ((1 - t) * blue + t * red + 0.5).astype(np.uint8)
    return colors


def estimate_up(poses_world_cam: Sequence[np.ndarray]) -> str:
    """The world axis closest to the cameras' mean up vector (-y of an OpenCV camera), e.g. ``"z"``."""
    up = -np.mean([T[:3, 1] for T in poses_world_cam], axis=0)
    k = int(np.abs(up).argmax())
    return ("" if up[k] >= 0 else "-") + "xyz"[k]


def topdown(
    xyz: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    *,
    up: str = "z",
    size: int = 512,
    cell: float | None = None,
):
    """A top-down picture of a labelled map with a legend: each cell shows the label of its highest
    seen point (as VLMaps draws its maps). ``cell``: cell side in metres (default: the mean point
    spacing over the footprint); ``size``: the long side of the picture in pixels (cells are
    enlarged or the cell grows to fit)."""
    from PIL import Image

    from ..visualize import IGNORE_INDEX, overlay

    axis_name = up.lstrip("-+")
    if axis_name not in AXES:
        raise LangsegError(f"--up must be x, y or z with an optional '-', got {up!r}")
    if len(names) >= IGNORE_INDEX:
        raise LangsegError(f"a top-down picture shows at most {IGNORE_INDEX - 1} labels, got {len(names)}")
    k = AXES[axis_name]
    sign = -1.0 if up.startswith("-") else 1.0
    keep = labels >= 0
    pts, lab = xyz[keep].astype(np.float64), labels[keep]
    mask = np.full((size, size), IGNORE_INDEX, dtype=np.uint8)
    if len(pts):
        a, b = [i for i in range(3) if i != k]
        height = sign * pts[:, k]
        plane = pts[:, [a, b]]
        lo, hi = plane.min(axis=0), plane.max(axis=0)
        extent = max(float((hi - lo).max()), 1e-6)
        if cell is None:
            cell = float(np.sqrt(max(float(np.prod(np.maximum(hi - lo, 1e-6))), 1e-12) / len(pts)))
        cell = max(cell, extent / (size - 1))
        W, H = (np.floor((hi - lo) / cell).astype(int) + 1).tolist()
        col = np.floor((plane[:, 0] - lo[0]) / cell).astype(np.int64)
        row = (H - 1) - np.floor((plane[:, 1] - lo[1]) / cell).astype(np.int64)  # second axis points up
        order = np.argsort(height, kind="stable")  # highest last: its label wins the cell
        mask = np.full((H, W), IGNORE_INDEX, dtype=np.uint8)
        mask[row[order], col[order]] = lab[order]
        scale = size / max(H, W)
        if scale > 1:  # enlarge the cells (nearest), so small maps read well beside their legend
            new = (max(1, round(W * scale)), max(1, round(H * scale)))
            mask = np.array(Image.fromarray(mask).resize(new, Image.NEAREST))
    white = np.full(mask.shape + (3,), 255, dtype=np.uint8)
    return overlay(white, mask, names, alpha=1.0)
