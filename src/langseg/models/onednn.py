"""oneDNN linear layers with packed weights, for fp32/bf16 CPU inference.

PyTorch runs ``nn.Linear`` on the CPU through the BLAS library it was built with (MKL). On some
CPUs (AMD EPYC among them) MKL's single-precision GEMM reaches only about half the speed of
oneDNN's, which PyTorch already uses for convolutions. :class:`PackedLinears` routes inference-time
linear layers through oneDNN (``torch.ops.mkldnn._linear_pointwise``, the kernel that
``torch.compile`` uses on CPU), with each weight re-laid out ("packed") once and reused, and the
GELU of an MLP fused into its first layer. The arithmetic is the same fp32 GEMM, accumulated in
another order: outputs match ``F.linear`` to float rounding (about 1e-6 relative).

The packed copies cost as much memory as the linear weights themselves (about 1.2 GB for ViT-L).
No autograd: callers use this only when no gradient is recorded.
"""

from __future__ import annotations

import functools
import logging
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_POST_OPS = ("none", "gelu")


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    """Whether this PyTorch build has the oneDNN linear kernel and it works on a tiny input."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 3), None)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 3), w, None, "none", [], "none")
        return bool(torch.allclose(y, torch.full((1, 2), 3.0)))
    except (AttributeError, RuntimeError) as err:  # a build without the op, or one that rejects it
        logger.info("oneDNN linear kernel unavailable: %s", err)
        return False


def usable_for(x: torch.Tensor) -> bool:
    """oneDNN linears apply: CPU, fp32 input, no gradient recorded, no CPU autocast active."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and onednn_available()
    )


class PackedLinears:
    """Per-model cache of oneDNN-packed linear weights, refreshed when a weight changes.

    A cached entry is keyed by the ``nn.Linear`` it came from and checked against the weight's
    storage pointer, in-place version counter, shape and dtype, so ``load_state_dict``, optimizer
    steps and ``.to()`` all invalidate it. Copies (``copy.deepcopy``, pickling) start empty.
    """

    def __init__(self) -> None:
        # (id(layer), columns) -> (weakref to the layer, weight state, packed weight)
        self._packed: dict[tuple, tuple[weakref.ref, tuple, torch.Tensor]] = {}

    def __deepcopy__(self, memo: dict) -> PackedLinears:
        return PackedLinears()

    def __getstate__(self) -> dict:
        return {"_packed": {}}

    def __len__(self) -> int:
        return len(self._packed)

    def clear(self) -> None:
        self._packed.clear()

    def _weight(self, layer: nn.Linear, cols: slice | None) -> torch.Tensor:
        w = layer.weight
        state = (w.data_ptr(), w._version, tuple(w.shape), w.dtype)
        key = (id(layer), None if cols is None else (cols.start, cols.stop))
        hit = self._packed.get(key)
        if hit is not None and hit[0]() is layer and hit[1] == state:
            return hit[2]
        dense = w.detach() if cols is None else w.detach()[:, cols].contiguous()
        packed = torch.ops.mkldnn._reorder_linear_weight(dense, None)  # (out, in) -> oneDNN's layout
        self._packed[key] = (weakref.ref(layer), state, packed)
        return packed

    def linear(
        self,
        layer: nn.Linear,
        x: torch.Tensor,
        post: str = "none",
        *,
        residual: torch.Tensor | None = None,
        cols: slice | None = None,
        bias: bool = True,
    ) -> torch.Tensor:
        """``(..., in) -> (..., out)``: ``layer(x)``, then exact GELU when ``post="gelu"``.

        ``residual`` (same shape as the output) is added inside the GEMM kernel: ``layer(x) + residual``.
        ``cols`` uses only those input columns of the weight (``x`` has that many features), and
        ``bias=False`` leaves the bias out: together they run one half of a split layer.
        """
        if post not in _POST_OPS:
            raise ValueError(f"unknown post-op {post!r}; expected one of {_POST_OPS}")
        if residual is not None and post != "none":
            raise ValueError("a residual can only follow a plain linear layer (post='none')")
        b = layer.bias if bias else None
        if not usable_for(x) or layer.weight.is_inference():  # inference-mode weights: no version counter
            w = layer.weight if cols is None else layer.weight[:, cols]
            y = F.linear(x, w, b)
            y = F.gelu(y) if post == "gelu" else y
            return y if residual is None else y + residual
        b = b.detach() if b is not None else None
        weight = self._weight(layer, cols)
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(
                x.contiguous(), residual.contiguous(), weight, b, "add"
            )
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, b, post, [], "none")
