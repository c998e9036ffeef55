"""Evaluation throughput: images/s at single scale and with the official multi-scale protocol.

Runs :func:`langseg.eval.evaluate` on a synthetic generic-layout dataset (random images and masks)
with a random-weight model (default ``lseg_tiny``; ``--model lseg_vitl16_384`` for the real size) or
given weights. Multi-scale rows, all driven by the same :func:`langseg.inference.multi_scale`:

* ``batched``       - our fast paths, ``--window-batch`` windows (and their flips) per call, cached labels;
* ``1 window/call`` - our fast paths, one window and its flip per call (``MultiScaleConfig(batch_size=1)``);
* ``official-like`` - what the official evaluator and network do, in fp32: one call for each window
  and another for its flipped copy, labels re-tokenized and re-encoded by the text tower on every
  call, explicit attention and the official op order (``official_forward`` of bench_inference.py,
  with the model in ``FastPaths.reference()`` mode).

It prints the speed-up of the batched row over the other two (measured in the same run), the mIoU of
every row (fp32 official-like and fast rows should agree: equal, or within float rounding) and, for
the multi-scale rows, the largest logit difference from the official-like row on the first image.
With random weights the label map is often one class everywhere, so the logit difference is the
sharper check.

    python benchmarks/bench_eval.py                                    # small: lseg_tiny, 2 images, 10 labels
    python benchmarks/bench_eval.py --images 4 --size 512x683 --classes 150          # ADE20K-like
    python benchmarks/bench_eval.py --model lseg_vitl16_384 --device cuda --precision bf16 --classes 150 \\
        --out bench.json
    python benchmarks/bench_eval.py ... --skip-official --skip-unbatched               # fast rows only
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import langseg
from langseg.accel import autocast
from langseg.data import GenericSegmentation
from langseg.eval.evaluate import evaluate
from langseg.inference import MultiScaleConfig, scale_size
from langseg.models import FastPaths, LSeg, create_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from bench_inference import official_forward  # noqa: E402

MIOU_TOLERANCE = 1e-4  # fp32 official-like vs fast: the same function up to float rounding


def make_dataset(root: Path, n: int, height: int, width: int, num_classes: int, seed: int = 0) -> Path:
    """``n`` random images with random masks in the generic layout."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    (root / "labels.txt").write_text("\n".join(f"class {i}" for i in range(num_classes)) + "\n")
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        Image.fromarray(rng.integers(0, num_classes, (height, width)).astype(np.uint8), "L").save(
            root / "masks" / f"{i}.png"
        )
    return root


def windows_per_image(height: int, width: int, cfg: MultiScaleConfig) -> int:
    """Network windows of the official evaluator for one image (each run twice with flip)."""
    total = 0
    for s in cfg.scales:
        h, w = scale_size(height, width, s, cfg.base_size)
        if max(h, w) <= cfg.crop_size:
            total += 1
            continue
        ph, pw = max(h, cfg.crop_size), max(w, cfg.crop_size)
        total += (math.ceil((ph - cfg.crop_size) / cfg.stride) + 1) * (
            math.ceil((pw - cfg.crop_size) / cfg.stride) + 1
        )
    return total


class RecordingPredictor(langseg.LSegPredictor):
    """An :class:`LSegPredictor` that keeps the first image's logits (on the CPU), to compare rows."""

    first_logits: torch.Tensor | None = None  # (K, h, w) float32

    def logits_tensor(self, x: torch.Tensor, text) -> torch.Tensor:
        out = self.compute_logits(x, text)
        if self.first_logits is None:
            self.first_logits = out[0].float().cpu()
        return out

    def compute_logits(self, x: torch.Tensor, text) -> torch.Tensor:
        return super().logits_tensor(x, text)


class OfficialLikePredictor(RecordingPredictor):
    """Multi-scale evaluation as the official code runs it, in fp32.

    The same :func:`multi_scale` drives it, with one window per step; its map function makes one
    :func:`official_forward` call per window and another for the flipped copy, and each call
    re-tokenizes and re-encodes the label names. The "text" this predictor passes from
    :meth:`text_features` to :meth:`compute_logits` is therefore the list of names, not embeddings.
    The model must be in ``FastPaths.reference()`` mode while it runs (:func:`reference_paths`).
    """

    def __init__(self, model: LSeg, *, device: torch.device, cfg: MultiScaleConfig) -> None:
        super().__init__(
            model, device=device, precision="fp32", multi_scale=dataclasses.replace(cfg, batch_size=1)
        )

    def text_features(self, labels: Sequence[str | Sequence[str]]) -> tuple[list[str], list[str]]:
        names = [lab if isinstance(lab, str) else lab[0] for lab in labels]
        if self.templates or any(not isinstance(lab, str) and len(lab) != 1 for lab in labels):
            raise ValueError("the official-like row takes one name per label (no synonyms or templates)")
        return names, names

    def compute_logits(self, x: torch.Tensor, text: list[str]) -> torch.Tensor:
        """Normalized ``(B, 3, h, w)`` -> ``(B, K, h, w)`` float32 multi-scale logits."""

        def fn(
            batch: torch.Tensor,
        ) -> torch.Tensor:  # (N, 3, crop, crop) -> (N, K, crop, crop), one call each
            with torch.inference_mode():
                return torch.cat([official_forward(self.model, b[None], text) for b in batch], dim=0)

        return self._run_protocol(fn, x)  # the Predictor's multi-scale loop, one image at a time


@contextlib.contextmanager
def reference_paths(model: LSeg) -> Iterator[None]:
    """Run the block with every fast path off (the official op order), then restore the paths."""
    previous = model.fast_paths
    model.set_fast_paths(FastPaths.reference())
    try:
        yield
    finally:
        model.set_fast_paths(previous)


def warm_up(call, device: torch.device) -> None:
    """One untimed network call at a row's per-call shape (kernel selection, packing, caches)."""
    with torch.inference_mode():
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(predictor: RecordingPredictor, ds: GenericSegmentation, batch_size: int = 1) -> dict:
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = evaluate(predictor, ds, batch_size=batch_size, progress=False)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "precision": predictor.precision,
        "seconds": round(seconds, 3),
        "images_per_s": round(result.images / seconds, 4),
        "mIoU": result.metrics()["mIoU"],
        "_logits": predictor.first_logits,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lseg_tiny", help="random-weight variant (see langseg.list_models())")
    p.add_argument("--weights", default=None, help="real weights instead of a random model")
    p.add_argument("--images", type=int, default=2, help="images per measurement")
    p.add_argument("--size", default="512x683", help="HxW of the synthetic images (ADE20K-like default)")
    p.add_argument("--classes", type=int, default=10, help="labels per image (ADE20K: 150)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="autocast of the fast rows (the official-like row is always fp32)",
    )
    p.add_argument("--window-batch", type=int, default=8, help="batched multi-scale windows per call")
    p.add_argument("--batch-size", type=int, default=4, help="batched single-scale images per call")
    p.add_argument("--skip-unbatched", action="store_true", help="skip the fast one-window-per-call row")
    p.add_argument("--skip-official", action="store_true", help="skip the slow official-like row")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: print only)")
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))

    device = langseg.resolve_device(args.device)
    torch.manual_seed(0)
    model = (
        langseg.load_model(args.weights, device=device)
        if args.weights
        else create_model(args.model).eval().to(device)
    )
    cfg = MultiScaleConfig(batch_size=args.window_batch)

    def crops(n: int) -> torch.Tensor:  # a row's per-call input shape, for its warm-up
        return torch.zeros(n, 3, cfg.crop_size, cfg.crop_size, device=device)

    batched_name = f"multi-scale, {args.window_batch} windows/call"
    one_name, official_name = "multi-scale, 1 window/call", "multi-scale, official-like"
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ds = GenericSegmentation(
            make_dataset(Path(tmp) / "data", args.images, height, width, args.classes), None
        )
        text = model.encode_text(ds.labels)
        single = RecordingPredictor(model, device=device, precision=args.precision)
        evaluate(single, ds, limit=1, progress=False)  # warm-up: text encoding, kernels
        rows["single-scale, 1 image/call"] = timed(single, ds, 1)
        rows[f"single-scale, {args.batch_size} images/call"] = timed(single, ds, args.batch_size)
        with autocast(device, args.precision):
            warm_up(lambda: model(crops(2 * args.window_batch), text), device)
        batched = RecordingPredictor(model, device=device, precision=args.precision, multi_scale=cfg)
        rows[batched_name] = timed(batched, ds)
        if not args.skip_unbatched:
            with autocast(device, args.precision):
                warm_up(lambda: model(crops(2), text), device)
            one = RecordingPredictor(
                model,
                device=device,
                precision=args.precision,
                multi_scale=dataclasses.replace(cfg, batch_size=1),
            )
            rows[one_name] = timed(one, ds)
        if not args.skip_official:
            with reference_paths(model):
                warm_up(lambda: official_forward(model, crops(1), list(ds.labels)), device)
                rows[official_name] = timed(OfficialLikePredictor(model, device=device, cfg=cfg), ds)

    logits = {name: r.pop("_logits") for name, r in rows.items()}  # image 0 of each row
    reference = logits.get(official_name)
    for name, r in rows.items():  # multi-scale rows: largest logit difference from official-like
        same_shape = reference is not None and name.startswith("multi-scale")
        r["max_abs_logit_diff_vs_official_like"] = (
            float((logits[name] - reference).abs().max()) if same_shape else None
        )

    n_windows = windows_per_image(height, width, cfg)
    print(
        f"{args.weights or args.model} on {device}, {args.images} images {height}x{width}, {args.classes} labels; "
        f"multi-scale: {n_windows} windows x 2 flips per image"
    )
    print(
        f"{'protocol':<30} {'precision':>9} {'images/s':>9} {'seconds':>8} {'mIoU':>9} {'max|dlogit| vs official':>24}"
    )
    for name, r in rows.items():
        diff = r["max_abs_logit_diff_vs_official_like"]
        diff_text = "-" if diff is None else f"{diff:.1e}"
        print(
            f"{name:<30} {r['precision']:>9} {r['images_per_s']:>9.4f} {r['seconds']:>8.2f} {r['mIoU']:>9.6f}"
            f" {diff_text:>24}"
        )
    speedups: dict[str, float] = {}
    for base in (official_name, one_name):
        if base in rows:
            speedups[base] = rows[base]["seconds"] / rows[batched_name]["seconds"]
            print(
                f"speed-up of {batched_name} ({args.precision}) over {base} ({rows[base]['precision']}): "
                f"{speedups[base]:.2f}x"
            )
    miou_delta = None
    if official_name in rows:
        miou_delta = abs(rows[official_name]["mIoU"] - rows[batched_name]["mIoU"])
        if args.precision == "fp32":
            verdict = "agree" if miou_delta <= MIOU_TOLERANCE else f"DIFFER (tolerance {MIOU_TOLERANCE:g})"
        else:
            verdict = f"{args.precision} vs fp32: rounding can flip near-tied pixels"
        print(
            f"mIoU official-like {rows[official_name]['mIoU']:.6f}, batched {rows[batched_name]['mIoU']:.6f}: "
            f"|diff| {miou_delta:.2e}, {verdict}"
        )
    if args.out:
        record = {
            "benchmark": "bench_eval",
            "model": args.weights or args.model,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.machine(),
            "precision": args.precision,
            "images": args.images,
            "size": [height, width],
            "classes": args.classes,
            "windows_per_image": n_windows,
            "window_batch": args.window_batch,
            "results": rows,
            "batched_window_speedup": speedups.get(one_name),
            "speedup_vs_official_like": speedups.get(official_name),
            "miou_abs_diff_official_like": miou_delta,
            "torch": torch.__version__,
            "langseg": langseg.__version__,
            "threads": torch.get_num_threads(),
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
