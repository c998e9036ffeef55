"""Peak GPU memory of LSeg inference: large images, single pass, sliding window, multi-scale.

Rows (``--cases``), each for one image of ``--size`` (square) and ``--labels`` labels:

* ``single``     - the whole image in one network call (the Predictor's single-scale path: padded
  to a multiple of 32), logits for every label at full size;
* ``features``   - the whole image in one call, unit-norm embeddings at half resolution;
* ``sliding``    - ``MultiScaleConfig.sliding_window()``: 480 windows at stride 320 over the image at
  its own size, ``--window-batch`` windows per call;
* ``multiscale`` - the official evaluator (6 scales of a 520 base, 480 windows, flip).

Two ways to measure:

* on a CUDA device (``--device cuda``): ``torch.cuda.max_memory_allocated`` over the row, under
  bf16/fp16 autocast as the Predictor runs it;
* anywhere else (the default when no GPU is present): an **estimate**. The model and inputs are
  fake CUDA tensors (``torch._subclasses.FakeTensorMode``: shapes, dtypes and devices, no data, no
  arithmetic), and a dispatch mode adds up the bytes of every tensor storage alive at each moment.
  Autocast is simulated by that mode: inputs of matmul/conv/attention ops are cast to the low
  precision (cast weights kept for the whole call, as autocast's weight cache does), and inputs of
  normalization and softmax ops to fp32. Fused kernels (SDPA) count their output only, as the
  flash and memory-efficient kernels allocate. What it leaves out: the CUDA caching allocator's
  rounding and fragmentation (``max_memory_reserved`` is typically 10-30 % above
  ``max_memory_allocated``), cuDNN/cuBLAS workspaces and the CUDA context (~0.5 GiB).

``--check`` validates the estimator first: a small model is run for real on the CPU under the same
accounting and under fake CUDA tensors, and both peaks are printed (they must agree in fp32).

    python benchmarks/bench_memory.py                              # ViT-L/16, 1024 and 2048, estimate
    python benchmarks/bench_memory.py --device cuda --size 1024 2048 --json out.json
    python benchmarks/bench_memory.py --variant lseg_tiny --size 256 --check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.weak import WeakIdKeyDictionary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import machine_info  # noqa: E402

from langseg.inference import MultiScaleConfig, multi_scale, pad_to, pad_value, single_scale  # noqa: E402
from langseg.models import LSeg, create_model  # noqa: E402

GiB = 2**30
CASES = ("single", "features", "sliding", "multiscale")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# The ops CUDA autocast runs in the low precision, and those it runs in fp32 (the ones LSeg uses).
LOW_PRECISION_OPS = {
    "linear",
    "addmm",
    "mm",
    "bmm",
    "baddbmm",
    "matmul",
    "einsum",
    "conv1d",
    "conv2d",
    "convolution",
    "_convolution",
    "conv_transpose2d",
    "scaled_dot_product_attention",
}
FP32_OPS = {
    "layer_norm",
    "native_layer_norm",
    "group_norm",
    "softmax",
    "_softmax",
    "log_softmax",
    "upsample_bilinear2d",
    "linalg_vector_norm",
    "norm",
}


class LiveTensorBytes(TorchDispatchMode):
    """Adds up the bytes of tensor storages created inside the mode while they are alive.

    ``peak`` is the largest total seen. With ``autocast`` set, it also casts op inputs the way CUDA
    autocast does (see the module docstring), so that fake runs see autocast's dtypes.
    """

    def __init__(self, autocast: torch.dtype | None = None) -> None:
        super().__init__()
        self.autocast = autocast
        self.live = 0
        self.peak = 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refs: set[weakref.ref] = set()
        self._weight_cache: dict[int, torch.Tensor] = {}  # autocast's cast-weight cache (per call)

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage in self._seen:
            return
        nbytes = storage.nbytes()
        self._seen[storage] = nbytes

        def released(ref: weakref.ref, nbytes: int = nbytes) -> None:
            self._refs.discard(ref)
            self.live -= nbytes

        self._refs.add(weakref.ref(storage, released))
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def _cast(self, t: object, dtype: torch.dtype) -> object:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == dtype:
            return t
        if t.requires_grad and t.is_leaf:  # a weight: autocast casts it once and keeps the copy
            cached = self._weight_cache.get(id(t))
            if cached is None or cached.dtype != dtype:
                cached = self._weight_cache[id(t)] = t.to(dtype)
                self._track(cached)
            return cached
        cast = t.to(dtype)
        self._track(cast)
        return cast

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.autocast is not None:
            name = func.overloadpacket.__name__
            if name in LOW_PRECISION_OPS:
                args, kwargs = tree_map(lambda t: self._cast(t, self.autocast), (args, kwargs))
            elif name in FP32_OPS:
                args, kwargs = tree_map(lambda t: self._cast(t, torch.float32), (args, kwargs))
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


# ---------------------------------------------------------------------------------- cases
def run_case(model: LSeg, case: str, size: int, labels: int, window_batch: int, device: torch.device) -> None:
    """One image through the Predictor's arithmetic for ``case`` (no host copies)."""
    cfg = model.config
    value = pad_value(cfg.mean, cfg.std).to(device)
    x = torch.randn(1, 3, size, size, device=device)
    text = model.encode_text([f"class {i}" for i in range(labels)])

    def logits(batch: torch.Tensor) -> torch.Tensor:
        return model(batch, text).float()

    if case == "single":
        single_scale(logits, x, value)
    elif case == "features":
        side = -(-size // 32) * 32
        F.normalize(model.encode_image(pad_to(x, side, side, value)).float(), dim=1)
    elif case == "sliding":
        multi_scale(logits, x, value, MultiScaleConfig.sliding_window(batch_size=window_batch))
    elif case == "multiscale":
        multi_scale(logits, x, value, MultiScaleConfig(batch_size=window_batch))
    else:
        raise ValueError(f"unknown case {case!r}; expected one of {CASES}")


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def measure_cuda(model: LSeg, case: str, size: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Real ``max_memory_allocated`` on a GPU, under autocast."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    amp = (
        torch.autocast("cuda", dtype=DTYPES[args.dtype]) if args.dtype != "fp32" else contextlib.nullcontext()
    )
    start = time.perf_counter()
    try:
        with torch.inference_mode(), amp:
            run_case(model, case, size, args.labels, args.window_batch, device)
        torch.cuda.synchronize(device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"peak_gib": None, "oom": True}
    return {
        "peak_gib": torch.cuda.max_memory_allocated(device) / GiB,
        "reserved_gib": torch.cuda.max_memory_reserved(device) / GiB,
        "seconds": time.perf_counter() - start,
        "oom": False,
    }


def measure_accounted(
    model: LSeg,
    case: str,
    size: int,
    args: argparse.Namespace,
    device: torch.device,
    fake: FakeTensorMode | None,
) -> dict:
    """Weights + the peak of live tensor bytes, on fake CUDA tensors (``fake``) or real CPU ones."""
    dtype = DTYPES[args.dtype]
    if fake is None:  # a real CPU run: the real autocast, counted by the mode
        counter = LiveTensorBytes()
        amp = torch.autocast("cpu", dtype=dtype) if args.dtype != "fp32" else contextlib.nullcontext()
    else:
        counter = LiveTensorBytes(autocast=None if args.dtype == "fp32" else dtype)
        amp = contextlib.nullcontext()
    model.clear_text_cache()
    start = time.perf_counter()
    with fake or contextlib.nullcontext(), counter, torch.inference_mode(), amp:
        run_case(model, case, size, args.labels, args.window_batch, device)
    return {
        "peak_gib": (weight_bytes(model) + counter.peak) / GiB,
        "activations_gib": counter.peak / GiB,
        "seconds": time.perf_counter() - start,
        "oom": False,
    }


def fake_cuda_model(model: LSeg) -> tuple[LSeg, FakeTensorMode]:
    """The model's parameters as fake CUDA tensors (no GPU needed; the real CPU weights are untouched)."""
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        model = model.to("cuda")
    return model, fake


# ---------------------------------------------------------------------------------- main
def check_estimator(args: argparse.Namespace) -> list[dict]:
    """The same small runs counted on real CPU tensors and on fake CUDA tensors (fp32: must agree)."""
    rows = []
    for dtype in ("fp32", args.dtype):
        sub = argparse.Namespace(**{**vars(args), "dtype": dtype})
        torch.manual_seed(0)
        real = create_model("lseg_tiny").eval()
        fake_model, fake = fake_cuda_model(create_model("lseg_tiny").eval())
        for case in ("single", "sliding"):
            r = measure_accounted(real, case, 256, sub, torch.device("cpu"), None)
            f = measure_accounted(fake_model, case, 256, sub, torch.device("cuda"), fake)
            rows.append(
                {"case": case, "dtype": dtype, "real_cpu_gib": r["peak_gib"], "fake_cuda_gib": f["peak_gib"]}
            )
            print(
                f"  check lseg_tiny 256² {case:<10} {dtype}: real CPU {r['peak_gib'] * 1024:8.2f} MiB   "
                f"fake CUDA {f['peak_gib'] * 1024:8.2f} MiB"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--variant", default="lseg_vitl16_384", help="random-weight model (default: lseg_vitl16_384)"
    )
    p.add_argument(
        "--device", default="auto", help="cuda (measure) or cpu (estimate for CUDA); auto: cuda if present"
    )
    p.add_argument("--size", type=int, nargs="+", default=[1024, 2048], help="square image sides")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default="bf16", help="autocast precision (default: bf16)"
    )
    p.add_argument("--labels", type=int, default=150, help="labels (default: 150, as ADE20K)")
    p.add_argument("--window-batch", type=int, default=8, help="windows per call for sliding/multiscale")
    p.add_argument(
        "--gpu-gib", type=float, default=80.0, help="memory of the GPU to compare with (default 80)"
    )
    p.add_argument("--check", action="store_true", help="first compare real CPU and fake CUDA accounting")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    real_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda")
    result: dict = {
        "benchmark": "bench_memory",
        "variant": args.variant,
        "dtype": args.dtype,
        "labels": args.labels,
        "window_batch": args.window_batch,
        "method": "cuda max_memory_allocated" if real_cuda else "estimate: fake CUDA tensors",
        "machine": machine_info(device if real_cuda else torch.device("cpu")),
        "rows": [],
    }
    if real_cuda:
        result["machine"]["gpu"] = torch.cuda.get_device_name(device)
    print(f"{args.variant}, {args.dtype}, {args.labels} labels, {result['method']}")
    if args.check:
        result["check"] = check_estimator(args)

    torch.manual_seed(0)
    model = create_model(args.variant).eval()
    fake = None
    if real_cuda:
        model = model.to(device)
    else:
        model, fake = fake_cuda_model(model)

    def measure(case: str, size: int) -> dict:
        if real_cuda:
            return measure_cuda(model, case, size, args, device)
        return measure_accounted(model, case, size, args, device, fake)

    result["weights_gib"] = weight_bytes(model) / GiB
    print(f"weights {result['weights_gib']:.2f} GiB")
    print(f"{'case':<12}{'image':>11}{'peak GiB':>10}{'fits ' + format(args.gpu_gib, 'g') + ' GiB':>14}")
    for size in args.size:
        for case in args.cases:
            row = {"case": case, "size": size, **measure(case, size)}
            result["rows"].append(row)
            peak = row["peak_gib"]
            fits = "OOM" if row["oom"] else ("yes" if peak <= args.gpu_gib else "no")
            shown = "-" if peak is None else f"{peak:.2f}"
            print(f"{case:<12}{f'{size}x{size}':>11}{shown:>10}{fits:>14}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
