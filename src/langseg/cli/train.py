"""``langseg train``: train or fine-tune LSeg from a YAML config (Lightning; one CPU/GPU to many nodes)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

ORDER = 40

EPILOG = """examples:
  langseg data toy --out data/toy                       # (optional) the toy dataset on disk
  langseg train --config configs/toy.yaml --out runs/toy
  langseg train --config configs/ade20k_vitl16.yaml --data-root /datasets --out runs/ade20k_l16
  langseg train --config configs/ade20k_vitl16.yaml --data-root /datasets --out runs/ade20k_l16 \\
      trainer.devices=8 data.batch_size=4 trainer.precision=bf16-mixed
  langseg train --out runs/ade20k_l16 --resume          # continue a stopped run where it stopped
  langseg train --config configs/toy.yaml --out runs/ft model.init=lseg-toy optim.base_lr=0.01

Overrides are dotted keys of the config (values are YAML): optim.base_lr=0.01, trainer.max_epochs=10,
data.datasets.0.root=/data/ade. Unknown keys are errors. The run folder gets config.yaml,
checkpoints/last.ckpt (for --resume), last/ and best/ (model.safetensors + config.json, loadable by
`langseg segment --weights RUN/best`) and logs/ (TensorBoard, CSV).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model from a YAML config",
        description="Train LSeg with the official recipe (SGD, poly schedule, decoder at 10x lr, frozen "
        "CLIP text tower) on ADE20K, generic-layout or toy datasets; single device, DDP, multi-node.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", type=Path, default=None, help="YAML config (default with --resume: RUN/config.yaml)"
    )
    p.add_argument(
        "--data-root", default=None, help="folder that relative dataset roots are resolved against"
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<config name>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue the run in --out from checkpoints/last.ckpt (or from CKPT)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.base_lr=0.01"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LangsegError

    missing = [m for m in ("lightning", "yaml") if importlib.util.find_spec(m) is None]  # no slow import yet
    if missing:
        raise LangsegError(
            f"training needs the train extra ({missing[0]} is missing): pip install 'langseg[train]'"
        )
    import yaml

    from ..train.config import load_config

    out = args.out
    config = args.config
    if out is None:
        if config is None:
            raise LangsegError("give --config (a new run) or --out RUN --resume (continue a run)")
        out = Path("runs") / config.stem
    if config is None:
        if not args.resume:
            raise LangsegError("give --config for a new run (or --resume to continue the run in --out)")
        config = out / "config.yaml"
        if not config.is_file():
            raise LangsegError(f"{config}: no config to resume with; pass --config")
    cfg = load_config(config, args.overrides)
    if args.data_root is not None:
        cfg.data.root = str(args.data_root)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    import logging

    from ..train.run import train

    for name in ("lightning.pytorch", "lightning.fabric"):  # they print through their own handlers already
        logging.getLogger(name).propagate = False
    result = train(cfg, out, resume=args.resume)
    if result.rank != 0:
        return 0
    print(f"run: {result.run_dir}  steps: {result.global_step}")
    for key in ("val/miou", "val/pixacc"):
        if key in result.metrics:
            print(f"{key}: {result.metrics[key]:.4f}")
    if result.best:
        print(f"best weights: {result.best}")
    if result.last:
        print(f"last weights: {result.last}")
    return 0
