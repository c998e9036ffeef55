"""Logits at the size the network saw -> full-size outputs in bounded memory, band by band of rows.

The full ``K x H x W`` logits of a large image are never held: each band of rows is upsampled from
the rows of the network-size logits it needs, with PyTorch's bilinear (``align_corners=True``)
positions, and reduced before the next band (``BAND_BYTES`` bounds a band).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

BAND_BYTES = 16 * 2**20  # float32 bytes of one band of full-resolution logits (K x rows x W)


def row_bands(
    size: tuple[int, int], channels: int, band_bytes: int = BAND_BYTES
) -> Iterator[tuple[int, int]]:
    """``(y0, y1)`` bands of rows of an ``H x W`` map such that ``channels x rows x W`` float32 fit in
    ``band_bytes`` (at least one row per band)."""
    H, W = size
    rows = max(1, band_bytes // max(1, 4 * channels * W))
    for y0 in range(0, H, rows):
        yield y0, min(y0 + rows, H)


def upsample_rows(logits: torch.Tensor, size: tuple[int, int], y0: int, y1: int) -> torch.Tensor:
    """Rows ``y0:y1`` of ``F.interpolate(logits[None], size, "bilinear", align_corners=True)[0]``,
    computed from the source rows they need only: ``(K, h, w) -> (K, y1 - y0, W)``.

    Source positions and weights are those of PyTorch's kernel (float32 ``(h - 1) / (H - 1)`` steps);
    values agree with the full-size call to float rounding (a few 1e-7 relative).
    """
    K, h, w = logits.shape
    H, W = size
    if (h, w) == (H, W):
        return logits[:, y0:y1]
    if h == H:
        return F.interpolate(logits[None, :, y0:y1], size=(y1 - y0, W), mode="bilinear", align_corners=True)[
            0
        ]
    step = torch.tensor(h - 1, dtype=torch.float32) / (H - 1) if H > 1 else torch.tensor(0.0)
    pos = torch.arange(y0, y1, dtype=torch.float32) * step  # source row of each output row
    top = pos.floor().long().clamp(max=h - 1)
    bottom = torch.where(top < h - 1, top + 1, top)
    weight = (pos - top.float()).clamp(0, 1).to(logits.device)[None, :, None]
    lo, hi = int(top[0]), int(bottom[-1]) + 1
    rows = logits[None, :, lo:hi]  # only the source rows this band reads, widened to W
    if w != W:
        rows = F.interpolate(rows, size=(hi - lo, W), mode="bilinear", align_corners=True)
    rows = rows[0]
    top, bottom = (top - lo).to(logits.device), (bottom - lo).to(logits.device)
    return rows[:, top] * (1 - weight) + rows[:, bottom] * weight


def label_map(
    logits: torch.Tensor, size: tuple[int, int], band_bytes: int = BAND_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """``(K, h, w)`` logits -> the ``(H, W)`` int32 argmax and float32 softmax score at ``size``.

    The same result as upsampling all ``K`` maps to ``size`` and taking ``softmax(0).max(0)``, computed
    in bands of rows: memory is bounded by ``band_bytes``, not by ``K x H x W``.
    """
    H, W = size
    labels = np.empty((H, W), dtype=np.int32)
    scores = np.empty((H, W), dtype=np.float32)
    for y0, y1 in row_bands(size, logits.shape[0], band_bytes):
        # labels last: each pixel's softmax is computed alone, the same whatever the band size
        band = upsample_rows(logits, size, y0, y1).permute(1, 2, 0).contiguous()
        score, index = band.softmax(dim=-1).max(dim=-1)
        del band
        labels[y0:y1] = index.to(torch.int32).cpu().numpy()
        scores[y0:y1] = score.float().cpu().numpy()
    return labels, scores
