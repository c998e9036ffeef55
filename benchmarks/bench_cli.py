"""Throughput of ``langseg segment`` and ``langseg features`` on a folder of generated images.

Each configuration runs the real command (the CLI entry point, in this process) on the same folder
into a fresh output folder. Reported: wall-clock images/s including weight loading, and the rate
the command itself reports (decode + network + writing, after loading). Default model: a
random-weight ``lseg_tiny`` saved in our format; ``--weights`` takes any name or path, ``--model``
builds a random network of another variant (e.g. ``lseg_vitl16_384`` for real-size timings).

    python benchmarks/bench_cli.py
    python benchmarks/bench_cli.py --images 32 --size 640x480 --multi-scale
    python benchmarks/bench_cli.py --model lseg_vitl16_384 --device cuda --precision fp16 --out bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import langseg
from langseg.cli import main as cli_main
from langseg.models import create_model, save_pretrained


def make_folder(root: Path, n: int, width: int, height: int, seed: int = 0) -> Path:
    """``n`` JPEGs with smooth structure plus noise (decoding cost like photos, unlike flat colour)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        base = np.stack(
            [
                np.sin(xx / rng.uniform(20, 90) + i),
                np.cos(yy / rng.uniform(20, 90)),
                np.sin((xx + yy) / rng.uniform(30, 120)),
            ],
            axis=-1,
        )
        img = (base * 80 + 128 + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"img_{i:04d}.jpg", quality=90)
    return root


def run_command(argv: list[str]) -> tuple[int, float, float | None, str]:
    """Run the CLI; return (exit code, wall seconds, the rate it printed, captured stdout)."""
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = cli_main(argv)
    wall = time.perf_counter() - start
    match = re.search(r"\(([\d.]+) images/s\)", out.getvalue())
    return code, wall, float(match.group(1)) if match else None, out.getvalue()


def configurations(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    common = ["--device", args.device, "--precision", args.precision]
    runs = [
        ("segment", ["segment", "--labels", args.labels, "--batch-size", "1", *common]),
        (
            f"segment batch {args.batch_size}",
            ["segment", "--labels", args.labels, "--batch-size", str(args.batch_size), *common],
        ),
        (
            "segment --no-overlay",
            [
                "segment",
                "--labels",
                args.labels,
                "--batch-size",
                str(args.batch_size),
                "--no-overlay",
                *common,
            ],
        ),
        ("features half npy", ["features", *common]),
        ("features --pca-preview", ["features", "--pca-preview", *common]),
        ("features full float32", ["features", "--resolution", "full", "--dtype", "float32", *common]),
    ]
    if args.multi_scale:
        runs += [
            ("segment --multi-scale", ["segment", "--labels", args.labels, "--multi-scale", *common]),
            ("features --multi-scale", ["features", "--multi-scale", *common]),
        ]
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=None, help="weights name or path (default: random --model)")
    parser.add_argument("--model", default="lseg_tiny", help="random-weight variant when no --weights")
    parser.add_argument("--images", type=int, default=16, help="images in the folder")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the images")
    parser.add_argument("--labels", default="sky,tree,grass,house,road,car,person,other")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument(
        "--multi-scale", action="store_true", help="also time the official multi-scale protocol"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="langseg-bench-") as tmp:
        tmp = Path(tmp)
        folder = make_folder(tmp / "images", args.images, width, height)
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            weights = str(save_pretrained(create_model(args.model).eval(), tmp / "weights"))
        run_command(
            [
                "segment",
                str(folder / "img_0000.jpg"),
                "--weights",
                weights,
                "--out",
                str(tmp / "warm"),
                "--labels",
                args.labels,
                "--device",
                args.device,
            ]
        )  # imports, caches, lazy init
        results = []
        for k, (name, argv) in enumerate(configurations(args)):
            code, wall, rate, _ = run_command(
                [argv[0], str(folder), "--weights", weights, "--out", str(tmp / f"out{k}"), *argv[1:]]
            )
            if code != 0:
                raise SystemExit(f"{name}: the command failed with exit code {code}")
            results.append(
                {
                    "run": name,
                    "images": args.images,
                    "wall_s": round(wall, 3),
                    "images_per_s_wall": round(args.images / wall, 3),
                    "images_per_s_command": rate,
                }
            )
            print(f"  {name}: {args.images / wall:.2f} images/s", file=sys.stderr)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nlangseg {langseg.__version__} | {args.model if args.weights is None else args.weights} | "
        f"{args.images} images {width}x{height} | device {args.device} {args.precision} | "
        f"torch threads {torch.get_num_threads()} | peak RSS {peak_mb:.0f} MB"
    )
    print(f"{'run':28s} {'wall s':>8s} {'img/s (wall)':>13s} {'img/s (command)':>16s}")
    for r in results:
        cmd = f"{r['images_per_s_command']:.2f}" if r["images_per_s_command"] is not None else "-"
        print(f"{r['run']:28s} {r['wall_s']:8.2f} {r['images_per_s_wall']:13.2f} {cmd:>16s}")
    if args.out is not None:
        payload = {
            "langseg": langseg.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "weights": args.weights,
            "model": args.model,
            "size": [width, height],
            "device": args.device,
            "precision": args.precision,
            "peak_rss_mb": round(peak_mb, 1),
            "results": results,
        }
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
