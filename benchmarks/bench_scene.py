"""Scene fusion cost: the network per frame next to projection + accumulation per frame, same run.

A synthetic room (a 6 x 6 x 3 m box) is sampled with ``--points`` points on its walls, floor and
ceiling; a camera at its centre turns around, and each frame's depth map is the exact box depth. For
each frame the benchmark times, separately and synchronised:

* ``network``: ``LSegPredictor.features`` of a ``--size`` frame (random pixels: the cost does not
  depend on them) under ``--precision``;
* ``fusion``: :func:`langseg.scenes.fusion.fuse_frame` - projection of every point, frustum and
  depth test, feature lookup and ``index_add_`` into the ``(N, D)`` sums - also split into
  ``projection`` (:func:`visible_points` alone) and the rest.

It prints frames/s of the two together, peak memory (CUDA ``max_memory_allocated``; CPU peak RSS of
the process), fusion ms per frame per million points and the ratio fusion / network (the target:
below 10 % for ViT-L/16 at 640x480 with 1 M points). The model has random weights (``--variant``,
no download): the cost is the same as with trained ones.

    python benchmarks/bench_scene.py                                   # ViT-L/16, 640x480, 1 M points
    python benchmarks/bench_scene.py --device cuda --precision bf16 --frames 20 --json out.json
    python benchmarks/bench_scene.py --variant lseg_tiny --size 64x48 --points 20000 --frames 2
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import machine_info  # noqa: E402

from langseg.models import create_model  # noqa: E402
from langseg.predictor import LSegPredictor, resolve_device  # noqa: E402
from langseg.scenes.fusion import Accumulator, FuseConfig, fuse_frame  # noqa: E402
from langseg.scenes.geometry import visible_points  # noqa: E402
from langseg.scenes.layouts import Frame  # noqa: E402

ROOM = np.array([3.0, 3.0, 3.0])  # half extents in x, y; height in z (floor at 0)
EYE = np.array([0.0, 0.0, 1.5])


def room_points(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 3)`` points spread over the box's six faces in proportion to their areas."""
    rng = np.random.default_rng(seed)
    X, Y, Z = ROOM
    faces = [  # (fixed axis, value, area)
        (0, -X, 2 * Y * Z), (0, X, 2 * Y * Z), (1, -Y, 2 * X * Z), (1, Y, 2 * X * Z),
        (2, 0.0, 4 * X * Y), (2, Z, 4 * X * Y),
    ]  # fmt: skip
    areas = np.array([a for _, _, a in faces])
    which = rng.choice(len(faces), size=n, p=areas / areas.sum())
    pts = np.column_stack([rng.uniform(-X, X, n), rng.uniform(-Y, Y, n), rng.uniform(0, Z, n)])
    for k, (axis, value, _) in enumerate(faces):
        pts[which == k, axis] = value
    return pts.astype(np.float32)


def camera(yaw: float) -> np.ndarray:
    """Camera-to-world pose at the room centre, turned by ``yaw``, looking level (OpenCV axes)."""
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    down = np.cross(forward, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, forward], axis=1)
    T[:3, 3] = EYE
    return T


def box_depth(T: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Exact depth (along the optical axis) of the box's inside, seen from ``T``: ``(H, W)`` metres."""
    W, H = size
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) @ T[:3, :3].T
    lo, hi = np.array([-ROOM[0], -ROOM[1], 0.0]), ROOM
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rays > 0, (hi - EYE) / rays, np.where(rays < 0, (lo - EYE) / rays, np.inf))
    return torch.from_numpy(t.min(axis=-1).astype(np.float32))  # z = 1 per unit ray: t is the depth


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    W, H = args.size
    torch.manual_seed(0)
    model = create_model(args.variant).eval()
    predictor = LSegPredictor(model, device=device, precision=args.precision)
    D = model.config.embed_dim
    fx = W / (2 * math.tan(math.radians(35)))
    K = np.array([[fx, 0, (W - 1) / 2], [0, fx, (H - 1) / 2], [0, 0, 1]])
    pts = torch.from_numpy(room_points(args.points)).to(device).T.contiguous()  # (3, N)
    acc = Accumulator(args.points, D, device)
    config = FuseConfig()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(args.warmup + args.frames):
        T = camera(2 * math.pi * i / max(args.frames, 1))
        frame = Frame(f"{i}", Path(), None, T, K, K)
        depth = box_depth(T, K, (W, H)).to(device)
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        sync(device)
        t0 = time.perf_counter()
        fmap = predictor.features(image)  # (D, h, w) on the device
        sync(device)
        t1 = time.perf_counter()
        vis = fuse_frame(acc, pts, frame, (W, H), fmap, depth, config)
        sync(device)
        t2 = time.perf_counter()
        visible_points(
            pts, torch.as_tensor(T, device=device), torch.as_tensor(K, dtype=torch.float32, device=device),
            (W, H), depth=depth,
        )  # fmt: skip
        sync(device)
        t3 = time.perf_counter()
        if i >= args.warmup:
            rows.append(
                {
                    "network_s": t1 - t0,
                    "fusion_s": t2 - t1,
                    "projection_s": t3 - t2,
                    "visible": len(vis.index),
                }
            )
    n = len(rows)
    network = sum(r["network_s"] for r in rows) / n
    fusion = sum(r["fusion_s"] for r in rows) / n
    projection = sum(r["projection_s"] for r in rows) / n
    mpoints = args.points / 1e6
    return {
        "variant": args.variant,
        "size": f"{W}x{H}",
        "feature_map": "x".join(str(s) for s in reversed(fmap.shape[1:])),
        "embed_dim": D,
        "points": args.points,
        "visible_per_frame": round(sum(r["visible"] for r in rows) / n),
        "frames": n,
        "device": str(device),
        "precision": predictor.precision,
        "network_ms_per_frame": round(network * 1e3, 2),
        "fusion_ms_per_frame": round(fusion * 1e3, 2),
        "projection_ms_per_frame": round(projection * 1e3, 2),
        "fusion_ms_per_frame_per_mpoint": round(fusion * 1e3 / mpoints, 2),
        "fusion_over_network": round(fusion / network, 4),
        "frames_per_s": round(1 / (network + fusion), 3),
        "peak_memory_gib": round(peak_memory_gib(device), 3),
        "accumulator_gib": round((args.points * (D + 2) * 4) / 2**30, 3),
        "machine": machine_info(device),
    }


def size_arg(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="lseg_vitl16_384", help="model architecture (random weights)")
    p.add_argument("--size", type=size_arg, default=(640, 480), help="frame WxH (default 640x480)")
    p.add_argument("--points", type=int, default=1_000_000, help="points in the map (default 1000000)")
    p.add_argument("--frames", type=int, default=3, help="timed frames (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed frames first (default 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    result = run(args)
    print(
        f"{result['variant']} {result['size']} on {result['device']} ({result['precision']}), "
        f"{result['points']:,} points ({result['visible_per_frame']:,} visible per frame), D={result['embed_dim']}"
    )
    print(f"  network              {result['network_ms_per_frame']:10.1f} ms/frame")
    print(
        f"  projection+fusion    {result['fusion_ms_per_frame']:10.1f} ms/frame "
        f"({result['fusion_ms_per_frame_per_mpoint']:.1f} ms per frame per million points; "
        f"projection alone {result['projection_ms_per_frame']:.1f} ms)"
    )
    print(f"  fusion / network     {result['fusion_over_network']:10.1%}   (target < 10 %)")
    print(f"  frames/s             {result['frames_per_s']:10.3f}")
    print(
        f"  peak memory          {result['peak_memory_gib']:10.2f} GiB "
        f"({'CUDA allocated' if result['device'].startswith('cuda') else 'process RSS'}; "
        f"accumulators {result['accumulator_gib']:.2f} GiB)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
