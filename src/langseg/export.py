"""Export the image network to ONNX for deployment, and check the graph against the eager model.

The graph takes normalized images ``(B, 3, H, W)`` (``(x / 255 - mean) / std``, H and W multiples of 32,
batch, height and width dynamic) and returns unit-norm pixel embeddings ``pixels`` ``(B, D, H/2, W/2)``;
exported with labels, the text embeddings are a constant in the graph and it also returns ``logits``
``(B, K, H, W)``. The text tower is not exported: new words need a new export (or the pixel graph and
text embeddings computed with langseg). After writing, the graph runs in onnxruntime on the CPU on two
image sizes and is compared with the eager model.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import LangsegError

if TYPE_CHECKING:
    import numpy as np

    from .models import LSeg
    from .models.lseg import Labels

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16}
MIN_OPSET, DEFAULT_OPSET = 17, 18  # 17: LayerNormalization as one op
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2}  # max |onnxruntime - eager| accepted


class ExportError(LangsegError, RuntimeError):
    """A model or option that cannot be exported, or a graph that does not match the eager model."""


class PixelGraph(nn.Module):
    """``(B, 3, H, W)`` normalized images -> ``(B, D, H/2, W/2)`` unit-norm pixel embeddings."""

    def __init__(self, model: LSeg) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # a wrapper in training mode would leave the model in it after export

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.forward_embeddings(images).float(), dim=1)


class LogitsGraph(nn.Module):
    """``(B, 3, H, W)`` -> pixel embeddings and ``(B, K, H, W)`` logits for a fixed ``(K, D)`` text."""

    def __init__(self, model: LSeg, text: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)
        self.register_buffer("text", text.detach().float().clone())  # (K, D) unit norm: a graph constant

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.forward_embeddings(images)
        return F.normalize(emb.float(), dim=1), self.model.logits_from_embeddings(emb, self.text)


@dataclass
class Check:
    """One parity check of the exported graph against the eager model."""

    size: tuple[int, int]  # (H, W)
    output: str
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass
class ExportResult:
    path: Path
    outputs: list[str]
    checks: list[Check]
    seconds: float
    labels: list[str] | None

    def record(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


def _refuse(model: LSeg, dtype: torch.dtype, opset: int) -> None:
    if dtype not in TOLERANCE:
        names = ", ".join(DTYPES)
        raise ExportError(
            f"dtype {dtype} cannot be exported: onnxruntime has almost no bfloat16 kernels; use one of {names}"
        )
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: LayerNormalization needs opset {MIN_OPSET} or newer")
    if model.numerics == "official":
        raise ExportError(
            "the official numerics (float16 text tower and similarity) are not exported; "
            "model.set_numerics('fp32') first (the exported graph computes in its dtype)"
        )


def export_onnx(
    model: LSeg,
    out: str | Path,
    *,
    labels: Labels | None = None,
    templates: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
    opset: int = DEFAULT_OPSET,
    verify_sizes: Sequence[tuple[int, int]] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``model`` as an ONNX graph to ``out`` and check it with onnxruntime on the CPU.

    ``labels`` (names or synonym tuples, with ``templates``) make the graph also return logits.
    ``dtype`` float32 or float16; ``verify_sizes``: two ``(H, W)`` by default (the native size and a
    wider one). Raises :class:`ExportError` when the model or option cannot be exported or the
    graph differs from the eager model by more than 1e-4 (float32) / 2e-2 (float16). The graph is
    traced with the model's fast paths as they are set.
    """
    _refuse(model, dtype, opset)
    out = Path(out)
    weight = model.pixel_embed.weight
    if weight.device.type != "cpu" or weight.dtype != dtype:  # never round the caller's weights in place
        model = copy.deepcopy(model).to(device="cpu", dtype=dtype)
    model = model.eval()
    start = time.perf_counter()
    text = model.encode_text(labels, templates) if labels is not None else None
    graph = (PixelGraph(model) if text is None else LogitsGraph(model, text)).eval()
    outputs = ["pixels"] if text is None else ["pixels", "logits"]
    _write_graph(graph, out, _trace_size(model), dtype, outputs, opset, overwrite)
    seconds = time.perf_counter() - start
    sizes = list(verify_sizes) if verify_sizes else default_sizes(model)
    checks = verify_onnx(out, graph, sizes, dtype=dtype, outputs=outputs)
    bad = [c for c in checks if not c.ok]
    if bad:
        worst = max(bad, key=lambda c: c.max_abs_diff)
        raise ExportError(
            f"{out}: the ONNX graph differs from the eager model: {worst.output} at {worst.size[0]}x{worst.size[1]} "
            f"max |difference| {worst.max_abs_diff:.3g} > {worst.tolerance:g}"
        )
    return ExportResult(out, outputs, checks, seconds, _label_names(labels))


def _write_graph(
    graph: nn.Module,
    out: Path,
    size: tuple[int, int],
    dtype: torch.dtype,
    outputs: list[str],
    opset: int,
    overwrite: bool,
) -> None:
    """Trace ``graph`` on an example batch of ``size`` and write it to ``out`` (atomically)."""
    from .files import atomic_write

    example = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(dtype)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in outputs})

    def write(f) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about the size checks, which hold for any size
            torch.onnx.export(
                graph,
                (example,),
                f,
                dynamo=False,
                input_names=["images"],
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
            )

    try:
        atomic_write(out, write, overwrite=overwrite)
    except LangsegError:
        raise
    except Exception as e:  # the exporter's own errors: one line naming the unsupported part
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{graph.model.config.name} cannot be exported to ONNX: {first}") from None


def _label_names(labels: Labels | None) -> list[str] | None:
    if labels is None:
        return None
    return [lab if isinstance(lab, str) else ";".join(lab) for lab in labels]


def _native(model: LSeg) -> int:
    vit = model.config.vit
    return vit.img_size if vit is not None else 480


def _trace_size(model: LSeg) -> tuple[int, int]:
    """The example size the graph is traced at: unlike the native size, it takes every size-dependent
    path (the position-embedding resize), so the graph holds it for all sizes."""
    n = _native(model)
    return n + 32, n + 64


def default_sizes(model: LSeg) -> list[tuple[int, int]]:
    """Two verification sizes: the native square and a wider, non-square one."""
    n = _native(model)
    return [(n, n), (n + 64, n + 128)]


def verify_onnx(
    path: str | Path,
    graph: nn.Module,
    sizes: Sequence[tuple[int, int]],
    *,
    dtype: torch.dtype = torch.float32,
    outputs: Sequence[str] = ("pixels",),
    seed: int = 0,
) -> list[Check]:
    """Run the graph in onnxruntime (CPU) and ``graph`` eagerly on random images of each size."""
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for h, w in sizes:
        if h % 32 or w % 32:
            raise ExportError(f"verification size {h}x{w} is not a multiple of 32")
        images = torch.randn(1, 3, h, w, generator=generator).to(dtype)
        with torch.no_grad():
            eager = graph(images)
        eager = (eager,) if torch.is_tensor(eager) else eager
        got = session.run(list(outputs), {"images": images.numpy()})
        for name, ref, onnx_out in zip(outputs, eager, got):
            diff = float(abs(torch.from_numpy(onnx_out).float() - ref.float()).max())
            checks.append(Check((h, w), name, diff, TOLERANCE[dtype]))
            log.info("%s %dx%d: max |onnxruntime - eager| = %.3g", name, h, w, diff)
    return checks


def onnx_session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0):
    """An onnxruntime session (CPU by default; ``threads`` 0: onnxruntime's choice)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnxruntime is not installed: pip install 'langseg[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only (float16 graphs log notes about constant folding)
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as e:  # onnxruntime raises its own error types
        first = str(e).strip().splitlines()[0]
        raise ExportError(f"{path}: onnxruntime cannot load the graph: {first}") from None


def run_onnx(session, images: np.ndarray) -> list[np.ndarray]:
    """Run an exported graph on normalized ``(B, 3, H, W)`` images; returns its outputs in order."""
    return session.run(None, {"images": images})
