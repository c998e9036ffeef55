"""Training throughput and peak memory per configuration.

Runs the training step of ``langseg train`` (forward, pixel-wise cross-entropy against the config's
label count, backward, optimizer step with the recipe's groups) on synthetic batches of the config's
crop and per-device batch size, with random weights, at each ``--precision`` (fp32, or bf16/fp16
autocast with fp32 weights). Each (configuration, precision) runs in its own process so peak memory
is its own. The "vs fp32" column is the images/s ratio against the fp32 run of the same config in
this invocation (fp32 runs first). Also reports the augmentation throughput of one DataLoader worker.

    python benchmarks/bench_train.py                                   # all shipped configs, fp32 and bf16
    python benchmarks/bench_train.py --configs toy                     # the small one only
    python benchmarks/bench_train.py --configs toy ade20k_vitl16 --device cuda --precision fp32 bf16
    python benchmarks/bench_train.py --configs ade20k_vitb32 --crop 256 --steps 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("toy", "ade20k_vitb32", "ade20k_vitl16")
PRECISIONS = ("fp32", "bf16", "fp16")  # run order: fp32 first, the baseline of the "vs fp32" column
NUM_LABELS = {"ade20k": 150, "toy": 5}


def _peak_cpu_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_one(name: str, precision: str, args: argparse.Namespace) -> dict:
    """Time `args.steps` training steps of one config at one precision in this process."""
    import dataclasses

    import numpy as np
    import torch
    from PIL import Image

    from langseg.data.transforms import AugmentConfig, train_transform
    from langseg.train import load_config
    from langseg.train.module import segmentation_loss
    from langseg.train.params import build_optimizer, freeze_unused
    from langseg.train.run import build_model

    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    spec = dataclasses.replace(cfg.model, vit_weights=None, clip_weights=None, init=None)  # random weights
    batch = args.batch_size or cfg.data.batch_size
    crop = args.crop or cfg.data.crop_size
    kind = cfg.data.datasets[0].kind
    K = NUM_LABELS.get(kind, 150)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(spec)
    freeze_unused(model)
    model.to(device).train()
    optimizer = build_optimizer(model, cfg.optim, batch)
    labels = [f"class {i}" for i in range(K)]
    x = torch.randn(batch, 3, crop, crop, device=device)
    y = torch.randint(0, K, (batch, crop, crop), device=device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = segmentation_loss(model(x, model.encode_text(labels)), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / args.steps
    final_loss = float(loss)  # read after timing (no sync per step): a sanity check of the precision
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_cpu_mib()

    # augmentation cost of one worker on an ADE20K-sized image (toy: its own size)
    aug = AugmentConfig(cfg.data.base_size, cfg.data.crop_size, tuple(cfg.data.scale_range), cfg.data.flip)
    tf = train_transform(aug, model.config.mean, model.config.std)
    side = (683, 512) if kind == "ade20k" else (cfg.data.base_size, cfg.data.base_size)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (side[1], side[0], 3), dtype=np.uint8))
    mask = rng.integers(0, K, (side[1], side[0]))
    torch.manual_seed(0)  # the same random scales in every run
    n_aug, t1 = 20, time.perf_counter()
    for _ in range(n_aug):
        tf(img, mask)
    aug_rate = n_aug / (time.perf_counter() - t1)
    return {
        "config": name,
        "model": model.config.name,
        "device": str(device),
        "precision": precision,
        "batch": batch,
        "crop": crop,
        "labels": K,
        "threads": torch.get_num_threads(),
        "step_s": round(dt, 5),
        "images_per_s": round(batch / dt, 4),
        "peak_mem_mib": round(peak, 1),
        "aug_images_per_s_per_worker": round(aug_rate, 1),
        "final_loss": round(final_loss, 4),
    }


def _row(r: dict) -> str:
    ratio = "-" if r.get("vs_fp32") is None else f"{r['vs_fp32']:.2f}x"
    return (
        f"{r['config']:<16}{r['model']:<18}{r['device']:<8}{r['precision']:<6}{r['batch']:>6}{r['crop']:>6}"
        f"{r['images_per_s']:>9.2f}{ratio:>9}{r['step_s']:>9.3f}{r['peak_mem_mib']:>10.0f}"
        f"{r['aug_images_per_s_per_worker']:>11.1f}{r['final_loss']:>9.3f}"
    )


def _run_apart(name: str, precision: str, passthrough: list[str]) -> dict | None:
    """One row in a fresh process (its own peak memory); None, with the error printed, if it failed."""
    cmd = [sys.executable, __file__, *passthrough, "--precision", precision, "--one", name]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
        print(f"{name:<16}{precision:<6} failed: {last}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help="names in configs/ (default: all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=["fp32", "bf16"],
        help="one or more; each config runs at each (default: fp32 bf16)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="per-device batch (default: the config's)")
    p.add_argument("--crop", type=int, default=None, help="crop side (default: the config's)")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every row in this process (quicker; a row's peak memory then includes the rows before it)",
    )
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one config, print JSON
    args = p.parse_args(argv)
    precisions = sorted(set(args.precision), key=PRECISIONS.index)  # fp32 first: the baseline
    if args.one:
        if len(precisions) != 1:
            p.error("--one runs a single precision")
        print(json.dumps(bench_one(args.one, precisions[0], args)))
        return 0
    passthrough = ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    for flag, value in (("--batch-size", args.batch_size), ("--crop", args.crop)):
        if value is not None:
            passthrough += [flag, str(value)]
    results = []
    print(
        f"{'config':<16}{'model':<18}{'device':<8}{'prec':<6}{'batch':>6}{'crop':>6}{'img/s':>9}"
        f"{'vs fp32':>9}{'step s':>9}{'peak MiB':>10}{'aug/s/wkr':>11}{'loss':>9}"
    )
    for name in args.configs:
        fp32_rate = None
        for precision in precisions:
            r = (
                bench_one(name, precision, args)
                if args.in_process
                else _run_apart(name, precision, passthrough)
            )
            if r is None:
                continue
            if precision == "fp32":
                fp32_rate = r["images_per_s"]
            r["vs_fp32"] = round(r["images_per_s"] / fp32_rate, 3) if fp32_rate else None  # images/s ratio
            results.append(r)
            print(_row(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if len(results) == len(args.configs) * len(precisions) else 1


if __name__ == "__main__":
    sys.exit(main())
