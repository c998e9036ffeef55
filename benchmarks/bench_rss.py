"""Peak host memory (RSS) of ``langseg segment`` and of the server, vs image size and label count (CPU).

One process imports langseg and loads the model once; each row then runs in a forked child, and
the child's peak RSS comes from the kernel (``wait4``'s ``ru_maxrss``), so start-up is paid once and
every row starts from the same state. ``extra`` is a row's peak minus the peak of the same row on a
64x64 image (imports, model, text tower): what the image and its labels cost.

* ``cli`` rows call ``langseg.cli.main(["segment", IMAGE, "--labels", ...])`` (mask, overlay, JSON);
* ``server`` rows post the image to ``POST /api/segment`` of ``create_app`` (multipart parsing,
  memory budget, decoding, inference, mask PNG, base64), through Starlette's test client.

The model is the bundled lseg-toy: what is measured is the label maps and the per-pixel buffers,
not the network's activations, which ``max_side`` bounds. ``--source`` imports langseg from another
checkout's ``src`` (e.g. the code before a change). Linux only (``fork``, ``ru_maxrss`` in KiB).

    python benchmarks/bench_rss.py                                  # 1, 4, 10 MP x 8 and 64 labels
    python benchmarks/bench_rss.py --mp 1 10 --labels 64 --json benchmarks/results/rss.json
    python benchmarks/bench_rss.py --source /tmp/old/src --json old.json   # the same rows, other code
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

MIB = 2**20


def flat_png(path: Path, megapixels: float) -> Path:
    """A 4:3 image of ``megapixels`` with a soft gradient: a small file of many pixels."""
    import numpy as np
    from PIL import Image

    h = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    w = int(megapixels * 1e6 / h)
    row = np.linspace(40, 200, w).astype(np.uint8)
    img = np.broadcast_to(row[None, :, None], (h, w, 3))
    Image.fromarray(np.ascontiguousarray(img)).save(path, compress_level=1)
    return path


def labels(n: int) -> str:
    return ",".join(f"label{i}" for i in range(n))


def in_child(work) -> tuple[int, float]:
    """Run ``work()`` in a forked child; its peak RSS in bytes and its seconds."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: run, then leave without the parent's clean-up
        code = 1
        try:
            code = work()
        except BaseException as e:  # report; never return into the parent's code
            print(f"row failed: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"a row failed (exit {os.waitstatus_to_exitcode(status)})")
    return usage.ru_maxrss * 1024, time.perf_counter() - start


def cli_work(image: Path, n_labels: int, out: Path):
    def work() -> int:
        from langseg.cli import main

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return main(["segment", str(image), "--labels", labels(n_labels), "--out", str(out)])

    return work


def server_work(make_app, image: Path, n_labels: int):
    def work() -> int:
        from fastapi.testclient import TestClient

        client = TestClient(make_app())
        files = {"image": (image.name, image.read_bytes(), "image/png")}
        r = client.post("/api/segment", files=files, data={"labels": labels(n_labels)})
        if r.status_code != 200:
            print(f"HTTP {r.status_code}: {r.text[:300]}", file=sys.stderr)
            return 3
        return 0

    return work


def print_row(row: dict) -> None:
    extra = row.get("extra_mib")
    shown = "     -" if extra is None else f"{extra:6.0f}"
    print(
        f"{row['where']:<8}{row['megapixels']:>7g} MP{row['labels']:>5} labels   peak {row['peak_mib']:6.0f} MiB"
        f"   extra {shown} MiB   {row['seconds']:6.1f} s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mp", type=float, nargs="+", default=[1, 4, 10], help="image sizes in megapixels")
    p.add_argument("--labels", type=int, nargs="+", default=[8, 64], help="label counts")
    p.add_argument("--where", nargs="+", choices=["cli", "server"], default=["cli", "server"])
    p.add_argument("--source", default=None, help="a src/ folder to import langseg from instead")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    if args.source:
        sys.path.insert(0, args.source)
    import torch

    import langseg
    from langseg.app import AppConfig, LocalBackend, create_app

    torch.set_num_threads(1)  # a thread pool made before fork would not survive it
    config = AppConfig(device="cpu")
    model = langseg.load_model(config.weights, device="cpu")

    def make_app():
        return create_app(config, LocalBackend(model, config), ui=False)

    result = {"benchmark": "bench_rss", "source": args.source or "installed", "rows": []}
    result["langseg_file"] = langseg.__file__
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        tmp = Path(tmp)
        small = flat_png(tmp / "small.png", 64 * 64 / 1e6)
        images = {mp: flat_png(tmp / f"{mp:g}mp.png", mp) for mp in args.mp}
        for where in args.where:
            for k in args.labels:
                runs = [(0.004, small), *images.items()]
                base = None
                for i, (mp, image) in enumerate(runs):
                    if where == "cli":
                        work = cli_work(image, k, tmp / f"out-{k}-{i}")
                    else:
                        work = server_work(make_app, image, k)
                    peak, seconds = in_child(work)
                    row = {"where": where, "megapixels": mp, "labels": k, "peak_mib": peak / MIB}
                    row["seconds"] = seconds
                    if base is None:
                        base = peak
                    else:
                        row["extra_mib"] = (peak - base) / MIB
                    result["rows"].append(row)
                    print_row(row)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
