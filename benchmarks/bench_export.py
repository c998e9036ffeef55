"""ONNX export: onnxruntime CPU against the eager model on the CPU, same input, same threads, one run.

Exports the network (random weights of a named variant, or ``--weights``) with labels baked in, then
times, interleaved, the eager model (default fast paths, ``model(images, labels)`` with cached text
embeddings, no gradient) and the onnxruntime CPU session on the same images, and prints one row per
engine: ms per call, images/s, the ratio to eager and the largest logit difference from eager.

    python benchmarks/bench_export.py                                         # lseg_tiny, 384x384
    python benchmarks/bench_export.py --variant lseg_vitb32_384 --size 384x480 --iters 5
    python benchmarks/bench_export.py --weights lseg-demo-vitl16 --size 480x480 --json export.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import langseg  # noqa: E402
from langseg.export import export_onnx, onnx_session  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="lseg_tiny", help="named variant with random weights")
    p.add_argument("--weights", help="weights to load instead of a random variant")
    p.add_argument("--size", default="384x384", help="HxW, multiples of 32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--labels", type=int, default=8, help="number of labels baked into the graph")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count()
    )
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    h, w = (int(x) for x in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = langseg.load_model(args.weights) if args.weights else langseg.create_model(args.variant).eval()
    labels = [f"thing {i}" for i in range(args.labels)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = export_onnx(model, Path(tmp) / "model.onnx", labels=labels)
        export_s = time.perf_counter() - t0
        session = onnx_session(result.path, threads=args.threads)
        images = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
        feed = {"images": images.numpy()}

        def eager() -> np.ndarray:
            with torch.no_grad():
                return model(images, labels).numpy()

        def onnx() -> np.ndarray:
            return session.run(["logits"], feed)[0]

        reference = eager()
        outputs = {"eager": reference, "onnxruntime": onnx()}  # warm-up
        times: dict[str, list[float]] = {"eager": [], "onnxruntime": []}
        for _ in range(args.iters):  # interleaved, so load changes hit both alike
            for name, fn in (("eager", eager), ("onnxruntime", onnx)):
                t = time.perf_counter()
                outputs[name] = fn()
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times["eager"])
    rows = []
    print(
        f"{model.config.name} {h}x{w} batch {args.batch}, {args.labels} labels, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}; export {export_s:.1f} s; "
        f"parity checks: "
        + ", ".join(f"{c.output} {c.size[0]}x{c.size[1]} {c.max_abs_diff:.2g}" for c in result.checks)
    )
    print(f"{'engine':12s} {'ms/call':>9s} {'img/s':>8s} {'vs eager':>9s} {'max|logit diff|':>16s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        diff = float(np.abs(outputs[name] - reference).max())
        rows.append(
            {
                "engine": name,
                "ms": med * 1e3,
                "images_per_s": args.batch / med,
                "speedup": base / med,
                "max_abs_diff": diff,
            }
        )
        print(f"{name:12s} {med * 1e3:9.1f} {args.batch / med:8.2f} {base / med:8.2f}x {diff:16.2e}")
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
