"""Evaluation throughput: images/s at single scale and with the official multi-scale protocol.

Runs :func:`langseg.eval.evaluate` on a synthetic generic-layout dataset (random images and masks)
with a random-weight model (default ``lseg_tiny``; ``--model lseg_vitl16_384`` for the real size) or
given weights, and compares multi-scale with one window per network call (``MultiScaleConfig(batch_size=1)``,
as the official evaluator runs) against batched windows. Prints a table and writes JSON.

    python benchmarks/bench_eval.py --images 4 --size 512x683
    python benchmarks/bench_eval.py --model lseg_vitl16_384 --device cuda --precision fp16 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import langseg
from langseg.data import GenericSegmentation
from langseg.eval.evaluate import evaluate
from langseg.inference import MultiScaleConfig, scale_size
from langseg.models import create_model


def make_dataset(root: Path, n: int, height: int, width: int, num_classes: int, seed: int = 0) -> Path:
    """``n`` random images with random masks in the generic layout."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    (root / "labels.txt").write_text("\n".join(f"class {i}" for i in range(num_classes)) + "\n")
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, num_classes, (height, width)).astype(np.uint8), "L").save(
            root / "masks" / f"{i}.png")
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
        total += (math.ceil((ph - cfg.crop_size) / cfg.stride) + 1) * (math.ceil((pw - cfg.crop_size) / cfg.stride) + 1)
    return total


def timed(predictor: langseg.LSegPredictor, ds: GenericSegmentation, batch_size: int = 1) -> dict[str, float]:
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = evaluate(predictor, ds, batch_size=batch_size, progress=False)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "images_per_s": round(result.images / seconds, 4),
            "mIoU": round(result.metrics()["mIoU"], 6)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lseg_tiny", help="random-weight variant (see langseg.list_models())")
    p.add_argument("--weights", default=None, help="real weights instead of a random model")
    p.add_argument("--images", type=int, default=4, help="images per measurement")
    p.add_argument("--size", default="512x683", help="HxW of the synthetic images (ADE20K-like default)")
    p.add_argument("--classes", type=int, default=150, help="labels per image")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--window-batch", type=int, default=8, help="batched multi-scale windows per call")
    p.add_argument("--batch-size", type=int, default=4, help="batched single-scale images per call")
    p.add_argument("--skip-unbatched", action="store_true", help="skip the slow one-window-at-a-time run")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: print only)")
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))

    device = langseg.resolve_device(args.device)
    torch.manual_seed(0)
    model = (langseg.load_model(args.weights, device=device) if args.weights
             else create_model(args.model).eval().to(device))
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ds = GenericSegmentation(make_dataset(Path(tmp) / "data", args.images, height, width, args.classes), None)
        single = langseg.LSegPredictor(model, device=device, precision=args.precision)
        evaluate(single, ds, limit=1, progress=False)  # warm-up: text encoding, kernels
        rows["single-scale, 1 image/call"] = timed(single, ds, 1)
        rows[f"single-scale, {args.batch_size} images/call"] = timed(single, ds, args.batch_size)
        cfg = MultiScaleConfig(batch_size=args.window_batch)
        batched = langseg.LSegPredictor(model, device=device, precision=args.precision, multi_scale=cfg)
        rows[f"multi-scale, {args.window_batch} windows/call"] = timed(batched, ds)
        if not args.skip_unbatched:
            one = langseg.LSegPredictor(model, device=device, precision=args.precision,
                                        multi_scale=MultiScaleConfig(batch_size=1))
            rows["multi-scale, 1 window/call (official)"] = timed(one, ds)

    n_windows = windows_per_image(height, width, MultiScaleConfig())
    print(f"{args.weights or args.model} on {device} ({args.precision}), {args.images} images {height}x{width}, "
          f"{args.classes} labels; multi-scale: {n_windows} windows x 2 flips per image")
    print(f"{'protocol':<40} {'images/s':>10} {'seconds':>9}")
    for name, r in rows.items():
        print(f"{name:<40} {r['images_per_s']:>10.3f} {r['seconds']:>9.2f}")
    speedup = None
    if "multi-scale, 1 window/call (official)" in rows:
        speedup = rows["multi-scale, 1 window/call (official)"]["seconds"] / rows[
            f"multi-scale, {args.window_batch} windows/call"]["seconds"]
        print(f"batched windows speed-up over one window per call: {speedup:.2f}x")
    if args.out:
        record = {"benchmark": "bench_eval", "model": args.weights or args.model, "device": str(device),
                  "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
                  "precision": args.precision, "images": args.images, "size": [height, width],
                  "classes": args.classes, "windows_per_image": n_windows, "results": rows,
                  "batched_window_speedup": speedup, "torch": torch.__version__, "langseg": langseg.__version__,
                  "threads": torch.get_num_threads()}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
