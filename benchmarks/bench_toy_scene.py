"""The toy RGB-D scene: render time, and how well ``lseg-toy`` segments its frames.

Renders ``langseg data toy-scene`` (generic layout) into a temporary folder, then reads the files back
and prints:

* render time per frame (ray casting, 2 x 2 supersampled colour, files written);
* the 2D mIoU of the bundled ``lseg-toy`` model (single scale) on the colour frames against the
  rendered per-frame label images: the frames must be segmentable for fused 3D maps to be scored;
* an upper bound for fusion: the ground-truth label images fused onto ``points.ply`` by per-point
  majority vote, with and without an occlusion test (OpenScene's ``|d - z| <= 0.25 d``), scored
  against ``gt_labels.npy``. The gap is what the occluder costs a fusion that skips the test.

    python benchmarks/bench_toy_scene.py
    python benchmarks/bench_toy_scene.py --frames 48 --size 320x240 --seed 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import langseg
from langseg.data.toy_scene import render_toy_scene
from langseg.metrics import confusion_matrix, miou


def fuse_labels(root: Path, scene, occlusion: bool) -> np.ndarray:
    """Majority vote of the label images over the points each frame projects them onto -> ``(N,)``."""
    K = np.loadtxt(root / "intrinsics.txt")
    P = scene.points.astype(np.float64)
    votes = np.zeros((len(P), len(scene.labels)), np.int64)
    for stem in scene.stems:
        label = np.asarray(Image.open(root / "label" / f"{stem}.png")).astype(np.int64)
        depth = np.asarray(Image.open(root / "depth" / f"{stem}.png")).astype(np.float64) / 1000.0
        c2w = np.loadtxt(root / "pose" / f"{stem}.txt")
        cam = (P - c2w[:3, 3]) @ c2w[:3, :3]  # (N, 3) camera coordinates
        z = cam[:, 2]
        ok = z > 1e-3
        zs = np.where(ok, z, 1.0)
        u = np.rint(K[0, 0] * cam[:, 0] / zs + K[0, 2]).astype(np.int64)
        v = np.rint(K[1, 1] * cam[:, 1] / zs + K[1, 2]).astype(np.int64)
        H, W = depth.shape
        ok &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
        u, v = np.clip(u, 0, W - 1), np.clip(v, 0, H - 1)
        d = depth[v, u]
        if occlusion:
            ok &= np.abs(d - z) <= 0.25 * d
        np.add.at(votes, (np.nonzero(ok)[0], label[v, u][ok]), 1)
    return np.where(votes.sum(1) > 0, votes.argmax(1), -1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", default="160x120", help="WxH")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    width, height = (int(x) for x in args.size.split("x"))
    K = 5
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scene"
        start = time.perf_counter()
        scene = render_toy_scene(root, frames=args.frames, size=(width, height), seed=args.seed)
        render_s = time.perf_counter() - start

        predictor = langseg.LSegPredictor(langseg.load_model("lseg-toy"), device=args.device)
        conf = torch.zeros(K, K, dtype=torch.int64)
        start = time.perf_counter()
        for stem in scene.stems:
            pred = predictor.predict(Image.open(root / "color" / f"{stem}.png").convert("RGB")).labels
            target = np.asarray(Image.open(root / "label" / f"{stem}.png")).astype(np.int64)
            conf += confusion_matrix(pred.astype(np.int64), target, K, ignore_index=255).cpu()
        predict_s = time.perf_counter() - start
        mean, per_class = miou(conf)

        fused = {}
        for occlusion in (True, False):
            pred = fuse_labels(root, scene, occlusion)
            c = confusion_matrix(pred, scene.point_labels, K, ignore_index=-1)
            fused[occlusion] = miou(c)[0]

    F = args.frames
    print(f"toy scene: {F} frames of {width}x{height}, seed {args.seed}, {len(scene.points)} GT points")
    print(f"render: {render_s:.2f} s ({1000 * render_s / F:.0f} ms/frame, files included)")
    print(f"lseg-toy 2D mIoU: {100 * mean:.2f}  ({1000 * predict_s / F:.0f} ms/frame on {args.device})")
    for name, iou in zip(scene.labels, per_class.tolist()):
        print(f"  {name:<16} IoU {100 * iou:6.2f}")
    print(
        f"GT-label fusion, point mIoU: {100 * fused[True]:.2f} with occlusion test, {100 * fused[False]:.2f} without"
    )
    if args.json:
        record = {
            "frames": F,
            "size": [width, height],
            "seed": args.seed,
            "points": len(scene.points),
            "render_s": render_s,
            "miou_2d": mean,
            "iou_2d": dict(zip(scene.labels, per_class.tolist())),
            "gt_fusion_miou": {"occlusion_test": fused[True], "no_occlusion_test": fused[False]},
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
