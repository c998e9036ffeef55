"""Scaling of ``langseg features`` over processes: the same inputs with 1 and with N processes.

Each run starts its processes as torchrun would (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the
environment, one thread each by default) and runs the real command into a fresh folder; on CPU the
processes talk over gloo, on CUDA over NCCL with one GPU per process. Reported per run: wall seconds
from start to the last process's exit (forking, joining the group and loading weights included),
the images/s the command printed (after loading), and the ratio against the 1-process run.

    python benchmarks/bench_scale.py                              # tiny model, 16 images, 1 and 2 CPU processes
    python benchmarks/bench_scale.py --images 64 --procs 1,2,4
    python benchmarks/bench_scale.py --device cuda --procs 1,8 --model lseg_vitl16_384 --size 640x480
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import make_folder  # noqa: E402 (the benchmarks' shared input generator)

from langseg.cli import main as cli_main  # noqa: E402
from langseg.models import create_model, save_pretrained  # noqa: E402

RATE = re.compile(r"\(([0-9.]+) images/s")


def _worker(rank: int, world: int, port: int, argv: list[str], threads: int, log: Path) -> None:
    torch.set_num_threads(threads)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(argv)
    log.with_name(f"{log.name}.rank{rank}").write_text(json.dumps({"code": code, "stdout": out.getvalue()}))


def run(world: int, argv: list[str], threads: int, device: str, log: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    method = "spawn" if device.startswith("cuda") else "fork"
    start = time.perf_counter()
    mp.start_processes(
        _worker, args=(world, port, argv, threads, log), nprocs=world, join=True, start_method=method
    )
    wall = time.perf_counter() - start
    result = json.loads(log.with_name(f"{log.name}.rank0").read_text())
    match = RATE.search(result["stdout"])
    return {
        "processes": world,
        "code": result["code"],
        "wall_s": wall,
        "rate": float(match[1]) if match else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the generated images")
    ap.add_argument("--procs", default="1,2", help="process counts to compare, the first is the baseline")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    ap.add_argument("--model", default="lseg_tiny", help="random-weight variant to time")
    ap.add_argument("--weights", default=None, help="a weights name or path instead of --model")
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    procs = [int(p) for p in args.procs.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_folder(root / "in", args.images, width, height)
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            save_pretrained(create_model(args.model).eval(), root / "weights")
            weights = str(root / "weights")
        rows = []
        for world in procs:
            argv = [
                "features", str(folder), "--out", str(root / f"out{world}"), "--weights", weights,
                "--device", args.device, "--batch-size", str(args.batch_size),
            ]  # fmt: skip
            rows.append(run(world, argv, args.threads, args.device, root / f"log{world}"))
    print(
        f"langseg features, {args.images} images {width}x{height}, model {args.weights or args.model}, "
        f"device {args.device}, {args.threads} thread(s) per process, {platform.processor() or platform.machine()}"
    )
    print(f"{'processes':>9}  {'wall s':>7}  {'images/s (wall)':>15}  {'images/s (cmd)':>14}  {'ratio':>6}")
    base = rows[0]
    for r in rows:
        per_wall = args.images / r["wall_s"]
        ratio = r["rate"] / base["rate"] if r["rate"] and base["rate"] else float("nan")
        print(
            f"{r['processes']:>9}  {r['wall_s']:>7.2f}  {per_wall:>15.2f}  {r['rate'] or float('nan'):>14.2f}  "
            f"{ratio:>6.2f}"
        )
    print("ratio: images/s the command printed (after loading), against the first row")


if __name__ == "__main__":
    main()
